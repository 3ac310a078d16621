"""Choosing a cache's size and eviction policy by Cachier's expected-latency model (Drolia et
al., ICDCS 2017).

Every request pays the lookup, whose time grows with the number of entries; a miss also pays
what lies behind the cache (the link to the next level and the model there):

    E[latency](size, policy) = lookup_ms(size) + (1 - hit_rate(size, policy)) * miss_ms

A bigger cache hits more often but looks up more slowly, so the best size is where the two
balance; the index (exact scan or LSH) changes how fast lookups slow down with size. Cachier
estimates the hit rate from the request distribution; here it is measured by replaying a recent
trace of keys and the model's labels through a cache of each candidate size and policy, and the
lookup time is measured on caches of those sizes and fitted by a line. The same replay
calibrates the reuse radius (:func:`radius_by_replay`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from edgeweave.errors import ServeError
from edgeweave.serve.cache.config import CacheConfig
from edgeweave.serve.cache.semantic import SemanticCache

#: Builds an empty cache with the given settings (same embedder and classes each time).
CacheFactory = Callable[[CacheConfig], SemanticCache]


def expected_latency_ms(lookup_ms: float, hit_rate: float, miss_ms: float) -> float:
    """Cachier's expected latency of one request (see the module doc)."""
    return lookup_ms + (1.0 - hit_rate) * miss_ms


@dataclass(frozen=True)
class LookupCost:
    """Lookup time as a line in the number of entries, fitted to measurements."""

    base_ms: float
    per_entry_ms: float

    def __call__(self, size: int) -> float:
        return self.base_ms + self.per_entry_ms * size

    @classmethod
    def fit(cls, sizes: Sequence[int], ms: Sequence[float]) -> LookupCost:
        if len(sizes) != len(ms) or not sizes:
            raise ServeError("fitting lookup time needs one measured time per cache size")
        if len(set(sizes)) == 1:
            return cls(float(np.mean(ms)), 0.0)
        slope, base = np.polyfit(np.asarray(sizes, float), np.asarray(ms, float), 1)
        return cls(float(base), max(0.0, float(slope)))


@dataclass(frozen=True)
class CacheOption:
    index: str
    policy: str
    size: int
    hit_rate: float
    lookup_ms: float
    expected_ms: float


@dataclass(frozen=True)
class CacheChoice:
    best: CacheOption
    options: list[CacheOption]   #: every (index, policy, size) considered, in the order tried
    miss_ms: float


@dataclass(frozen=True)
class Replay:
    hit_rate: float
    agreement: float   #: of the hits, the fraction whose label is the trace's (1.0 if none)


def replay(keys: np.ndarray, labels: np.ndarray, cache: SemanticCache) -> Replay:
    """Run a trace of keys through ``cache``, inserting the model's label (``labels``) on
    each miss, as the cache would have served it."""
    if len(keys) == 0:
        raise ServeError("the trace to replay is empty")
    hits = agree = 0
    for key, label in zip(keys, labels.tolist(), strict=True):
        found = cache.lookup_key(key)
        if found is None:
            cache.insert(key, int(label))
        else:
            hits += 1
            agree += found.label == label
    return Replay(hits / len(keys), agree / hits if hits else 1.0)


def radius_by_replay(keys: np.ndarray, labels: np.ndarray, make: CacheFactory,
                     base: CacheConfig, agreement: float,
                     radii: Sequence[float] = tuple(np.arange(0.1, 1.01, 0.05))) -> float:
    """The largest reuse radius at which replaying the trace keeps the hits' agreement with
    the model at ``agreement`` or more (0.0 if none does). Unlike the leave-one-out estimate
    a cache makes of itself, this sees the distances a real lookup sees: a cache holds only
    the inputs that missed, so a query's nearest entry is farther than its nearest input."""
    best = 0.0
    for radius in sorted(radii):
        if replay(keys, labels, make(replace(base, radius=float(radius)))).agreement \
                >= agreement:
            best = float(radius)
    return best


def measure_lookup_ms(make: CacheFactory, base: CacheConfig, keys: np.ndarray,
                      labels: np.ndarray, sizes: Sequence[int], queries: int = 200,
                      seed: int = 0) -> list[float]:
    """Median thread-CPU time of a lookup (the vote, without embedding the input) in a cache
    holding ``size`` entries, for each size. Entries are the trace's keys, and jittered copies
    of them beyond its length, so candidate counts are realistic; queries are trace keys."""
    rng = np.random.default_rng(seed)
    out = []
    for size in sizes:
        cache = make(replace(base, capacity=size))
        fill, fill_labels = _fill(keys, labels, size, rng)
        for key, label in zip(fill, fill_labels.tolist(), strict=True):
            cache.insert(key, int(label))
        times = []
        for i in rng.integers(0, len(keys), size=queries):
            start = time.thread_time()
            cache.vote(keys[i])
            times.append((time.thread_time() - start) * 1000.0)
        out.append(statistics.median(times))
    return out


def _fill(keys: np.ndarray, labels: np.ndarray, size: int, rng: np.random.Generator
          ) -> tuple[np.ndarray, np.ndarray]:
    if size <= len(keys):
        return keys[:size], labels[:size]
    extra = rng.integers(0, len(keys), size=size - len(keys))
    jitter = keys[extra] + rng.normal(0.0, 0.05, size=(len(extra), keys.shape[1]))
    jitter /= np.maximum(np.linalg.norm(jitter, axis=1, keepdims=True), 1e-12)
    return (np.concatenate([keys, jitter.astype(np.float32)]),
            np.concatenate([labels, labels[extra]]))


def choose(keys: np.ndarray, labels: np.ndarray, make: CacheFactory, base: CacheConfig,
           sizes: Sequence[int], policies: Sequence[str],
           lookup_ms: Callable[[str, int], float], miss_ms: float,
           indexes: Sequence[str] = ("exact", "lsh")) -> CacheChoice:
    """The (index, policy, size) with the lowest expected latency on the trace;
    ``lookup_ms(index, size)`` is the lookup time of that index at that size."""
    if not sizes or not policies or not indexes:
        raise ServeError("choosing a cache needs at least one size, policy and index")
    options = []
    for index in indexes:
        for policy in policies:
            for size in sizes:
                cfg = replace(base, capacity=size, policy=policy, index=index)
                hit = replay(keys, labels, make(cfg)).hit_rate
                cost = lookup_ms(index, size)
                options.append(CacheOption(index, policy, size, hit, cost,
                                           expected_latency_ms(cost, hit, miss_ms)))
    best = min(options, key=lambda o: (o.expected_ms, o.size))
    return CacheChoice(best, options, miss_ms)
