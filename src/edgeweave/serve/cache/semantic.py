"""A semantic cache (FoggyCache, Guo et al. 2018; Cachier, Drolia et al. 2017): the label of a
similar earlier input, reused instead of running the model.

A lookup embeds the input (:mod:`.embed`), gathers candidates from the index (an exact scan, or
locality-sensitive hashing: :mod:`.index`, :mod:`.lsh`),
measures their exact distances and lets the k nearest within the reuse radius vote (:mod:`.knn`):
a label is reused only when its share of the vote reaches the threshold. Otherwise the model
runs and :meth:`SemanticCache.observe` inserts its answer, evicting by the configured policy
when full. With ``radius=None`` the radius is recalibrated from the cached entries every
``recalibrate_every`` inserts (so it follows the data, as A-LSH's width does) and the LSH width
follows it. Entries that arrive from elsewhere (an edge pushing entries to a device) are checked
by :meth:`SemanticCache.admit` and a corrupt one is refused.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from edgeweave.errors import ServeError
from edgeweave.serve.cache.config import CacheConfig
from edgeweave.serve.cache.embed import Embedder
from edgeweave.serve.cache.eviction import make_policy
from edgeweave.serve.cache.index import ExactIndex, Index
from edgeweave.serve.cache.knn import Vote, calibrate_radius, hknn_vote
from edgeweave.serve.cache.lsh import LSHIndex, width_for_radius
from edgeweave.serve.stage import Verdict, check_sample

#: Inputs whose keys a cache remembers between ``lookup`` and ``observe``.
_MEMO = 256


@dataclass(frozen=True)
class CacheEntry:
    """One cached result as it travels between caches: key, label, and the id its first cache
    gave it (so a device keeps one copy however often the edge pushes it)."""

    key: np.ndarray
    label: int
    uid: str


class SemanticCache:
    """The cache of one level (a device, or the edge shared by all devices); a
    :class:`~edgeweave.serve.stage.FrontStage` named ``name``."""

    def __init__(self, embedder: Embedder, input_shape: Sequence[int], num_classes: int,
                 config: CacheConfig | None = None, name: str = "cache"):
        self.config = config = config or CacheConfig()
        self.embedder, self.name = embedder, name
        self.input_shape, self.num_classes = tuple(input_shape), num_classes
        dim, cap = embedder.dim, config.capacity
        self.keys = np.zeros((cap, dim), dtype=np.float32)
        self._sq = np.full(cap, np.inf, dtype=np.float32)  # squared key lengths (inf: free)
        self._rows = np.arange(cap)
        self.labels = np.full(cap, -1, dtype=np.int64)
        self.uids: list[str | None] = [None] * cap
        self._slot_of: dict[str, int] = {}
        self._free = list(range(cap - 1, -1, -1))
        self.radius = config.radius if config.radius is not None else 0.0
        self.index: Index = (ExactIndex(cap) if config.index == "exact" else
                             LSHIndex(dim, config.tables, config.bits, self._width(),
                                      config.seed))
        self.policy = make_policy(config.policy)
        self._next_uid = itertools.count()
        self._inserts_since = 0
        self._memo: OrderedDict[int, tuple[torch.Tensor, np.ndarray]] = OrderedDict()
        self.lookups = self.hits = 0

    def __len__(self) -> int:
        return len(self._slot_of)

    # ---- the front-stage protocol ------------------------------------------------------
    def lookup(self, x: torch.Tensor, source: str = "") -> Verdict | None:
        return self.lookup_key(self.key(x))

    def observe(self, x: torch.Tensor, source: str, answer: Verdict) -> None:
        """Insert the answer unless this cache gave it (only computed or foreign results are
        worth a slot)."""
        if answer.stage != self.name:
            self.insert(self.key(x), answer.label)

    # ---- keys, lookups, inserts --------------------------------------------------------
    def key(self, x: torch.Tensor) -> np.ndarray:
        """The unit key of one sample (remembered, so observe after lookup embeds once)."""
        hit = self._memo.get(id(x))
        if hit is not None and hit[0] is x:
            return hit[1]
        key = self.embedder(check_sample(x, self.input_shape))[0]
        self._memo[id(x)] = (x, key)
        if len(self._memo) > _MEMO:
            self._memo.popitem(last=False)
        return key

    def neighbours(self, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The index's candidates for ``key`` and their exact distances."""
        if isinstance(self.index, ExactIndex):  # every row: a free row's length is inf
            d2 = self._sq + float(key @ key) - 2.0 * (self.keys @ key)
            return self._rows, np.sqrt(np.maximum(d2, 0.0))
        slots = self.index.candidates(key)
        if len(slots) == 0:
            return slots, np.zeros(0, dtype=np.float32)
        d2 = self._sq[slots] + float(key @ key) - 2.0 * (self.keys[slots] @ key)
        return slots, np.sqrt(np.maximum(d2, 0.0))

    def vote(self, key: np.ndarray) -> tuple[Vote | None, np.ndarray, np.ndarray]:
        slots, dist = self.neighbours(key)
        return hknn_vote(dist, self.labels[slots], self.config.k, self.radius), slots, dist

    def lookup_key(self, key: np.ndarray) -> Verdict | None:
        self.lookups += 1
        vote, slots, dist = self.vote(key)
        if vote is None or vote.share < self.config.threshold:
            return None
        self.hits += 1
        agreeing = slots[self.labels[slots] == vote.label]
        self.policy.used(int(agreeing[np.argmin(dist[self.labels[slots] == vote.label])]))
        return Verdict(vote.label, vote.share, self.name)

    def insert(self, key: np.ndarray, label: int, uid: str | None = None) -> str:
        """Store ``key -> label`` (evicting if full); returns the entry's uid."""
        uid = uid if uid is not None else f"{self.name}:{next(self._next_uid)}"
        if uid in self._slot_of:
            return uid
        if not self._free:
            self._evict(self.policy.victim())
        slot = self._free.pop()
        self.keys[slot], self.labels[slot], self.uids[slot] = key, label, uid
        self._sq[slot] = float(key @ key)
        self._slot_of[uid] = slot
        self.index.add(slot, self.keys[slot])
        self.policy.inserted(slot)
        self._inserts_since += 1
        if self.config.radius is None and self._inserts_since >= self.config.recalibrate_every:
            self.recalibrate()
        return uid

    def admit(self, entry: CacheEntry) -> bool:
        """Insert an entry from another cache after checking it; False if already held."""
        self.check_entry(entry)
        if entry.uid in self._slot_of:
            return False
        self.insert(np.asarray(entry.key, dtype=np.float32), int(entry.label), entry.uid)
        return True

    def check_entry(self, entry: CacheEntry) -> None:
        """Refuse a corrupt entry: wrong key shape, a NaN or infinite value, a key that is not
        unit length, a label outside the model's classes, or a bad uid."""
        key, where = entry.key, f"cache entry {entry.uid!r}"
        if not isinstance(key, np.ndarray) or key.shape != (self.embedder.dim,):
            shape = key.shape if isinstance(key, np.ndarray) else type(key).__name__
            raise ServeError(f"{where} has a key of shape {shape}; this cache's keys have "
                             f"shape ({self.embedder.dim},)")
        if not np.all(np.isfinite(key)):
            raise ServeError(f"{where} has NaN or infinite values in its key")
        norm = float(np.linalg.norm(key))
        if not (abs(norm - 1.0) < 1e-3 or norm < 1e-6):
            raise ServeError(f"{where} has a key of length {norm:.4g}; keys have unit length")
        label = entry.label
        if isinstance(label, bool) or not isinstance(label, int | np.integer) \
                or not 0 <= label < self.num_classes:
            raise ServeError(f"{where} has label {label!r}; the model's labels are "
                             f"0..{self.num_classes - 1}")
        if not isinstance(entry.uid, str) or not entry.uid or len(entry.uid) > 200:
            raise ServeError(f"cache entry uid must be a non-empty string of at most 200 "
                             f"characters, got {entry.uid!r}")

    def entries(self, labels: set[int] | None = None) -> list[CacheEntry]:
        """Held entries (optionally only these labels), most recently inserted last."""
        out = []
        for uid, slot in self._slot_of.items():
            if labels is None or int(self.labels[slot]) in labels:
                out.append(CacheEntry(self.keys[slot].copy(), int(self.labels[slot]), uid))
        return out

    def holds(self, uid: str) -> bool:
        return uid in self._slot_of

    def nearest(self, key: np.ndarray) -> tuple[float, int] | None:
        """The exact nearest held entry (distance, label), for measuring reuse opportunity."""
        slots = np.fromiter(self._slot_of.values(), dtype=np.int64, count=len(self._slot_of))
        if len(slots) == 0:
            return None
        dist = np.linalg.norm(self.keys[slots] - key, axis=1)
        i = int(np.argmin(dist))
        return float(dist[i]), int(self.labels[slots[i]])

    # ---- radius and width ----------------------------------------------------------------
    def recalibrate(self) -> None:
        """Re-derive the reuse radius from the held entries, and the LSH width from it."""
        self._inserts_since = 0
        slots = np.fromiter(self._slot_of.values(), dtype=np.int64, count=len(self._slot_of))
        radius = calibrate_radius(self.keys[slots], self.labels[slots], self.config.agreement,
                                  seed=self.config.seed)
        if math.isclose(radius, self.radius, rel_tol=0.05) and radius > 0:
            return
        self.set_radius(radius)

    def set_radius(self, radius: float) -> None:
        self.radius = radius
        slots = list(self._slot_of.values())
        self.index.rebuild(self._width(), {s: self.keys[s] for s in slots})

    def _width(self) -> float:
        c = self.config
        return width_for_radius(self.radius, c.tables, c.bits, c.recall)

    def _evict(self, slot: int) -> None:
        uid = self.uids[slot]
        assert uid is not None
        del self._slot_of[uid]
        self.index.remove(slot)
        self.policy.removed(slot)
        self.uids[slot], self.labels[slot], self._sq[slot] = None, -1, np.inf
        self._free.append(slot)
