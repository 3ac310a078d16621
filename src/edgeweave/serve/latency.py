"""How long a model takes per batch size: what the scheduler plans deadlines with.

Each batch size seen keeps an exponentially weighted mean of its measured seconds (the host's
speed drifts: other processes, clock changes); a size not yet seen is estimated from the ones
that were, on a line fitted through them (a convnet's batch time on a CPU grows close to
linearly with the batch), or, with one size seen, as that size's time per item (no batching
gain assumed: the safe side for deadlines).
"""

from __future__ import annotations

import threading


class LatencyModel:
    """Seconds per batch of a size; thread-safe."""

    def __init__(self, alpha: float = 0.2, scale: float = 1.0):
        self.alpha = alpha
        self.scale = scale  # emulated hardware slower than the host (time dilation)
        self._mean: dict[int, float] = {}
        self._lock = threading.Lock()

    def observe(self, size: int, seconds: float) -> None:
        with self._lock:
            old = self._mean.get(size)
            self._mean[size] = seconds if old is None else old + self.alpha * (seconds - old)

    def seed(self, size: int, seconds: float) -> None:
        """A calibration measurement (undilated host time), replacing what was known."""
        with self._lock:
            self._mean[size] = seconds * self.scale

    @property
    def known(self) -> bool:
        return bool(self._mean)

    def estimate(self, size: int) -> float:
        """Expected seconds for a batch of `size` (0.0 when nothing was measured yet: an
        unknown model is not refused on a guess)."""
        with self._lock:
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
