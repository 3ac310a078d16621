"""Bandwidth estimation from the client's own transfers, with change-point detection.

An EWMA alone lags a step change by ~1/alpha samples; Edgent's dynamic mode needs to notice a
new bandwidth state quickly. So samples far from the estimate (outside +-`tolerance`) are held
as a candidate new regime, and `confirm` consecutive ones in agreement replace the estimate
outright (a simple two-sided change-point test); isolated outliers are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)  # the simulator keeps one per device, and feeds it per transfer
class BandwidthEstimator:
    alpha: float = 0.3
    tolerance: float = 0.3
    confirm: int = 3
    mbps: float | None = None
    changes: int = 0
    _pending: list[float] = field(default_factory=list)

    def observe(self, nbytes: float, seconds: float) -> bool:
        """Add one transfer; returns True when the estimate jumped to a new regime."""
        if seconds <= 0 or nbytes <= 0:
            return False
        sample = nbytes * 8 / seconds / 1e6
        if self.mbps is None:
            self.mbps = sample
            return True
        if abs(sample - self.mbps) <= self.tolerance * self.mbps:
            if self._pending:
                self._pending.clear()
            self.mbps += self.alpha * (sample - self.mbps)
            return False
        same_side = all((p > self.mbps) == (sample > self.mbps) for p in self._pending)
        self._pending = [*self._pending, sample] if same_side else [sample]
        if len(self._pending) < self.confirm:
            return False
        self.mbps = sorted(self._pending)[len(self._pending) // 2]
        self._pending.clear()
        self.changes += 1
        return True
