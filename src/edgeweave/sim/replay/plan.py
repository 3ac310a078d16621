"""An adaptive Plan replay: each device starts from the Plan JSON (the planner's chain scan or
min-cut placement with its cut codecs; a selected variant's plan; the rest of a multi-device
partition after its frame) and re-plans as the runtime's adaptive client does
(`runtime.client.CoInferenceClient._maybe_replan`).

Per device: the bandwidth it believes its plan was made for, and the load factors its last
check used. Before each request, the device's bandwidth estimate (the runtime's own
`BandwidthEstimator`, fed by the device's simulated uplink transfers) and its edge's and
cloud's load factors (measured / predicted compute over recent requests, the runtime's
`LoadFactors`) are compared with them; a 10% bandwidth move or a 20% load move triggers a
re-plan with the planner on `Profile.with_link` / `Profile.with_load`, and the device switches
only if the new placement is predicted to be at least ``min_gain`` better (and, with
``switch_s``, spends that long re-deploying before its next request). A device that moves
to another access point starts again from the plan for its new link; out of coverage, it runs
on the device (the runtime's fallback). A partition re-plans only the rest of the model: its
prefix stays pinned to the gateway, where the cluster computes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgeweave.errors import SimError
from edgeweave.sim.pricing import Work
from edgeweave.sim.replay.base import BANDWIDTH_CHANGE, LOAD_CHANGE, MIN_GAIN, Replay

if TYPE_CHECKING:
    from edgeweave.sim.policies.base import PolicyContext


class _DeviceState:
    __slots__ = ("ap", "believed_mbps", "bounds", "checked", "cuts", "hi", "labels", "last",
                 "lo", "servers", "work")

    def __init__(self, ap: int, labels: tuple[int, ...], cuts: dict[str, str], work: Work,
                 believed_mbps: float, servers: list[tuple[str, Any]]) -> None:
        self.ap, self.labels, self.cuts, self.work = ap, labels, cuts, work
        self.servers = servers
        self.last: Any = None  # the state (`pricing.Replan`) of the device's last re-plan
        self.believe(believed_mbps, {})

    def believe(self, mbps: float, loads: dict[str, float]) -> None:
        """The bandwidth and load factors the plan is now believed made for, and the open
        ranges around them that no re-plan is checked inside (checked before every request,
        so kept as bounds rather than recomputed)."""
        self.believed_mbps, self.checked = mbps, loads
        self.lo, self.hi = mbps * (1 - BANDWIDTH_CHANGE), mbps * (1 + BANDWIDTH_CHANGE)
        self.bounds = [(server, old * (1 - LOAD_CHANGE), old * (1 + LOAD_CHANGE))
                       for tier, server in self.servers for old in (loads.get(tier, 1.0),)]


class PlanReplay(Replay):
    def __init__(self, ctx: PolicyContext, src: int, *, cluster: bool = False,
                 adapt: bool = True, min_gain: float = MIN_GAIN, switch_s: float = 0.0,
                 **params: Any) -> None:
        if params:
            raise SimError(f"policy edgeweave: unknown parameter(s) "
                           f"{', '.join(sorted(params))} (known: adapt, min_gain, switch_s)")
        super().__init__(ctx)
        self.src = src
        self.cluster = cluster
        self.adapt = adapt
        self.min_gain = min_gain
        # a switch re-traces and re-deploys the new stages before the device goes on
        # (`CoInferenceClient.deploy`); 0 treats switching as free
        self.switch_s = switch_s
        self._state: dict[int, _DeviceState] = {}
        self._tiers: dict[int, list[tuple[str, Any]]] = {}
        self._estimate = ctx.estimate_mbps

    def _start(self, device: int, ap: int) -> _DeviceState:
        ctx = self.ctx
        hw, name = ctx.hardware_of(device), ctx.ap_name(ap)
        d = ctx.pricing.initial(self.src, hw, name)
        work = ctx.pricing.work(self.src, hw, name, d.labels, cuts=d.cuts, cluster=self.cluster)
        return _DeviceState(ap, d.labels, d.cuts, work, d.mbps, self._servers(ap))

    def decide(self, device: int, ap: int, now: float) -> Work | None:
        if ap < 0:
            return self.local(self.src, device, self.cluster)
        st = self._state.get(device)
        if st is None or st.ap != ap:
            st = self._state[device] = self._start(device, ap)
        elif self.adapt:
            # re-plan when the bandwidth estimate or a server's load factor has left the range
            # the plan is believed made for (checked before every request, nearly always in it)
            est = self._estimate(device)
            if est is None or st.lo < est < st.hi:
                for server, lo, hi in st.bounds:
                    if not lo < server.load_factor < hi:
                        break
                else:
                    return st.work
            self._replan(device, st, est)
        return st.work

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

    def _replan(self, device: int, st: _DeviceState, est: float | None) -> None:
        """The device's bandwidth estimate ``est`` or a server's load factor has moved out
        of the range its plan is believed made for: re-plan, switch if it pays."""
        mbps = st.believed_mbps if est is None else est
        loads = {tier: server.load_factor for tier, server in st.servers}
        ctx = self.ctx
        hw, name = ctx.hardware_of(device), ctx.ap_name(st.ap)
        pricing = ctx.pricing
        state = pricing.replan(self.src, hw, name, mbps, loads)
        self.replans += 1
        # in the state of its last re-plan, the device decided already: it switched to the
        # state's placement, or kept one that this state does not beat by enough
        if state is not st.last and state.labels != st.labels and \
                pricing.cost(self.src, state, state.labels, state.cuts) < \
                pricing.cost(self.src, state, st.labels, st.cuts) * (1 - self.min_gain):
            st.labels, st.cuts = state.labels, dict(state.cuts)
            st.work = pricing.work(self.src, hw, name, state.labels, cuts=state.cuts,
                                   cluster=self.cluster)
            self.switches += 1
            if self.switch_s > 0:
                ctx.occupy_device(device, self.switch_s)
        # keep the plan, believed at the new bandwidth, so the check does not repeat forever
        st.last = state
        st.believe(mbps, loads)
