"""Compact integer layouts shared by the update codecs: b-bit codes and sparse index sets.

The byte counts of the update codecs are ``len(payload)``, so the layouts are tight: b-bit codes
are packed back to back (little-endian bit order), and a set of k indices into n coordinates is
written in whichever of three forms is smallest for that (k, n) -- a fixed-width list (the
narrowest of 1/2/4/8 bytes that holds n - 1), a bitmap (n bits), or LEB128 varints of the gaps
between sorted indices (about log2(n / k) / 7 bytes each: 2 bytes at 0.1% density of 100k).
Every parser checks lengths and ranges, so a malformed payload raises CodecError, never an
IndexError deep in numpy.
"""

from __future__ import annotations

import math

import numpy as np

from edgeweave.codec.base import CodecError

LIST, BITMAP, VARINT = 0, 1, 2
"""Index layouts (the value is carried in ``Encoded.params["index"]``)."""

MAX_BITS = 16


def packed_nbytes(n: int, bits: int) -> int:
    """Bytes of ``n`` codes of ``bits`` bits packed back to back."""
    return (n * bits + 7) // 8


def pack_bits(codes: np.ndarray, bits: int) -> bytes:
    """Pack non-negative integer codes (each < 2**bits, bits <= 16) into bytes."""
    if not 1 <= bits <= MAX_BITS:
        raise CodecError(f"pack_bits: bits is {bits}, expected 1..{MAX_BITS}")
    if codes.size == 0:
        return b""
    as_u16 = np.ascontiguousarray(codes, dtype="<u2").reshape(-1)
    every = np.unpackbits(as_u16.view(np.uint8), bitorder="little").reshape(-1, 16)
    return np.packbits(every[:, :bits].reshape(-1), bitorder="little").tobytes()


def unpack_bits(data: bytes, bits: int, n: int, *, context: str) -> np.ndarray:
    """Inverse of :func:`pack_bits` (int64 codes); CodecError on a wrong length or stray bits."""
    want = packed_nbytes(n, bits)
    if len(data) != want:
        raise CodecError(
            f"{context}: packed codes are {len(data)} bytes, expected {want} for {n} x {bits} bits"
        )
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    every = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    if every[n * bits:].any():
        raise CodecError(f"{context}: packed codes have non-zero padding bits")
    wide = np.zeros((n, 16), dtype=np.uint8)
    wide[:, :bits] = every[: n * bits].reshape(n, bits)
    return np.packbits(wide.reshape(-1), bitorder="little").view("<u2").astype(np.int64)


def _list_width(n: int) -> int:
    for width in (1, 2, 4):
        if n <= 256**width:
            return width
    return 8


def _varint(gaps: np.ndarray) -> bytes:
    """LEB128 of non-negative ints, vectorised: 7 bits per byte, high bit = more follows."""
    if gaps.size == 0:
        return b""
    g = gaps.astype(np.uint64)
    nbytes = np.ones(g.size, dtype=np.int64)
    for shift in range(7, 64, 7):
        nbytes += (g >> np.uint64(shift)) > 0
    ends = np.cumsum(nbytes)
    out = np.zeros(int(ends[-1]), dtype=np.uint8)
    starts = ends - nbytes
    for j in range(int(nbytes.max())):
        live = nbytes > j
        chunk = (g[live] >> np.uint64(7 * j)) & np.uint64(0x7F)
        more = (nbytes[live] > j + 1).astype(np.uint8) << 7
        out[starts[live] + j] = chunk.astype(np.uint8) | more
    return out.tobytes()


def _unvarint(data: bytes, k: int, *, context: str) -> np.ndarray:
    buf = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(buf < 0x80)
    if len(ends) != k or (k and ends[-1] != len(buf) - 1):
        raise CodecError(f"{context}: varint index section holds {len(ends)} complete numbers "
                         f"in {len(buf)} bytes, expected exactly {k}")
    starts = np.concatenate(([0], ends[:-1] + 1)) if k else ends
    lengths = ends - starts + 1
    if k and lengths.max() > 9:
        raise CodecError(f"{context}: varint index longer than 9 bytes")
    vals = np.zeros(k, dtype=np.uint64)
    for j in range(int(lengths.max()) if k else 0):
        live = lengths > j
        chunk = (buf[starts[live] + j] & 0x7F).astype(np.uint64)
        vals[live] |= chunk << np.uint64(7 * j)
    return vals.astype(np.int64)


def index_nbytes(k: int, n: int) -> tuple[int, int]:
    """(layout, bytes) of the cheapest fixed-size layout for k of n indices (varint excluded)."""
    as_list = k * _list_width(n)
    as_bitmap = (n + 7) // 8
    return (LIST, as_list) if as_list <= as_bitmap else (BITMAP, as_bitmap)


def encode_indices(idx: np.ndarray, n: int) -> tuple[int, bytes]:
    """(layout, bytes) for sorted, distinct indices in [0, n), in the smallest layout."""
    k = int(idx.size)
    layout, size = index_nbytes(k, n)
    gaps = np.diff(idx, prepend=0) if k else idx
    varint = _varint(gaps)
    if len(varint) < size:
        return VARINT, varint
    if layout == LIST:
        dtype = {1: "<u1", 2: "<u2", 4: "<u4", 8: "<u8"}[_list_width(n)]
        return LIST, idx.astype(dtype).tobytes()
    bitmap = np.zeros(n, dtype=np.uint8)
    bitmap[idx] = 1
    return BITMAP, np.packbits(bitmap, bitorder="little").tobytes()


def decode_indices(layout: float, data: bytes, k: int, n: int, *, context: str) -> np.ndarray:
    """Inverse of :func:`encode_indices`: k sorted distinct indices in [0, n) (int64)."""
    if layout == LIST:
        width = _list_width(n)
        if len(data) != k * width:
            raise CodecError(f"{context}: index list is {len(data)} bytes, expected {k * width}")
        idx = np.frombuffer(data, dtype={1: "<u1", 2: "<u2", 4: "<u4", 8: "<u8"}[width])
        idx = idx.astype(np.int64)
    elif layout == BITMAP:
        if len(data) != (n + 7) // 8:
            raise CodecError(f"{context}: bitmap is {len(data)} bytes, expected {(n + 7) // 8}")
        bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
        if bits[n:].any():
            raise CodecError(f"{context}: bitmap has bits set past element {n}")
        idx = np.flatnonzero(bits[:n])
        if idx.size != k:
            raise CodecError(f"{context}: bitmap marks {idx.size} elements, expected {k}")
    elif layout == VARINT:
        idx = np.cumsum(_unvarint(data, k, context=context))
    else:
        raise CodecError(f"{context}: params['index'] is {layout!r}, expected 0, 1 or 2")
    if k and (idx[-1] >= n or (k > 1 and not bool((np.diff(idx) > 0).all()))):
        raise CodecError(f"{context}: indices are not distinct, sorted and below {n}")
    return idx


def bits_for(count: int) -> int:
    """Bits needed for codes 0..count-1."""
    return max(1, math.ceil(math.log2(count))) if count > 1 else 1
