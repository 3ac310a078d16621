"""Adaptive batch size: additive increase, multiplicative decrease (Clipper, Crankshaw et al.
2017, section 4.3).

Clipper's adaptive batching raises a model's batch limit by a fixed step while the batches it
runs finish within the model's latency objective, and cuts it by a small factor (10%) as soon
as one does not; larger batches amortise per-batch overhead, and the objective bounds how far
that trade may go. Only full batches push the limit up: a batch smaller than the limit says
nothing about whether the limit is too small.
"""

from __future__ import annotations

import math
import threading


class AIMDBatchSize:
    """The batch limit of one model. `observe(size, seconds)` after each batch it ran."""

    def __init__(self, slo_s: float, max_batch: int, start: int = 1, step: int = 1,
                 backoff: float = 0.9):
        if slo_s <= 0:
            raise ValueError("AIMD needs a positive latency objective")
        self.slo_s = slo_s
        self.max_batch = max_batch
        self.step = step
        self.backoff = backoff
        self._limit = float(max(1, min(start, max_batch)))
        self._lock = threading.Lock()

    @property
    def limit(self) -> int:
        return max(1, min(self.max_batch, math.floor(self._limit)))

    def observe(self, size: int, seconds: float) -> int:
        """Adapt to one batch's latency; returns the new limit."""
        with self._lock:
            if seconds > self.slo_s:
                self._limit = max(1.0, self._limit * self.backoff)
            elif size >= self.limit:
                self._limit = min(float(self.max_batch), self._limit + self.step)
            return self.limit
