"""EdgeWeave's own plans: each application is replayed from what the planner wrote for it, by
its kind (`sim.apps`, `sim.replay`): a Plan JSON (chain scan, min-cut, an Edgent option) or a
selected variant re-planned as the runtime's adaptive client does; an Edgent configuration map
switched with the device's measured bandwidth as `EdgentSelector` does; a big/little pair
escalating at its measured rate; a multi-device partition's frame on the device's cluster,
then the rest of the model, re-planned like any plan.

Parameters (``policy: {name: edgeweave, params: {...}}``): ``adapt`` (default true: re-plan and
switch; false keeps each device's first placement), ``min_gain`` (the predicted gain a switch
needs, 5%), ``switch_s`` (seconds a switch costs the device: the re-deploy).
"""

from __future__ import annotations

from typing import Any

from edgeweave.errors import SimError
from edgeweave.sim.policies.base import Choice, Policy, PolicyContext, register
from edgeweave.sim.replay import Replay, make_replay

PARAMS = ("adapt", "min_gain", "switch_s")


@register
class EdgeWeavePlans(Policy):
    name = "edgeweave"

    def __init__(self, ctx: PolicyContext, **params: Any) -> None:
        unknown = sorted(set(params) - set(PARAMS))
        if unknown:
            raise SimError(f"policy edgeweave: unknown parameter(s) {', '.join(unknown)} "
                           f"(known: {', '.join(PARAMS)})")
        super().__init__(ctx)
        self.replays: list[Replay] = [make_replay(ctx, app, params)
                                      for app in range(len(ctx.pricing.app_sources))]
        self._decide = [r.decide for r in self.replays]  # per application, bound once

    def counts(self) -> tuple[int, int]:
        got = [r.counts() for r in self.replays]
        return sum(c[0] for c in got), sum(c[1] for c in got)

    def decide(self, device: int, ap: int, now: float) -> Choice | None:
        work = self._decide[self.ctx.device_app[device]](device, ap, now)
        return None if work is None else (work, None)
