"""Malformed, corrupt, hostile and unknown inputs raise CodecError with a useful message."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator

import lz4.frame
import pytest
import torch
import zstandard

from edgeweave.codec import Codec, CodecError, Encoded, get_codec, register
from edgeweave.codec import base as codec_base

ALL = ["none", "fp16", "int8", "zstd", "lz4", "fp16+zstd", "int8+zstd", "fp16+lz4", "int8+lz4"]
BOMB = b"\0" * 10_000_000


def _replace(e: Encoded, **changes) -> Encoded:
    return dataclasses.replace(e, **changes)


def test_unknown_codec_lists_known_names() -> None:
    with pytest.raises(CodecError, match=r"unknown codec 'gzip'.*fp16, int8, lz4, none, zstd"):
        get_codec("gzip")
    with pytest.raises(CodecError, match=r"'int8' is not a compressor"):
        get_codec("zstd+int8")
    with pytest.raises(CodecError, match="unknown codec 'foo'"):
        get_codec("foo+zstd")
    with pytest.raises(CodecError, match="empty part"):
        get_codec("+zstd")
    with pytest.raises(CodecError, match="must be a string"):
        get_codec(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ALL)
def test_unknown_dtype(name: str) -> None:
    e = get_codec(name).encode(torch.ones(2, 3))
    with pytest.raises(CodecError, match=r"dtype 'complex64' is not supported"):
        get_codec(name).decode(_replace(e, dtype="complex64"))
    with pytest.raises(CodecError, match="not supported"):
        get_codec(name).encode(torch.ones(2, dtype=torch.complex64))


@pytest.mark.parametrize("name", ALL)
def test_truncated_and_extended_payload(name: str) -> None:
    codec = get_codec(name)
    e = codec.encode(torch.randn(4, 6))
    with pytest.raises(CodecError, match=re.escape(name)):
        codec.decode(_replace(e, payload=e.payload[:-1]))
    with pytest.raises(CodecError, match=re.escape(name)):
        codec.decode(_replace(e, payload=b""))
    if "+" not in name and name not in ("zstd", "lz4"):
        with pytest.raises(CodecError, match=r"payload is \d+ bytes, expected"):
            codec.decode(_replace(e, payload=e.payload + b"\0"))


@pytest.mark.parametrize("name", ALL)
def test_payload_for_wrong_shape(name: str) -> None:
    codec = get_codec(name)
    e = codec.encode(torch.randn(2, 3))
    for shape in [(3, 3), (2, 2), (6, 1, 2), (), (0,)]:
        with pytest.raises(CodecError):
            codec.decode(_replace(e, shape=shape))
    with pytest.raises(CodecError, match="negative dim"):
        codec.decode(_replace(e, shape=(-2, -3)))


def test_exact_error_message() -> None:
    e = get_codec("int8").encode(torch.randn(1, 48))
    with pytest.raises(CodecError) as info:
        get_codec("int8").decode(_replace(e, payload=e.payload[:37]))
    assert str(info.value) == "int8: payload is 37 bytes, expected 48 for shape [1, 48] (uint8)"


def test_decode_with_wrong_codec() -> None:
    e = get_codec("fp16").encode(torch.randn(3))
    with pytest.raises(CodecError, match="int8: Encoded is for codec 'fp16', expected 'int8'"):
        get_codec("int8").decode(e)
    with pytest.raises(CodecError, match="expected an Encoded"):
        get_codec("none").decode(b"abc")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_int8_rejects_non_finite(bad: float) -> None:
    x = torch.randn(10)
    x[3] = bad
    for name in ("int8", "int8+zstd"):
        with pytest.raises(CodecError, match=r"int8: tensor has 1 NaN/inf value\(s\) of 10"):
            get_codec(name).encode(x)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({}, "scale"),
        ({"scale": 0.0, "zero_point": 0.0}, "scale"),
        ({"scale": float("nan"), "zero_point": 0.0}, "scale"),
        ({"scale": -1.0, "zero_point": 0.0}, "scale"),
        ({"scale": 0.1}, "zero_point"),
        ({"scale": 0.1, "zero_point": 256.0}, "zero_point"),
        ({"scale": 0.1, "zero_point": 1.5}, "zero_point"),
        ({"scale": 0.1, "zero_point": float("nan")}, "zero_point"),
    ],
)
def test_int8_bad_params(params: dict[str, float], match: str) -> None:
    e = get_codec("int8").encode(torch.randn(5))
    with pytest.raises(CodecError, match=match):
        get_codec("int8").decode(_replace(e, params=params))


def test_fp16_overflow_is_an_error_not_inf() -> None:
    with pytest.raises(CodecError, match=r"fp16: value magnitude 100000 is out of float16 range"):
        get_codec("fp16").encode(torch.tensor([1.0, 1e5]))


def _flips(payload: bytes) -> Iterator[bytes]:
    for i in range(len(payload)):
        for mask in (0x01, 0x80):
            b = bytearray(payload)
            b[i] ^= mask
            yield bytes(b)


@pytest.mark.parametrize("name", ["zstd", "lz4", "int8+zstd", "fp16+lz4"])
def test_corrupted_compressed_payload(name: str) -> None:
    codec = get_codec(name)
    x = torch.relu(torch.randn(6, 5, generator=torch.Generator().manual_seed(3)))
    e = codec.encode(x)
    reference = codec.decode(e)
    for payload in _flips(e.payload):
        try:
            y = codec.decode(_replace(e, payload=payload))
        except CodecError:
            continue
        # A flip that still decodes may only touch bits the format ignores.
        assert torch.equal(y, reference), f"{name}: corruption decoded silently"
    with pytest.raises(CodecError, match=f"{re.escape(name)}: .*(not a valid|corrupt)"):
        codec.decode(_replace(e, payload=b"garbage" * 5))


@pytest.mark.parametrize(
    "payload",
    [
        zstandard.ZstdCompressor(level=3).compress(BOMB),
        zstandard.ZstdCompressor(level=3, write_content_size=False).compress(BOMB),
    ],
    ids=["with-size", "without-size"],
)
def test_zstd_bomb(payload: bytes) -> None:
    assert len(payload) < 2000
    bomb = Encoded("zstd", "float32", (4,), payload)
    with pytest.raises(CodecError, match=r"zstd: .*(at most 16|more than 16)"):
        get_codec("zstd").decode(bomb)
    with pytest.raises(CodecError, match=r"int8\+zstd: .*(at most 4|more than 4)"):
        get_codec("int8+zstd").decode(
            Encoded("int8+zstd", "float32", (4,), payload, {"scale": 1.0, "zero_point": 0.0})
        )


@pytest.mark.parametrize(
    "payload",
    [lz4.frame.compress(BOMB), lz4.frame.compress(BOMB, store_size=False)],
    ids=["with-size", "without-size"],
)
def test_lz4_bomb(payload: bytes) -> None:
    bomb = Encoded("lz4", "float32", (4,), payload)
    with pytest.raises(CodecError, match=r"lz4: .*(at most 16|more than 16)"):
        get_codec("lz4").decode(bomb)


def test_lz4_trailing_bytes() -> None:
    e = get_codec("lz4").encode(torch.ones(4))
    with pytest.raises(CodecError, match="trailing"):
        get_codec("lz4").decode(_replace(e, payload=e.payload + b"xx"))


def test_encoded_validation_and_immutability() -> None:
    e = Encoded("none", "float32", [2], bytearray(8), {"k": 1})
    assert e.shape == (2,) and isinstance(e.payload, bytes) and e.params == {"k": 1.0}
    assert e.nbytes == 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.codec = "fp16"  # type: ignore[misc]
    with pytest.raises(CodecError, match="not a sequence of ints"):
        Encoded("none", "float32", ["a"], b"")  # type: ignore[list-item]
    with pytest.raises(CodecError, match="expected bytes"):
        Encoded("none", "float32", (1,), "abcd")  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="not all numbers"):
        Encoded("none", "float32", (1,), b"", {"scale": "big"})  # type: ignore[dict-item]


class _Negate(Codec):
    name = "test-negate"
    lossy = False

    def encode(self, t: torch.Tensor) -> Encoded:
        inner = get_codec("none").encode(-t)
        return Encoded(self.name, inner.dtype, inner.shape, inner.payload)

    def decode(self, e: Encoded) -> torch.Tensor:
        self._check(e)
        return -get_codec("none").decode(Encoded("none", e.dtype, e.shape, e.payload))


@pytest.fixture
def negate() -> Iterator[Codec]:
    codec = register(_Negate())
    yield codec
    codec_base._CODECS.pop(codec.name, None)
    codec_base._COMPOSED.clear()


def test_register_custom_codec_and_compose(negate: Codec) -> None:
    assert "test-negate" in codec_base.list_codecs()
    composed = get_codec("test-negate+zstd")
    x = torch.randn(7)
    assert torch.equal(composed.decode(composed.encode(x)), x)
    with pytest.raises(CodecError, match="already registered"):
        register(_Negate())
    register(negate, replace=True)


def test_register_rejects_bad_names() -> None:
    class Bad(_Negate):
        name = "a+b"

    with pytest.raises(CodecError, match="without '\\+'"):
        register(Bad())
    with pytest.raises(CodecError, match="expected a Codec"):
        register("none")  # type: ignore[arg-type]
