"""How long a model takes per batch size: what the scheduler plans deadlines with.

Each batch size seen keeps an exponentially weighted mean of its measured seconds (the host's
speed drifts: other processes, clock changes); a size not yet seen is estimated from the ones
that were, on a line fitted through them (a convnet's batch time on a CPU grows close to
linearly with the batch), or, with one size seen, as that size's time per item (no batching
gain assumed: the safe side for deadlines). A node measures every size it may form when a model
is deployed (`serve.batching.calibrate`): a line through batch 1 and the largest was far off for
small models, whose batch of one takes a faster path (the digits tenants: 0.12 ms at batch 1,
0.45 ms at 2, 0.49 ms at 8, on this host). No size is estimated slower than a larger one.

Each size also keeps the mean deviation of its measurements around that mean (as TCP keeps
its round-trip time's, RFC 6298), so the scheduler can tell two questions apart. "Can this
request still make it?" is answered with the mean (`estimate`): shedding a request that would
have made it is a sure loss, and one queued that then cannot make it is dropped before it costs
any compute. "Will this batch finish in time if it starts now?" is answered with a high bound
(`bound`, the mean plus two mean deviations, about the 95th percentile): a batch that finishes
after its deadline loses every request in it AND the compute it took (measured on a shared
2-core host with ResNet-18 at 150% of its capacity: planned with the mean alone, about 8% of
the requests were in batches that finished late, dropped after their compute).
"""

from __future__ import annotations

import threading
from collections import deque


class LatencyModel:
    """Seconds per batch of a size; thread-safe."""

    #: Mean deviations a batch may run over its mean before `bound` calls it late.
    SPREAD = 2.0
    #: Measurements kept per size for `recent`.
    RECENT = 16

    def __init__(self, alpha: float = 0.2, scale: float = 1.0, beta: float = 0.25):
        self.alpha, self.beta = alpha, beta  # the mean's and the deviation's gains
        self.scale = scale  # emulated hardware slower than the host (time dilation)
        self._mean: dict[int, float] = {}
        self._dev: dict[int, float] = {}
        # (estimate, bound) by size, until the next measurement: admission asks for several
        # sizes on every request (`Scheduler.place`), refused ones included, and
        # fitting the line each time was most of what refusing a request cost the node
        self._known: dict[int, tuple[float, float]] = {}
        self._recent: dict[int, deque[float]] = {}  # each size's last RECENT measurements
        self._lock = threading.Lock()

    def observe(self, size: int, seconds: float) -> None:
        with self._lock:
            self._known.clear()
            self._recent.setdefault(size, deque(maxlen=self.RECENT)).append(seconds)
            old = self._mean.get(size)
            if old is None:
                self._mean[size], self._dev[size] = seconds, 0.0
                return
            dev = self._dev.get(size, 0.0)
            self._dev[size] = dev + self.beta * (abs(seconds - old) - dev)
            self._mean[size] = old + self.alpha * (seconds - old)

    def seed(self, size: int, seconds: float, spread: float = 0.0) -> None:
        """A calibration measurement (undilated host time) and its deviation, replacing what
        was known."""
        with self._lock:
            self._known.clear()
            self._mean[size] = seconds * self.scale
            self._dev[size] = spread * self.scale

    @property
    def known(self) -> bool:
        return bool(self._mean)

    @property
    def measured(self) -> list[int]:
        """The batch sizes measured (calibrated or run); others are estimated from them."""
        with self._lock:
            return sorted(self._mean)

    def estimate(self, size: int) -> float:
        """Expected seconds for a batch of `size` (0.0 when nothing was measured yet: an
        unknown model is not refused on a guess)."""
        return self._of(size)[0]

    def bound(self, size: int) -> float:
        """A batch of `size` finishes within this many seconds but rarely (the mean plus
        SPREAD mean deviations; a size not seen has the relative deviation of the nearest size
        seen)."""
        return self._of(size)[1]

    def _of(self, size: int) -> tuple[float, float]:
        with self._lock:
            known = self._known.get(size)
            if known is None:
                mean = self._estimate(size)
                if size not in self._mean:  # nor faster than a smaller one measured (a line
                    # fitted through a batch of one's faster path can dip below size 2)
                    mean = max([mean, *(m for s, m in self._mean.items() if s < size)])
                bound = self._bound(size, mean)
                # a batch takes no longer than a larger one measured (computing fewer rows is
                # not slower): one outlier at a size (a stall of the shared host, stretched by
                # the dilation) does not make that size look slower than a larger one, which
                # the scheduler then avoids forming and so never measures again
                for s in (s for s in self._mean if s > size):
                    mean = min(mean, self._mean[s])
                    bound = min(bound, self._mean[s] + self.SPREAD * self._dev.get(s, 0.0))
                known = self._known[size] = (mean, max(mean, bound))
            return known

    def _estimate(self, size: int) -> float:
        """(holding the lock)"""
        if size in self._mean:
            return self._mean[size]
        points = sorted(self._mean.items())
        if not points:
            return 0.0
        if len(points) == 1:
            seen, seconds = points[0]
            return seconds * size / seen
        return max(points[0][1] * size / points[0][0] if size < points[0][0] else 0.0,
                   _line(points, size))

    def _bound(self, size: int, mean: float) -> float:
        """(holding the lock)"""
        if not self._mean:
            return mean
        near = min(self._mean, key=lambda s: (abs(s - size), s))
        dev = self._dev.get(near, 0.0)
        if near != size:
            dev *= mean / self._mean[near] if self._mean[near] > 0 else 0.0
        return mean + self.SPREAD * dev

    def recent(self, size: int) -> list[float]:
        """The last few measurements of batches of `size`, oldest first (undilated: as run)."""
        with self._lock:
            return list(self._recent.get(size, ()))

    def per_item(self, size: int) -> float:
        """Amortised seconds per request in batches of `size`."""
        return self.estimate(max(1, size)) / max(1, size)


def _line(points: list[tuple[int, float]], size: int) -> float:
    """Least-squares line through (size, seconds), evaluated at `size` (never below 0)."""
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    slope = sum((p[0] - mx) * (p[1] - my) for p in points) / sxx if sxx else 0.0
    return max(0.0, my + slope * (size - mx))
