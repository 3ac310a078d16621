"""A semantic cache's settings, as a served model's ``cache:`` section will spell them; every
check names the field (``cache.threshold``, ...) so a bad YAML value is reported in the words
the user wrote."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgeweave.errors import ServeError
from edgeweave.serve.cache.eviction import POLICIES
from edgeweave.serve.cache.index import check_index
from edgeweave.serve.stage import check_fraction, check_known_fields, check_positive_int

#: Most cache entries an edge pushes with one reply (and a device accepts).
MAX_PUSH = 64


@dataclass(frozen=True)
class CacheConfig:
    """``threshold``: the share of the neighbours' weight a label needs to be reused (H-kNN).
    ``k``: neighbours that vote. ``radius``: the farthest key that may vote (unit keys, so in
    [0, 2]); None calibrates it from the cached entries to reach ``agreement``. ``capacity``
    and ``policy``: size and eviction. ``index``: ``lsh`` or ``exact`` (a scan of every
    entry). ``tables``/``bits``: LSH tables and hash functions per table; ``recall``: the
    LSH's target recall at the radius. ``embed``: the key (``pixels`` or ``prefix:<node>``)."""

    threshold: float = 0.8
    k: int = 5
    radius: float | None = None
    agreement: float = 0.98
    capacity: int = 1000
    policy: str = "lfu"
    index: str = "exact"  # measured faster than LSH up to 4000 entries (semantic_cache.py)
    tables: int = 8
    bits: int = 4
    recall: float = 0.95
    recalibrate_every: int = 100
    embed: str = "pixels"
    seed: int = 0

    def __post_init__(self) -> None:
        check_fraction(self.threshold, "cache.threshold")
        check_fraction(self.agreement, "cache.agreement")
        check_fraction(self.recall, "cache.recall")
        check_positive_int(self.k, "cache.k")
        check_positive_int(self.capacity, "cache.capacity")
        check_positive_int(self.tables, "cache.tables")
        check_positive_int(self.bits, "cache.bits")
        check_positive_int(self.recalibrate_every, "cache.recalibrate_every")
        if self.radius is not None and not (isinstance(self.radius, int | float)
                                            and 0.0 <= self.radius <= 2.0):
            raise ServeError(f"cache.radius must be a distance in [0, 2] (keys have unit "
                             f"length) or omitted to calibrate it, got {self.radius!r}")
        check_index(self.index)
        if self.policy not in POLICIES:
            raise ServeError(f"cache.policy must be one of {', '.join(POLICIES)}, "
                             f"got {self.policy!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> CacheConfig:
        """From a YAML ``cache:`` section; an unknown field is named with the known ones."""
        check_known_fields(cls, values, "cache")
        return cls(**values)


@dataclass(frozen=True)
class PrefetchConfig:
    """Precog's push from the edge cache to the devices (a served model's ``prefetch:``
    section; it needs the ``cache:`` section). ``top``: next classes predicted per device.
    ``budget``: most entries pushed with one reply (a device may ask for fewer).
    ``max_sources``: devices the predictor keeps state for (the least recently seen is
    forgotten: a peer names its device, so the count must be bounded)."""

    top: int = 2
    budget: int = 16
    max_sources: int = 1024

    def __post_init__(self) -> None:
        check_positive_int(self.top, "prefetch.top")
        check_positive_int(self.budget, "prefetch.budget")
        if self.budget > MAX_PUSH:
            raise ServeError(f"prefetch.budget must be at most {MAX_PUSH} entries per reply, "
                             f"got {self.budget}")
        check_positive_int(self.max_sources, "prefetch.max_sources")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> PrefetchConfig:
        check_known_fields(cls, values, "prefetch")
        return cls(**values)
