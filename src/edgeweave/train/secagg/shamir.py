"""t-of-n Shamir secret sharing of 32-byte secrets, vectorised with numpy.

A secret is cut into 24-bit chunks, each an element of GF(p) with p = 2^31 - 1, and every chunk
gets its own random polynomial of degree t-1 (Shamir 1979). Products of two field elements stay
below 2^62, so numpy int64 evaluates all chunks at all share points with one Horner loop: sharing
a secret among 1,000 clients at t = 500 takes milliseconds, not a Python loop over bigints. Any t
shares determine the polynomial; t-1 shares reveal nothing about the secret (every value of it is
equally likely), so reconstruction from t-1 shares yields an unrelated value, not an error.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from edgeweave.train.types import TrainError

P = 2**31 - 1
CHUNK_BYTES = 3
SECRET_BYTES = 32
CHUNKS = -(-SECRET_BYTES // CHUNK_BYTES)  # 11
#: bytes of one share on the wire: one uint32 field element per chunk
SHARE_BYTES = 4 * CHUNKS


def _to_chunks(secret: bytes) -> np.ndarray:
    if len(secret) != SECRET_BYTES:
        raise TrainError(f"shamir: a secret must be {SECRET_BYTES} bytes, got {len(secret)}")
    padded = np.frombuffer(secret + bytes(CHUNKS * CHUNK_BYTES - SECRET_BYTES), np.uint8)
    b = padded.reshape(CHUNKS, CHUNK_BYTES).astype(np.int64)
    return (b[:, 0] << 16) | (b[:, 1] << 8) | b[:, 2]


def _from_chunks(chunks: np.ndarray) -> bytes:
    c = np.asarray(chunks, dtype=np.int64)
    if (c >= 1 << 24).any():  # not a 24-bit chunk: the shares were not of one secret
        c = c & 0xFFFFFF
    b = np.stack([(c >> 16) & 0xFF, (c >> 8) & 0xFF, c & 0xFF], axis=1).astype(np.uint8)
    return b.reshape(-1).tobytes()[:SECRET_BYTES]


def _random_field(shape: tuple[int, ...]) -> np.ndarray:
    # os.urandom: the polynomial coefficients ARE the secrecy; modulo bias is below 2^-33
    n = int(np.prod(shape))
    raw = np.frombuffer(os.urandom(8 * n), np.uint64)
    return (raw % np.uint64(P)).astype(np.int64).reshape(shape)


def split(secret: bytes, points: Sequence[int], t: int) -> np.ndarray:
    """Shares of ``secret`` at the nonzero field points ``points`` (usually client id + 1):
    row i is the share for ``points[i]``, ``CHUNKS`` field elements (uint32)."""
    xs = np.asarray(points, dtype=np.int64)
    if not 1 <= t <= len(xs):
        raise TrainError(f"shamir: threshold t={t} must be in [1, {len(xs)}] (the share count)")
    if (xs <= 0).any() or (xs >= P).any() or len(np.unique(xs)) != len(xs):
        raise TrainError("shamir: share points must be distinct and in [1, p)")
    coeffs = _random_field((t - 1, CHUNKS))
    acc = np.zeros((len(xs), CHUNKS), np.int64)
    for c in coeffs[::-1]:  # Horner, highest degree first
        acc = (acc + c[None, :]) * xs[:, None] % P
    acc = (acc + _to_chunks(secret)[None, :]) % P
    return acc.astype(np.uint32)


@lru_cache(maxsize=256)
def _lagrange_at_zero(points: tuple[int, ...]) -> np.ndarray:
    """lambda_j = prod_{k != j} x_k / (x_k - x_j) mod p. Cached: in one round every client's
    secret is usually rebuilt from the same set of surviving share holders."""
    xs = np.asarray(points, dtype=np.int64)
    num = np.ones(len(xs), np.int64)
    den = np.ones(len(xs), np.int64)
    for k, xk in enumerate(xs):
        mask = np.arange(len(xs)) != k
        num[mask] = num[mask] * xk % P
        den[mask] = den[mask] * ((xk - xs[mask]) % P) % P
    inv = np.array([pow(int(d), -1, P) for d in den], np.int64)
    return num * inv % P


def combine(points: Sequence[int], shares: np.ndarray, t: int) -> bytes:
    """The secret from the first ``t`` of ``shares`` (rows, at ``points``). With fewer than t
    shares this raises; with t-1 chosen adversarially it would only return a random value."""
    xs = tuple(int(x) for x in points)
    sh = np.asarray(shares, dtype=np.int64)
    if len(xs) < t:
        raise TrainError(f"shamir: need t={t} shares to reconstruct, got {len(xs)}")
    if sh.shape != (len(xs), CHUNKS) or len(set(xs)) != len(xs):
        raise TrainError(f"shamir: shares must be {len(xs)} distinct rows of {CHUNKS} elements, "
                         f"got shape {sh.shape}")
    if (sh < 0).any() or (sh >= P).any():
        raise TrainError("shamir: a share holds a value outside the field")
    lam = _lagrange_at_zero(xs[:t])
    # each product < 2^62 and each reduced term < 2^31, so a sum of t < 2^32 terms fits int64
    chunks = (lam[:, None] * sh[:t] % P).sum(axis=0) % P
    return _from_chunks(chunks)


def consistent(points: Sequence[int], shares: np.ndarray, t: int) -> np.ndarray:
    """Which shares lie on the polynomial through the first t (bool per row): how a share holder
    that sent a wrong share is found when more than t shares arrived."""
    xs = np.asarray(points, dtype=np.int64)
    sh = np.asarray(shares, dtype=np.int64)
    base = tuple(int(x) for x in xs[:t])
    ok = np.ones(len(xs), bool)
    for i in range(t, len(xs)):
        # value at x_i by Lagrange over the base points
        lam = _lagrange_at(base, int(xs[i]))
        val = (lam[:, None] * sh[:t] % P).sum(axis=0) % P
        ok[i] = bool((val == sh[i]).all())
    return ok


def _lagrange_at(points: tuple[int, ...], x: int) -> np.ndarray:
    xs = np.asarray(points, dtype=np.int64)
    out = np.empty(len(xs), np.int64)
    for j, xj in enumerate(xs):
        num, den = 1, 1
        for k, xk in enumerate(xs):
            if k != j:
                num = num * ((x - int(xk)) % P) % P
                den = den * ((int(xj) - int(xk)) % P) % P
        out[j] = num * pow(den, -1, P) % P
    return out
