"""Which cached entry to drop when the cache is full: one small class per policy, a registry
by name. Cachier (Drolia et al. 2017) evicts the least frequently used entry; LRU and FIFO are
the usual alternatives. Which policy and size to use is chosen by
:mod:`edgeweave.serve.cache.cachier` from the expected-latency model."""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from typing import Protocol

from edgeweave.errors import ServeError


class Policy(Protocol):
    def inserted(self, slot: int) -> None: ...
    def used(self, slot: int) -> None: ...
    def removed(self, slot: int) -> None: ...
    def victim(self) -> int: ...


class LRU:
    """Least recently used (an insert counts as a use)."""

    def __init__(self) -> None:
        self._order: OrderedDict[int, None] = OrderedDict()

    def inserted(self, slot: int) -> None:
        self._order[slot] = None

    def used(self, slot: int) -> None:
        self._order.move_to_end(slot)

    def removed(self, slot: int) -> None:
        self._order.pop(slot, None)

    def victim(self) -> int:
        return next(iter(self._order))


class FIFO(LRU):
    """First in, first out: uses do not refresh an entry."""

    def used(self, slot: int) -> None:
        pass


class LFU:
    """Least frequently used (Cachier); ties go to the entry used least recently. A heap with
    lazy deletion keeps eviction O(log n)."""

    def __init__(self) -> None:
        self._count: dict[int, int] = {}
        self._heap: list[tuple[int, int, int]] = []
        self._tick = itertools.count()

    def inserted(self, slot: int) -> None:
        self._count[slot] = 1
        heapq.heappush(self._heap, (1, next(self._tick), slot))

    def used(self, slot: int) -> None:
        self._count[slot] += 1
        heapq.heappush(self._heap, (self._count[slot], next(self._tick), slot))
        if len(self._heap) > 4 * len(self._count) + 64:  # drop stale entries now and then
            self._heap = [e for e in self._heap if self._count.get(e[2]) == e[0]]
            heapq.heapify(self._heap)

    def removed(self, slot: int) -> None:
        self._count.pop(slot, None)

    def victim(self) -> int:
        while True:
            count, _, slot = self._heap[0]
            if self._count.get(slot) == count:
                return slot
            heapq.heappop(self._heap)  # stale: the slot was used again or removed


POLICIES: dict[str, type[LRU] | type[LFU]] = {"lru": LRU, "lfu": LFU, "fifo": FIFO}


def make_policy(name: str) -> Policy:
    try:
        return POLICIES[name]()
    except KeyError:
        raise ServeError(f"cache.policy must be one of {', '.join(POLICIES)}, "
                         f"got {name!r}") from None
