"""Re-choosing the streams' configurations when the load changes, without flapping.

Chameleon (Jiang et al., SIGCOMM 2018) re-profiles and re-picks configurations as conditions
drift; a server that re-picked on every small change of its capacity estimate would switch
models back and forth (each switch costs a model load and a cold cache). So the adaptor keeps
what it runs unless

* it no longer fits (capacity fell, streams were added), or
* the new optimum is better than keeping by more than ``margin`` (relative total quality).

And when it does re-pick, it plans for ``headroom`` less capacity than it has, so that the next
small dip of the capacity estimate does not break the knobs just chosen: knobs are kept while
they fit the whole capacity, but chosen to fit ``(1 - headroom)`` of it. The two thresholds
make a band, as a thermostat's do; without it every dip below the last optimum forces a re-pick.

"Keeping" means: the streams still present keep their knobs, and new streams get the best knobs
that fit in what is left (if they fit at all). Streams that left simply free their share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgeweave.serve.adapt_streams.allocate import Allocation, Space, Stream, allocate
from edgeweave.serve.stems.errors import TenancyError
from edgeweave.serve.stems.quality import check_positive


@dataclass(frozen=True)
class Decision:
    """One update's outcome: the allocation in force, whether it changed and how many streams'
    knobs changed (new streams do not count)."""

    allocation: Allocation
    switched: bool
    changed_streams: int
    reason: str


class StreamAdaptor:
    """See module doc. ``margin`` is the relative gain that justifies a switch, ``headroom``
    the fraction of capacity a re-pick leaves unused."""

    def __init__(self, space: Space, margin: float = 0.02, headroom: float = 0.05,
                 method: str = "exact") -> None:
        for name, value in (("margin", margin), ("headroom", headroom)):
            if isinstance(value, bool) or not isinstance(value, int | float) or \
                    not 0 <= value < 1:
                raise TenancyError(f"{name}: expected a fraction in [0, 1), got {value!r}")
        self.space = space
        self.margin = float(margin)
        self.headroom = float(headroom)
        self.method = method
        self.current: Allocation | None = None
        self.switches = 0

    def update(self, streams: Sequence[Stream], capacity_ms_per_s: float) -> Decision:
        capacity = check_positive(capacity_ms_per_s, "capacity", "ms of compute per second")
        try:
            best = allocate(streams, self.space, capacity * (1 - self.headroom), self.method)
        except TenancyError:  # no room for headroom: use all of it (or say it cannot serve)
            best = allocate(streams, self.space, capacity, self.method)
        keep = self._keep(streams, capacity)
        if keep is not None and best.value <= keep.value * (1 + self.margin):
            self.current = keep
            return Decision(keep, False, 0, "kept: the optimum gains no more than the margin")
        if self.current is None:
            reason = "first allocation"
        elif keep is None:
            reason = "re-picked: the current knobs no longer fit"
        else:
            reason = "re-picked: the optimum gains more than the margin"
        changed = self._changed(best)
        self.current = best
        if changed:
            self.switches += 1
        return Decision(best, changed > 0, changed, reason)

    def _changed(self, new: Allocation) -> int:
        old = self.current.knobs if self.current else {}
        return sum(1 for s, k in new.knobs.items() if s in old and old[s] != k)

    def _keep(self, streams: Sequence[Stream], capacity: float) -> Allocation | None:
        if self.current is None:
            return None
        old = self.current.knobs
        kept = {s.name: old[s.name] for s in streams if s.name in old}
        spent = sum(k.cost for k in kept.values())
        if spent > capacity * (1 + 1e-9):
            return None
        fresh = [s for s in streams if s.name not in old]
        if fresh:
            if capacity - spent <= 0:
                return None
            try:
                extra = allocate(fresh, self.space, capacity - spent, self.method)
            except TenancyError:
                return None
            kept.update(extra.knobs)
        return Allocation(self.method, capacity, {s.name: kept[s.name] for s in streams})
