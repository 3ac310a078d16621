"""Round trips, error bounds and byte counts for every codec and composition."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgeweave.codec import Codec, Encoded, get_codec, list_codecs, tensor_to_bytes

BASES = ["none", "fp16", "int8"]
COMPRESSORS = ["zstd", "lz4"]
ALL = [*BASES, *COMPRESSORS, *(f"{b}+{c}" for b in BASES for c in COMPRESSORS), "zstd+lz4"]
SHAPES = [(), (0,), (4, 0), (1,), (5,), (3, 7), (2, 3, 4, 5)]
DTYPES = [
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.float64,
    torch.int64,
    torch.uint8,
    torch.bool,
]


def _sample(dtype: torch.dtype, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=g) * 3).to(dtype)
    return torch.randint(0, 200, shape, generator=g, dtype=dtype)


def _base(name: str) -> str:
    first = name.split("+")[0]
    return "none" if first in COMPRESSORS else first


def assert_roundtrip(name: str, x: torch.Tensor, e: Encoded, y: torch.Tensor) -> None:
    """y = decode(encode(x)) honours the codec's promise for x."""
    assert y.dtype == x.dtype and y.shape == x.shape and y.device.type == "cpu"
    base = _base(name)
    if base == "none" or not x.is_floating_point() or (base == "fp16" and x.dtype == torch.float16):
        assert tensor_to_bytes(y)[0] == tensor_to_bytes(x)[0]  # bit-exact, NaN included
        return
    xd, yd = x.double(), y.double()
    out_eps = torch.finfo(x.dtype).eps if x.dtype in (torch.float16, torch.bfloat16) else 0.0
    tol = xd.abs() * (out_eps + 1e-6)
    if base == "fp16":
        tol += xd.abs() * 2**-11 + 2**-25
    else:
        amax = float(xd.abs().max()) if x.numel() else 0.0
        tol += e.params["scale"] / 2 + amax * 1e-6
    err = (xd - yd).abs()
    assert bool((err <= tol).all()), f"{name}: max err {float((err - tol).max())} over tolerance"


def test_list_codecs() -> None:
    assert list_codecs() == ["fp16", "int8", "lz4", "none", "zstd"]
    for name in ALL:
        codec = get_codec(name)
        assert isinstance(codec, Codec) and codec.name == name
        assert codec.lossy == (_base(name) != "none")
    assert get_codec("int8+zstd") is get_codec("int8+zstd")


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_roundtrip(name: str, dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    x = _sample(dtype, shape)
    codec = get_codec(name)
    e = codec.encode(x)
    assert e.codec == name and e.shape == shape and e.dtype == str(dtype).removeprefix("torch.")
    assert e.nbytes == len(e.payload)
    y = get_codec(e.codec).decode(e)
    assert_roundtrip(name, x, e, y)
    assert y.data_ptr() != x.data_ptr() or x.numel() == 0


@pytest.mark.parametrize("name", ["none", "fp16", "zstd", "fp16+lz4"])
def test_nan_inf_carried_by_codecs_that_can(name: str) -> None:
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 1.0])
    y = get_codec(name).decode(get_codec(name).encode(x))
    assert torch.equal(y.isnan(), x.isnan()) and torch.equal(y[1:], x[1:])


def test_byte_counts() -> None:
    x = torch.randn(8, 33)
    n = x.numel()
    assert get_codec("none").encode(x).nbytes == n * 4
    assert get_codec("fp16").encode(x).nbytes == n * 2
    assert get_codec("int8").encode(x).nbytes == n
    assert get_codec("fp16").encode(x.double()).nbytes == n * 2
    assert get_codec("int8").encode(x.half()).nbytes == n
    # non-float tensors pass through raw
    ints = torch.arange(n)
    assert get_codec("int8").encode(ints).nbytes == n * 8
    assert get_codec("fp16").encode(ints).nbytes == n * 8


def test_compression_shrinks_relu_activations() -> None:
    x = torch.relu(torch.randn(64, 256, generator=torch.Generator().manual_seed(1)))
    raw = get_codec("none").encode(x).nbytes
    for comp in COMPRESSORS:
        assert get_codec(comp).encode(x).nbytes < 0.75 * raw
    q = get_codec("int8").encode(x).nbytes
    assert get_codec("int8+zstd").encode(x).nbytes < 0.7 * q
    zeros = torch.zeros(1000)
    assert get_codec("zstd").encode(zeros).nbytes < 100
    assert get_codec("lz4").encode(zeros).nbytes < 100


