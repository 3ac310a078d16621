"""An Edgent record replayed: each device switches (exit, cut) with its measured bandwidth, as
the runtime's `EdgentClient` does.

The record's configuration map (bandwidth state -> exit, cut, and that option's Plan) was built
offline by `edgeweave adapt edgent --trace`; each device holds an `EdgentSelector` over it,
started in the state of its access point's nominal rate. Before each request the selector takes the
device's bandwidth estimate (the runtime's `BandwidthEstimator`, fed by the device's simulated
uploads through its cell) and moves to a new state after ``confirm`` estimates in it (Li et al.
2018, Edgent's dynamic environment). A configuration that uploads nothing (device-only) sends a
heartbeat instead (`edgent_dynamic.PROBE_BYTES`, timed at the cell's current rate), so the
device notices when the link recovers, as the runtime's client does.

Each configuration's Plan is priced on the device's own path (its hardware, cell and edge), so
its answers cost what that exit and cut cost there, with the exit's accuracy. A configuration
used for the first time costs the device ``switch_s`` (the runtime creates and deploys a client
per configuration on first use and keeps it, so switching back is free).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeweave.plan.edgent_dynamic import EdgentSelector
from edgeweave.sim.apps import EdgentApp
from edgeweave.sim.pricing import Work
from edgeweave.sim.replay.base import Replay

if TYPE_CHECKING:
    from edgeweave.sim.policies.base import PolicyContext


class EdgentReplay(Replay):
    def __init__(self, ctx: PolicyContext, app: EdgentApp, srcs: list[int], *,
                 adapt: bool = True, switch_s: float = 0.0) -> None:
        super().__init__(ctx)
        self.app = app
        self.adapt = adapt
        self.switch_s = switch_s
        by_role = {ctx.pricing.sources[s].role: s for s in srcs}
        # source of each map entry (entries sharing an (exit, cut) share one source)
        self.src_of = [by_role[f"exit {e.option.exit} cut {e.option.cut}"]
                       for e in app.cmap.entries]
        self._sel: dict[int, tuple[int, EdgentSelector]] = {}
        self._used: dict[int, set[int]] = {}

    def _selector(self, device: int, ap: int, now: float) -> EdgentSelector:
        got = self._sel.get(device)
        if got is None or got[0] != ap:
            mbps = self.ctx.ap_mbps(ap, now)
            got = self._sel[device] = (ap, EdgentSelector(self.app.cmap, initial_mbps=mbps,
                                                          confirm=self.app.confirm))
        return got[1]

    def decide(self, device: int, ap: int, now: float) -> Work | None:
        if ap < 0:  # out of coverage: the current configuration's exit, on the device
            got = self._sel.get(device)
            state = got[1].state if got is not None else self.app.initial
            return self.local(self.src_of[state], device)
        sel = self._selector(device, ap, now)
        if self.adapt:
            est = self.ctx.estimate_mbps(device)
            if est is not None:
                before = len(sel.switches)
                sel.update(est, now)
                if len(sel.switches) > before:
                    self.replans += 1
                    self.switches += sel.switches[-1]["config_changed"]
        src = self.src_of[sel.state]
        hw, name = self.ctx.hardware_of(device), self.ctx.ap_name(ap)
        entry = sel.current
        assert entry.plan is not None
        pricing = self.ctx.pricing
        work = pricing.work(src, hw, name, pricing.labels(entry.plan, entry.plan.placement),
                            cuts=entry.plan.cuts)
        if self.switch_s > 0:
            used = self._used.setdefault(device, {self.src_of[self.app.initial]})
            if src not in used:
                used.add(src)
                self.ctx.occupy_device(device, self.switch_s)
        if self.adapt and work.up_hops == 0:
            self.ctx.probe(device, ap, now)
        return work
