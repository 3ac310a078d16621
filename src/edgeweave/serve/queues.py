"""A served model on the node: its runner, its knobs, its latency model and its own queue.

The queue is kept in the scheduler's order (by deadline under EDF, by arrival under FIFO), so
the head is always the request to serve next and a batch is a prefix. It holds at most the
model's `max_queue` requests (bounded by the node's); a model's queue is not shared, so one
tenant's burst fills its own queue first.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from edgeweave.serve.aimd import AIMDBatchSize
from edgeweave.serve.config import ServingConfig
from edgeweave.serve.latency import LatencyModel
from edgeweave.serve.pending import Inputs, Pending

#: Runs one batch: a list of requests' inputs -> each request's outputs, in order; `until` is
#: the engine-clock instant after which nobody waits for the result.
Runner = Callable[[Sequence[Inputs], float], list[Inputs]]
Order = Callable[[Pending], tuple[float, int, int]]
#: Arrivals kept per model to estimate its arrival rate.
ARRIVALS = 32


@dataclass
class ServedModel:
    key: str  # the deployed stage's digest
    name: str  # a label for metrics and logs
    runner: Runner
    config: ServingConfig  # resolved: max_batch and max_queue filled in
    latency: LatencyModel
    order: Order
    aimd: AIMDBatchSize | None = None
    fronts: list[object] = field(default_factory=list)  # see serve.front
    items: list[Pending] = field(default_factory=list)
    _keys: list[tuple[float, int, int]] = field(default_factory=list)
    running: int = 0  # requests of this model in batches now
    #: the last ARRIVALS requests' arrival instants (`rate`)
    arrived: deque[float] = field(default_factory=lambda: deque(maxlen=ARRIVALS))

    @property
    def limit(self) -> int:
        """The batch size it may run now (AIMD's, else the configured maximum)."""
        return self.aimd.limit if self.aimd is not None else self.config.max_batch

    @property
    def target(self) -> int:
        """The batch worth waiting for: the largest preferred size within the limit, else the
        limit (Triton's dynamic batcher)."""
        preferred = [p for p in self.config.preferred_batch if p <= self.limit]
        return preferred[-1] if preferred else self.limit

    def __len__(self) -> int:
        return len(self.items)

    def head(self) -> Pending:
        return self.items[0]

    def push(self, item: Pending) -> None:
        k = self.order(item)
        at = bisect.bisect(self._keys, k)
        self._keys.insert(at, k)
        self.items.insert(at, item)

    def take(self, n: int) -> list[Pending]:
        out = self.items[:n]
        del self.items[:n], self._keys[:n]
        return out

    def remove(self, item: Pending) -> bool:
        k = self.order(item)
        at = bisect.bisect_left(self._keys, k)
        if at < len(self.items) and self.items[at] is item:
            del self.items[at], self._keys[at]
            return True
        return False

    @property
    def keys(self) -> list[tuple[float, int, int]]:
        """The queued requests' order keys, sorted (read only)."""
        return self._keys

    def rate(self, now: float) -> float:
        """Requests per second lately (admitted or refused): the last `ARRIVALS` arrivals over
        the time since the first of them (0 before two have arrived)."""
        if len(self.arrived) < 2:
            return 0.0
        return (len(self.arrived) - 1) / max(now - self.arrived[0], 1e-6)

    def oldest_arrival(self) -> float:
        return min(p.arrival for p in self.items)

    def reconfigure(self, config: ServingConfig) -> None:
        self.config = config
        if config.adaptive:
            if self.aimd is None or self.aimd.slo_s != config.slo_ms / 1000.0:
                self.aimd = AIMDBatchSize(config.slo_ms / 1000.0, config.max_batch)
            self.aimd.max_batch = config.max_batch
        else:
            self.aimd = None
