"""Locality-sensitive hashing by random projections (E2LSH, Datar et al. 2004), several tables,
with the bucket width derived from the reuse radius (A-LSH, Guo et al. 2018).

Each of ``tables`` tables keys a point on ``bits`` hash functions ``floor((a.v + b) / w)`` with
Gaussian ``a``; two points at distance ``c`` share one function's value with probability
``p(c)`` (:func:`collision_probability`), a table's bucket with ``p(c)^bits``, and at least one
bucket with ``1 - (1 - p(c)^bits)^tables``: the index's recall of a neighbour at distance c.
FoggyCache's A-LSH adapts the width to the data so that lookup quality stays constant as the
cached inputs change; here the width is the smallest that still finds a neighbour at the reuse
radius with the target recall (:func:`width_for_radius`), re-derived whenever the radius
changes. A smaller width means fewer candidates to check, so lookups stay fast.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm

from edgeweave.errors import ServeError


def collision_probability(distance: float, width: float) -> float:
    """P[floor((a.u + b)/w) = floor((a.v + b)/w)] for ||u - v|| = distance (Datar et al.)."""
    if distance <= 0:
        return 1.0
    r = width / distance
    return float(1 - 2 * norm.cdf(-r) - 2 / (math.sqrt(2 * math.pi) * r)
                 * (1 - math.exp(-r * r / 2)))


def recall_at(distance: float, width: float, tables: int, bits: int) -> float:
    """Probability that the index returns a point at ``distance`` from the query."""
    return 1 - (1 - collision_probability(distance, width) ** bits) ** tables


def width_for_radius(radius: float, tables: int, bits: int, recall: float = 0.95) -> float:
    """The smallest bucket width whose recall at ``radius`` reaches ``recall`` (bisection:
    recall grows with the width)."""
    if radius <= 0:
        return 1e-3
    lo, hi = 1e-6 * radius, radius
    while recall_at(radius, hi, tables, bits) < recall:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if recall_at(radius, mid, tables, bits) >= recall else (mid, hi)
    return hi


class LSHIndex:
    """Slots (small ints) of unit keys, found by their buckets in ``tables`` hash tables."""

    def __init__(self, dim: int, tables: int = 8, bits: int = 4, width: float = 1.0,
                 seed: int = 0):
        if tables < 1 or bits < 1:
            raise ServeError(f"cache.tables and cache.bits must be >= 1, got {tables}, {bits}")
        rng = np.random.default_rng(seed)
        self.dim, self.tables, self.bits = dim, tables, bits
        self._a = rng.normal(size=(dim, tables * bits)).astype(np.float32)
        self._b_unit = rng.uniform(0.0, 1.0, size=tables * bits).astype(np.float32)
        # one bucket id per table from its `bits` integer codes (wrapping int64 arithmetic)
        self._mix = rng.integers(1, 2**61, size=bits, dtype=np.int64)
        self.width = width
        self._buckets: list[dict[int, set[int]]] = [{} for _ in range(tables)]
        self._codes: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._codes)

    def codes(self, keys: np.ndarray) -> np.ndarray:
        """Bucket id per key and table, ``(N, tables)`` int64."""
        h = np.floor((keys @ self._a) / self.width + self._b_unit).astype(np.int64)
        return h.reshape(len(keys), self.tables, self.bits) @ self._mix

    def add(self, slot: int, key: np.ndarray) -> None:
        codes = self.codes(key[None])[0]
        self._codes[slot] = codes
        for table, code in zip(self._buckets, codes.tolist(), strict=True):
            table.setdefault(code, set()).add(slot)

    def remove(self, slot: int) -> None:
        codes = self._codes.pop(slot)
        for table, code in zip(self._buckets, codes.tolist(), strict=True):
            bucket = table[code]
            bucket.discard(slot)
            if not bucket:
                del table[code]

    def candidates(self, key: np.ndarray) -> np.ndarray:
        """Every slot sharing a bucket with ``key`` in at least one table."""
        found: set[int] = set()
        for table, code in zip(self._buckets, self.codes(key[None])[0].tolist(), strict=True):
            bucket = table.get(code)
            if bucket:
                found |= bucket
        return np.fromiter(found, dtype=np.int64, count=len(found))

    def rebuild(self, width: float, keys: dict[int, np.ndarray]) -> None:
        """Re-hash ``keys`` (slot -> key, the whole index) at a new bucket width."""
        self.width = width
        self._buckets = [{} for _ in range(self.tables)]
        self._codes = {}
        if not keys:
            return
        slots = list(keys)
        all_codes = self.codes(np.stack([keys[s] for s in slots]))
        for slot, codes in zip(slots, all_codes, strict=True):
            self._codes[slot] = codes
            for table, code in zip(self._buckets, codes.tolist(), strict=True):
                table.setdefault(code, set()).add(slot)
