"""Where a lookup finds its candidates: an index over the cache's slots. Two members: the exact
scan (every held entry is a candidate; one matrix-vector product, the fastest for the few
thousand entries a device or a small edge holds, in numpy) and locality-sensitive hashing
(:mod:`.lsh`, whose lookups grow with the entries in the query's buckets rather than with all
entries, and which pays off on large caches). The cache size/policy chooser measures both."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from edgeweave.errors import ServeError


class Index(Protocol):
    def add(self, slot: int, key: np.ndarray) -> None: ...
    def remove(self, slot: int) -> None: ...
    def candidates(self, key: np.ndarray) -> np.ndarray: ...
    def rebuild(self, width: float, keys: dict[int, np.ndarray]) -> None: ...


class ExactIndex:
    """Every held slot is a candidate."""

    def __init__(self, capacity: int):
        self._live = np.zeros(capacity, dtype=bool)
        self._slots: np.ndarray | None = None

    def add(self, slot: int, key: np.ndarray) -> None:
        self._live[slot] = True
        self._slots = None

    def remove(self, slot: int) -> None:
        self._live[slot] = False
        self._slots = None

    def candidates(self, key: np.ndarray) -> np.ndarray:
        if self._slots is None:
            self._slots = np.flatnonzero(self._live)
        return self._slots

    def rebuild(self, width: float, keys: dict[int, np.ndarray]) -> None:
        """Nothing to re-hash: the scan has no buckets."""


INDEXES = ("exact", "lsh")


def check_index(name: str) -> str:
    if name not in INDEXES:
        raise ServeError(f"cache.index must be one of {', '.join(INDEXES)}, got {name!r}")
    return name
