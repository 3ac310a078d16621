"""EdgeWeave's own plans: each device starts from its application's Plan JSON (the planner's
chain scan or min-cut placement, with its cut codecs) and re-plans as the runtime's adaptive
client does (`runtime.client.CoInferenceClient._maybe_replan`).

Per device: the bandwidth it believes its plan was made for, and the load factors its last
check used. Before each request, the device's bandwidth estimate (the runtime's own
`BandwidthEstimator`, fed by the device's simulated uplink transfers) and its edge's and
cloud's load factors (measured / predicted compute over recent requests, the runtime's
`LoadFactors`) are compared with them; a 10% bandwidth move or a 20% load move triggers a
re-plan with the planner on `Profile.with_link` / `Profile.with_load`, and the device switches
only if the new placement is predicted to be at least ``min_gain`` better (and, with
``switch_s``, spends that long re-deploying before its next request). A device that moves
to another access point starts again from the plan for its new link; out of coverage, it runs
on the device (the runtime's fallback).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgeweave.sim.policies.base import Choice, Policy, PolicyContext, register
from edgeweave.sim.pricing import Work

#: the runtime client's defaults (`runtime.client.ClientOptions`): a 10% bandwidth move, a 20%
#: load move, and a 5% predicted gain before switching
BANDWIDTH_CHANGE = 0.1
LOAD_CHANGE = 0.2
MIN_GAIN = 0.05


@dataclass
class _DeviceState:
    ap: int
    labels: tuple[int, ...]
    cuts: dict[str, str]
    work: Work
    believed_mbps: float
    checked: dict[str, float] = field(default_factory=dict)


@register
class EdgeWeavePlans(Policy):
    name = "edgeweave"

    def __init__(self, ctx: PolicyContext, adapt: bool = True, min_gain: float = MIN_GAIN,
                 switch_s: float = 0.0, **params: Any) -> None:
        super().__init__(ctx, **params)
        self.adapt = adapt
        self.min_gain = min_gain
        # a switch re-traces and re-deploys the new stages before the device goes on
        # (`CoInferenceClient.deploy`); 0 treats switching as free
        self.switch_s = switch_s
        self._state: dict[int, _DeviceState] = {}
        self._local: dict[tuple[int, str], Work] = {}
        self._tiers: dict[int, list[tuple[str, Any]]] = {}

    def _start(self, device: int, ap: int) -> _DeviceState:
        ctx = self.ctx
        app, hw, name = ctx.app_of(device), ctx.hardware_of(device), ctx.ap_name(ap)
        chosen = ctx.pricing.planned(app, hw, name)
        labels = ctx.pricing.labels(chosen, chosen.placement)
        work = ctx.pricing.work(app, hw, name, labels, cuts=chosen.cuts)
        hop = chosen.hop_names()[0]
        return _DeviceState(ap, labels, dict(chosen.cuts), work, chosen.links[hop].mbps)

    def _fallback(self, device: int) -> Work:
        ctx = self.ctx
        key = (ctx.app_of(device), ctx.hardware_of(device))
        work = self._local.get(key)
        if work is None:
            name = ctx.ap_name(0)
            labels = ctx.pricing.mode_labels(key[0], key[1], name, "device-only")
            assert labels is not None
            work = self._local[key] = ctx.pricing.work(key[0], key[1], name, labels)
        return work

    def decide(self, device: int, ap: int, now: float) -> Choice | None:
        if ap < 0:
            return self._fallback(device), None
        st = self._state.get(device)
        if st is None or st.ap != ap:
            st = self._state[device] = self._start(device, ap)
        elif self.adapt:
            self._maybe_replan(device, st)
        return st.work, None

    def _servers(self, ap: int) -> list[tuple[str, Any]]:
        """The (tier, server) pairs a device at ``ap`` learns load factors from."""
        got = self._tiers.get(ap)
        if got is None:
            edge = self.ctx.ap_edge(ap)
            got = [("edge", self.ctx.server(edge))]
            cloud = self.ctx.cloud_of(edge)
            if cloud is not None:
                got.append(("cloud", self.ctx.server(cloud)))
            self._tiers[ap] = got
        return got

    def _maybe_replan(self, device: int, st: _DeviceState) -> None:
        est = self.ctx.estimate_mbps(device)
        believed, seen = st.believed_mbps, st.checked
        mbps = believed if est is None else est
        servers = self._servers(st.ap)
        if abs(mbps - believed) < BANDWIDTH_CHANGE * believed:
            for tier, server in servers:
                old = seen.get(tier, 1.0)
                if abs(server.load_factor - old) >= LOAD_CHANGE * old:
                    break
            else:
                return
        loads = {tier: server.load_factor for tier, server in servers}
        ctx = self.ctx
        app, hw, name = ctx.app_of(device), ctx.hardware_of(device), ctx.ap_name(st.ap)
        state = ctx.pricing.replan(app, hw, name, mbps, loads)
        self.replans += 1
        now_cost = ctx.pricing.cost(app, state, st.labels, st.cuts)
        new_cost = ctx.pricing.cost(app, state, state.labels, state.cuts)
        if state.labels != st.labels and new_cost < now_cost * (1 - self.min_gain):
            st.labels, st.cuts = state.labels, dict(state.cuts)
            st.work = ctx.pricing.work(app, hw, name, state.labels, cuts=state.cuts)
            self.switches += 1
            if self.switch_s > 0:
                ctx.occupy_device(device, self.switch_s)
        # keep the plan, believed at the new bandwidth, so the check does not repeat forever
        st.believed_mbps, st.checked = mbps, loads
