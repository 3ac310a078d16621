"""The simulated clock: how long a local step and a message take.

Without a time model "async beats sync" is meaningless: in rounds a synchronous method always
looks at least as good, since asynchrony only buys wall-clock time (no waiting for stragglers).
The model is deliberately small and stated in every benchmark output:

* compute: node i's speed factor is lognormal(0, ``hetero``) (fixed per node, seeded: slow
  devices stay slow); one local step takes ``step_s * factor_i * lognormal(0, jitter)``, and with
  probability ``straggler_p`` that step is ``straggler_x`` times slower (a transient straggler:
  GC pause, contention, radio sleep);
* a message of b bytes over a link takes ``latency_s + b / bandwidth``; a node's link is
  ``link_Bps`` each way, full duplex; a parameter server's link is ``server_Bps``, and messages
  to or from the server share it (they queue: this is the PS bottleneck at scale);
* a node sends to several peers one after the other on its own link (no multicast).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgeweave.train.types import TrainError


@dataclass(frozen=True)
class TimeModel:
    step_s: float = 0.02
    hetero: float = 0.3
    jitter: float = 0.1
    straggler_p: float = 0.02
    straggler_x: float = 5.0
    link_Bps: float = 1.25e6       # 10 Mbit/s per device
    server_Bps: float = 12.5e6     # 100 Mbit/s at the parameter server / FL server
    latency_s: float = 0.005
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("step_s", "link_Bps", "server_Bps"):
            if not getattr(self, name) > 0:
                raise TrainError(f"time model: {name} must be > 0, got {getattr(self, name)}")
        for name in ("hetero", "jitter", "latency_s"):
            if getattr(self, name) < 0:
                raise TrainError(f"time model: {name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.straggler_p <= 1 or self.straggler_x < 1:
            raise TrainError("time model: need 0 <= straggler_p <= 1 and straggler_x >= 1, got "
                             f"{self.straggler_p}, {self.straggler_x}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def speeds(self, n: int) -> np.ndarray:
        """Per-node slowness factors (median 1), fixed for a run."""
        rng = np.random.default_rng([self.seed, n, 7])
        return rng.lognormal(0.0, self.hetero, size=n)

    def step_times(self, rng: np.random.Generator, speeds: np.ndarray,
                   nodes: np.ndarray | None = None) -> np.ndarray:
        """Seconds of one local step for each node (all, or those in ``nodes``)."""
        f = speeds if nodes is None else speeds[nodes]
        t = self.step_s * f * rng.lognormal(0.0, self.jitter, size=f.shape)
        slow = rng.random(f.shape) < self.straggler_p
        return np.where(slow, t * self.straggler_x, t)

    def message_s(self, nbytes: float, bandwidth: float | None = None) -> float:
        return self.latency_s + nbytes / (bandwidth or self.link_Bps)
