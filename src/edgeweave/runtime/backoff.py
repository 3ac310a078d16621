"""Exponential back-off after failures: how long a device leaves a failing edge alone."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """``low * 2**(k-1)`` seconds after the k-th failure in a row, at most ``high``."""

    low: float = 0.5
    high: float = 8.0
    failures: int = 0
    until: float = 0.0  # time.monotonic() instant the back-off ends
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def fail(self) -> float:
        """Count a failure; returns the back-off it starts, in seconds."""
        with self._lock:
            self.failures += 1
            delay = min(self.high, self.low * 2 ** (self.failures - 1))
            self.until = time.monotonic() + delay
            return delay

    def ok(self) -> None:
        with self._lock:
            self.failures = 0

    def reset(self) -> None:
        """The peer answered: no failures counted and no back-off from now on."""
        with self._lock:
            self.failures, self.until = 0, 0.0

    @property
    def active(self) -> bool:
        return time.monotonic() < self.until
