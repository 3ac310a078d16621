"""A big/little pair replayed (Park et al.; `plan.select`'s pair): every request runs the little
model on the device; with the pair's escalation rate (measured on validation data) it is not
confident and the big model runs too, where its own adaptive Plan replay puts it (the big model
re-plans on the device's bandwidth and its edge's load like any plan). An escalated request is
one request whose device work is the little model's and then the big model's device part."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeweave.sim.pricing import Work
from edgeweave.sim.replay.base import Replay
from edgeweave.sim.replay.plan import PlanReplay

if TYPE_CHECKING:
    from edgeweave.sim.policies.base import PolicyContext


class BigLittleReplay(Replay):
    def __init__(self, ctx: PolicyContext, little: int, big: PlanReplay,
                 escalation_rate: float) -> None:
        super().__init__(ctx)
        self.little = little
        self.big = big
        self.rate = escalation_rate

    def counts(self) -> tuple[int, int]:
        return self.big.counts()

    def decide(self, device: int, ap: int, now: float) -> Work | None:
        little = self.local(self.little, device)
        if self.rate <= 0 or self.ctx.rng.random() >= self.rate:
            return little
        big = self.big.decide(device, ap, now)
        if big is None:
            return None
        return self.ctx.pricing.combine(little, big)
