"""Raw tensor bytes: little-endian layout, dtype allow-list, shape and length validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeweave.codec import CodecError, tensor_from_bytes, tensor_to_bytes
from edgeweave.codec.wire import DTYPES, _byteswap, check_shape, nbytes_for
from edgeweave.errors import EdgeWeaveError

SHAPES = [(), (0,), (3, 0, 2), (1,), (7,), (2, 3, 4)]


def _sample(dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=g) * 10).to(dtype)
    info = torch.iinfo(dtype)
    return torch.randint(info.min, info.max, shape, generator=g, dtype=torch.int64).to(dtype)


@pytest.mark.parametrize("name", list(DTYPES))
@pytest.mark.parametrize("shape", SHAPES)
def test_roundtrip_every_dtype(name: str, shape: tuple[int, ...]) -> None:
    t = _sample(DTYPES[name], shape)
    data, dtype, dims = tensor_to_bytes(t)
    assert isinstance(data, bytes)
    assert dtype == name
    assert dims == list(shape)
    assert len(data) == t.numel() * t.element_size() == nbytes_for(name, shape)
    back = tensor_from_bytes(data, dtype, dims)
    assert back.dtype == t.dtype and back.shape == t.shape
    assert torch.equal(back, t)


def test_little_endian_layout() -> None:
    data, dtype, shape = tensor_to_bytes(torch.tensor([1, 258], dtype=torch.int32))
    assert data == b"\x01\x00\x00\x00\x02\x01\x00\x00"
    assert (dtype, shape) == ("int32", [2])
    assert tensor_to_bytes(torch.tensor(1.0))[0] == np.float32(1.0).astype("<f4").tobytes()


def test_byteswap_helper() -> None:
    assert _byteswap(b"\x01\x02\x03\x04", 2) == b"\x02\x01\x04\x03"
    assert _byteswap(b"\x01\x02", 1) == b"\x01\x02"


def test_non_contiguous_and_grad_tensors() -> None:
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    t = base.t()[1:]
    assert not t.is_contiguous()
    data, dtype, shape = tensor_to_bytes(t)
    assert torch.equal(tensor_from_bytes(data, dtype, shape), t)
    w = torch.ones(2, requires_grad=True)
    assert torch.equal(tensor_from_bytes(*tensor_to_bytes(w)), torch.ones(2))


def test_result_is_writable_and_owns_memory() -> None:
    data = bytes(tensor_to_bytes(torch.arange(4, dtype=torch.float32))[0])
    t = tensor_from_bytes(data, "float32", [4])
    t[0] = 42.0  # would fail / warn on a read-only buffer
    assert t[0] == 42.0
    assert tensor_from_bytes(data, "float32", [4])[0] == 0.0  # source bytes untouched
    buf = bytearray(data)
    t2 = tensor_from_bytes(buf, "float32", (4,))
    buf[:4] = b"\xff\xff\xff\xff"
    assert t2[0] == 0.0  # no aliasing of the caller's mutable buffer
    assert tensor_from_bytes(memoryview(data), "float32", [2, 2]).shape == (2, 2)


def test_unknown_dtype() -> None:
    with pytest.raises(CodecError, match=r"dtype 'complex64' is not supported.*float32"):
        tensor_from_bytes(b"\0" * 8, "complex64", [1])
    with pytest.raises(CodecError, match="not supported"):
        tensor_to_bytes(torch.zeros(2, dtype=torch.complex64))
    with pytest.raises(CodecError, match="not supported"):
        tensor_from_bytes(b"", "torch.float32", [0])


def test_codec_error_is_edgeweave_error() -> None:
    assert issubclass(CodecError, EdgeWeaveError)


def test_length_mismatch_message() -> None:
    with pytest.raises(CodecError) as info:
        tensor_from_bytes(b"\0" * 37, "uint8", [1, 48])
    assert str(info.value) == "wire: payload is 37 bytes, expected 48 for shape [1, 48] (uint8)"
    with pytest.raises(CodecError, match="expected 0"):
        tensor_from_bytes(b"\0", "float32", [0, 3])


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ([-1, 4], "negative dim -1"),
        ([2**41], "at most"),
        ([2**30, 2**30, 2**30], "elements, expected at most"),
        ([1] * 33, "33 dims"),
        ([1.5], "non-integer"),
        ([True], "non-integer"),
        ("12", "not a sequence"),
        (None, "not a sequence"),
    ],
)
def test_bad_shapes(shape, match: str) -> None:
    with pytest.raises(CodecError, match=match):
        tensor_from_bytes(b"", "float32", shape)


def test_shape_accepts_numpy_ints_and_torch_size() -> None:
    assert check_shape(torch.Size([2, 3])) == (2, 3)
    assert check_shape([np.int64(2)]) == (2,)


def test_bool_payload_must_be_zero_or_one() -> None:
    assert tensor_from_bytes(b"\x00\x01", "bool", [2]).tolist() == [False, True]
    with pytest.raises(CodecError, match="bool payload"):
        tensor_from_bytes(b"\x00\x02", "bool", [2])


def test_non_tensor_and_non_bytes() -> None:
    with pytest.raises(CodecError, match=r"expected a torch\.Tensor"):
        tensor_to_bytes([1.0, 2.0])  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="expected bytes"):
        tensor_from_bytes("abcd", "uint8", [4])  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="strided"):
        tensor_to_bytes(torch.eye(3).to_sparse())