def test_int8_keeps_zeros_exact_and_params() -> None:
    x = torch.relu(torch.randn(100, generator=torch.Generator().manual_seed(2)))
    e = get_codec("int8").encode(x)
    assert set(e.params) == {"scale", "zero_point"}
    assert e.params["zero_point"] == 0.0
    y = get_codec("int8").decode(e)
    assert torch.equal(y[x == 0], x[x == 0])
    assert get_codec("int8+zstd").encode(x).params == e.params


@pytest.mark.parametrize(
    "x",
    [
        torch.zeros(5),
        torch.full((3, 3), 2.5),
        torch.full((4,), -7.0),
        torch.tensor(3.0),
        torch.tensor([1e-45, 1e-45]),
        torch.tensor([3.4028235e38, -3.4028235e38, 0.0]),
        torch.tensor([3.4028235e38, 1.0]),
        torch.tensor([65504.0, -1.0], dtype=torch.float16),
        torch.tensor([1e300, -1e-300], dtype=torch.float64),
        torch.tensor([1e-310, 3e-310], dtype=torch.float64),
    ],
    ids=repr,
)
def test_int8_edge_values(x: torch.Tensor) -> None:
    codec = get_codec("int8")
    e = codec.encode(x)
    y = codec.decode(e)
    assert bool(torch.isfinite(y).all())
    if x.numel() and float(x.abs().max()) > 1e-300:
        assert_roundtrip("int8", x, e, y)
    if bool((x == x.flatten()[0]).all()):  # constant tensors come back (almost) exactly
        torch.testing.assert_close(y, x, rtol=1e-6, atol=0)


def test_fp16_zero_size_and_subnormal() -> None:
    x = torch.tensor([1e-6, -3e-8, 0.0, 60000.0])
    y = get_codec("fp16").decode(get_codec("fp16").encode(x))
    assert_roundtrip("fp16", x, get_codec("fp16").encode(x), y)


def test_encode_does_not_modify_input() -> None:
    x = torch.randn(10)
    before = x.clone()
    for name in ALL:
        get_codec(name).encode(x)
    assert torch.equal(x, before)


def test_threads_share_codecs() -> None:
    xs = [torch.randn(64, generator=torch.Generator().manual_seed(i)) for i in range(16)]

    def job(x: torch.Tensor) -> bool:
        c = get_codec("fp16+zstd")
        d = get_codec("lz4")
        return torch.equal(d.decode(d.encode(x)), x) and c.decode(c.encode(x)).shape == x.shape

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(job, xs))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_input_decodes_on_cpu() -> None:
    x = torch.randn(4, 5, device="cuda")
    for name in ALL:
        y = get_codec(name).decode(get_codec(name).encode(x))
        assert_roundtrip(name, x.cpu(), get_codec(name).encode(x), y)


finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)


@settings(max_examples=60, deadline=None)
@given(
    arr=hnp.arrays(np.float32, shapes, elements=finite32),
    name=st.sampled_from(["int8", "int8+zstd", "int8+lz4"]),
)
def test_property_int8(arr: np.ndarray, name: str) -> None:
    x = torch.from_numpy(arr.copy())
    e = get_codec(name).encode(x)
    assert_roundtrip(name, x, e, get_codec(name).decode(e))


@settings(max_examples=60, deadline=None)
@given(
    arr=hnp.arrays(np.float32, shapes, elements=st.floats(-65504, 65504, width=32)),
    name=st.sampled_from(["fp16", "fp16+zstd", "fp16+lz4"]),
)
def test_property_fp16(arr: np.ndarray, name: str) -> None:
    x = torch.from_numpy(arr.copy())
    e = get_codec(name).encode(x)
    assert e.nbytes == x.numel() * 2 or "+" in name
    assert_roundtrip(name, x, e, get_codec(name).decode(e))


@settings(max_examples=60, deadline=None)
@given(
    arr=hnp.arrays(np.float32, shapes, elements=st.floats(width=32)),
    name=st.sampled_from(["none", "zstd", "lz4", "none+zstd", "zstd+lz4"]),
)
def test_property_lossless(arr: np.ndarray, name: str) -> None:
    x = torch.from_numpy(arr.copy())
    e = get_codec(name).encode(x)
    assert_roundtrip(name, x, e, get_codec(name).decode(e))
