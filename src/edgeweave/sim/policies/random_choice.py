"""Each request goes to the device, the edge or the cloud at random (EdgeCloudSim's random
orchestrator): the reference point a load-aware policy should clearly beat."""

from __future__ import annotations

from edgeweave.sim.policies.base import Choice, ModePolicy, register

CHOICES = ("device-only", "edge-only", "cloud-only")


@register
class RandomChoice(ModePolicy):
    name = "random"

    def decide(self, device: int, ap: int, now: float) -> Choice | None:
        mode = CHOICES[int(self.ctx.rng.integers(len(CHOICES)))]
        if ap < 0 and mode != "device-only":
            return None
        work = self.work_for(self.ctx.app_of(device), self.ctx.hardware_of(device), ap, mode)
        return None if work is None else (work, None)
