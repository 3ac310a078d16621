"""Edge-only, on the least-loaded edge server the device's edge can reach: its own or one a
MAN link away (EdgeCloudSim's least-loaded orchestrator). Load is requests in the server per
core; ties stay on the device's own edge, which needs no MAN hop."""

from __future__ import annotations

from edgeweave.sim.policies.base import Choice, Policy, register
from edgeweave.sim.pricing import Work


@register
class LeastLoaded(Policy):
    name = "least-loaded"

    def __init__(self, ctx, **params) -> None:  # type: ignore[no-untyped-def]
        super().__init__(ctx, **params)
        self._cache: dict[tuple[int, str, int, str], Work | None] = {}

    def decide(self, device: int, ap: int, now: float) -> Choice | None:
        if ap < 0:
            return None
        ctx = self.ctx
        home = ctx.ap_edge(ap)
        best, best_load = home, ctx.server(home).load()
        for edge in ctx.neighbours(home):
            load = ctx.server(edge).load()
            if load < best_load:
                best, best_load = edge, load
        app, hw = ctx.app_of(device), ctx.hardware_of(device)
        key = (app, hw, ap, best)
        work = self._cache.get(key)
        if work is None and key not in self._cache:
            name = ctx.ap_name(ap)
            src = ctx.pricing.primary(app)
            labels = ctx.pricing.mode_labels(src, hw, name, "edge-only")
            work = None if labels is None else ctx.pricing.work(src, hw, name, labels, best)
            self._cache[key] = work
        return None if work is None else (work, best)
