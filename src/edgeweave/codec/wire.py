"""Tensors as raw little-endian bytes: the one place tensor bytes are produced and parsed.

A tensor on the wire is ``(data, dtype, shape)``: ``data`` is the row-major element bytes in
little-endian order, ``dtype`` a name from :data:`DTYPES` (``"float32"``, ``"bfloat16"``, ...) and
``shape`` a list of non-negative ints. Nothing is ever pickled, so a peer can only make us build a
tensor of an allowed dtype whose byte count matches its shape exactly.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import numpy as np
import torch

from edgeweave.codec.base import CodecError

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "bool": torch.bool,
}
"""Allowed dtype names on the wire and the torch dtype each one stands for."""

_NAMES: dict[torch.dtype, str] = {v: k for k, v in DTYPES.items()}

MAX_NDIM = 32
"""Most dimensions a shape on the wire may have."""
MAX_NUMEL = 2**40
"""Most elements one tensor on the wire may have (any single dimension included)."""


def dtype_name(dtype: torch.dtype, *, context: str = "wire") -> str:
    """The wire name of a torch dtype; CodecError for dtypes outside :data:`DTYPES`."""
    try:
        return _NAMES[dtype]
    except KeyError:
        raise CodecError(
            f"{context}: dtype {dtype} is not supported; expected one of {', '.join(DTYPES)}"
        ) from None


def to_torch_dtype(name: str, *, context: str = "wire") -> torch.dtype:
    """The torch dtype for a wire dtype name; CodecError for names outside :data:`DTYPES`."""
    if not isinstance(name, str) or name not in DTYPES:
        raise CodecError(
            f"{context}: dtype {name!r} is not supported; expected one of {', '.join(DTYPES)}"
        )
    return DTYPES[name]


def itemsize(name: str, *, context: str = "wire") -> int:
    """Bytes per element of a wire dtype name."""
    return to_torch_dtype(name, context=context).itemsize


def check_shape(shape: Sequence[int], *, context: str = "wire") -> tuple[int, ...]:
    """Validate a shape from the wire and return it as a tuple of ints.

    Rejects non-integer dims, negative dims, more than :data:`MAX_NDIM` dims, and shapes whose
    element count (or any dim) exceeds :data:`MAX_NUMEL`.
    """
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence | torch.Size):
        raise CodecError(f"{context}: shape {shape!r} is not a sequence of ints")
    dims = list(shape)
    if len(dims) > MAX_NDIM:
        raise CodecError(f"{context}: shape has {len(dims)} dims, expected at most {MAX_NDIM}")
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int | np.integer):
            raise CodecError(f"{context}: shape {dims} has non-integer dim {d!r}")
        if d < 0:
            raise CodecError(f"{context}: shape {dims} has negative dim {d}")
        if d > MAX_NUMEL:
            raise CodecError(f"{context}: shape {dims} has dim {d}, expected at most {MAX_NUMEL}")
    out = tuple(int(d) for d in dims)
    if math.prod(out) > MAX_NUMEL:
        raise CodecError(
            f"{context}: shape {list(out)} has {math.prod(out)} elements, "
            f"expected at most {MAX_NUMEL}"
        )
    return out


def nbytes_for(dtype: str, shape: Sequence[int], *, context: str = "wire") -> int:
    """Exact raw byte count of a tensor of this dtype and shape (validates both)."""
    size = itemsize(dtype, context=context)
    return math.prod(check_shape(shape, context=context)) * size


def _byteswap(raw: bytes, size: int) -> bytes:
    """Reverse the byte order of every ``size``-byte element (only used on big-endian hosts)."""
    if size == 1 or not raw:
        return raw
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, size)[:, ::-1].tobytes()


def tensor_to_bytes(t: torch.Tensor, *, context: str = "wire") -> tuple[bytes, str, list[int]]:
    """``(data, dtype, shape)`` for a tensor: little-endian row-major element bytes.

    The tensor is detached and, if needed, copied to contiguous CPU memory first. Only dtypes in
    :data:`DTYPES` are accepted.
    """
    if not isinstance(t, torch.Tensor):
        raise CodecError(f"{context}: expected a torch.Tensor, got {type(t).__name__}")
    name = dtype_name(t.dtype, context=context)
    if t.layout != torch.strided:
        raise CodecError(f"{context}: tensor layout is {t.layout}, expected torch.strided (dense)")
    if t.numel() == 0:
        return b"", name, list(t.shape)
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    if flat.stride(0) != 1:  # e.g. size-1 tensors with odd strides from numpy or expand()
        flat = flat.clone(memory_format=torch.contiguous_format)
    raw = flat.view(torch.uint8).numpy().tobytes()
    if sys.byteorder == "big":  # pragma: no cover - every supported host is little-endian
        raw = _byteswap(raw, t.dtype.itemsize)
    return raw, name, list(t.shape)


def tensor_from_bytes(
    data: bytes | bytearray | memoryview,
    dtype: str,
    shape: Sequence[int],
    *,
    context: str = "wire",
) -> torch.Tensor:
    """Rebuild a tensor from :func:`tensor_to_bytes` output; the result owns writable memory.

    Raises CodecError for a dtype outside :data:`DTYPES`, a malformed shape, a byte count that
    differs from ``numel * itemsize``, or (for ``bool``) bytes other than 0 and 1. ``context``
    names the caller (a codec) in error messages.
    """
    torch_dtype = to_torch_dtype(dtype, context=context)
    dims = check_shape(shape, context=context)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"{context}: payload is a {type(data).__name__}, expected bytes")
    expected = math.prod(dims) * torch_dtype.itemsize
    got = memoryview(data).nbytes
    if got != expected:
        raise CodecError(
            f"{context}: payload is {got} bytes, expected {expected} for shape {list(dims)} "
            f"({dtype})"
        )
    if expected == 0:
        return torch.empty(dims, dtype=torch_dtype)
    buf = bytearray(data)  # a private, writable copy: the tensor never aliases the caller's buffer
    if sys.byteorder == "big":  # pragma: no cover
        buf = bytearray(_byteswap(bytes(buf), torch_dtype.itemsize))
    if torch_dtype == torch.bool:
        as_bytes = torch.frombuffer(buf, dtype=torch.uint8)
        if int(as_bytes.max()) > 1:
            raise CodecError(f"{context}: bool payload holds bytes other than 0 and 1")
    return torch.frombuffer(buf, dtype=torch_dtype).reshape(dims)
