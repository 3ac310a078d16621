"""Tier load factors: how much slower each tier computes now than the profile said.

A profile is measured once; the machines then get busier or quieter (a loaded server, a
throttled phone, a shared VM whose speed drifts by tens of percent over seconds, measured by
`benchmarks/coinference.py`). Neurosurgeon scales its server-side predictions by a load factor
for this reason; here every tier gets one, learnt from the client's own requests: each reply
carries what every tier's compute really took, the plan says what it was predicted to take,
and the factor is an EWMA of their ratio. The prediction for the next request is the plan's,
with each tier's compute scaled by its factor, so it is made before that request runs and
from earlier requests only.

A tier's factor is shared by every stage it runs (the machine's speed moves for all of them),
but one stage can sit off the profile by a steady amount of its own (a cut's head of convs
drifts unlike the whole model; measured: 12% on alexnet's device stage). So each stage also
keeps a slowly moving offset from the tier's factor: a stage seen rarely still gets the tier's
fresh factor, corrected by its own offset.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LoadFactors:
    """Per-tier EWMA of measured / predicted compute time; 1.0 for a tier not yet seen.

    One instance may be shared by several clients of the same device (their requests all
    sample the same machines), hence the lock.
    """

    alpha: float = 0.3
    offset_alpha: float = 0.1
    min_ms: float = 1.0  # a tier predicted below this is timer noise, not a speed sample
    factors: dict[str, float] = field(default_factory=dict)
    offsets: dict[str, float] = field(default_factory=dict)  # stage id -> its ratio to its tier
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        for name in ("alpha", "offset_alpha"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")

    def factor(self, tier: str, stage: str | None = None) -> float:
        """The tier's factor, times the stage's own offset when it has been seen."""
        return self.factors.get(tier, 1.0) * self.offsets.get(stage or "", 1.0)

    def observe(self, tier: str, measured_ms: float, predicted_ms: float,
                stage: str | None = None) -> None:
        """Two time scales: the tier's factor follows the machine quickly (`alpha`) on ratios
        with the stage's offset taken out; the offset then moves slowly (`offset_alpha`)
        toward what is left, so a speed change is not counted twice."""
        if predicted_ms < self.min_ms or measured_ms <= 0:
            return
        ratio = measured_ms / predicted_ms
        with self._lock:
            offset = self.offsets.get(stage or "", 1.0)
            old = self.factors.get(tier)
            new = ratio / offset
            k = self.factors[tier] = new if old is None else old + self.alpha * (new - old)
            if stage is not None:
                self.offsets[stage] = offset + self.offset_alpha * (ratio / k - offset)

    def observe_request(self, predicted: dict[str, Any], segments: dict[str, float],
                        stages: dict[str, str] | None = None) -> None:
        """Learn from one request: `predicted` is a plan's prediction (its `tier_compute_ms`),
        `segments` the request's measured `<tier>_compute` times, `stages` an id per tier of
        the stage it ran (any string that differs between placements)."""
        for tier, ms in predicted["tier_compute_ms"].items():
            if f"{tier}_compute" in segments:
                self.observe(tier, segments[f"{tier}_compute"], ms, (stages or {}).get(tier))

    def predict_ms(self, predicted: dict[str, Any], stages: dict[str, str] | None = None
                   ) -> float:
        """A plan's predicted total with each tier's compute scaled by its load factor."""
        return predicted["total_ms"] + sum(
            (self.factor(t, (stages or {}).get(t)) - 1.0) * ms
            for t, ms in predicted["tier_compute_ms"].items())

    def scaled(self) -> dict[str, float]:
        with self._lock:
            return dict(self.factors)
