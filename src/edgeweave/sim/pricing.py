"""What a request asks of each tier and hop, from the plan's own profile and cost model.

The simulator never prices anything itself. An application's Plan JSON carries its profile
(with the host measurements it was predicted from), so the same model on another device, edge
or link is `profile.retarget` onto that tier path; a placement's per-tier compute and per-hop
bytes are `CostModel.evaluate`; a new placement is `plan.plan`, and a re-plan for a slower link
or a busier edge is the planner on `Profile.with_link` / `Profile.with_load`, as the runtime's
adaptive client does. The simulator then makes those milliseconds and bytes wait in its queues.

A placement becomes a :class:`Work`: compute at full speed per tier and bytes per hop, with an
integer id the engine indexes. Everything is cached: a campus has a few dozen (application,
hardware, access point) combinations and the planner runs once per combination and per
quantised (bandwidth, load) state, not per request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeweave.errors import EdgeWeaveError, PlanError
from edgeweave.plan import Plan, plan
from edgeweave.plan.costs import CostModel
from edgeweave.plan.modes import base_forbid, mode_of
from edgeweave.plan.planner import Constraints, optimise
from edgeweave.profile import Profile, retarget
from edgeweave.sim.scenario import AccessPoint, Application, Scenario
from edgeweave.sim.world import edge_cloud
from edgeweave.topology import Link, Node, TierPath

#: re-plans are cached on a geometric grid of bandwidth and load: states within these ratios
#: share a plan (the grid of the runtime's own triggers: it re-plans on a 10% bandwidth or a
#: 20% load move), so the planner runs once per grid cell, not once per device
MBPS_STEP = 1.1
LOAD_STEP = 1.2


@dataclass(frozen=True)
class Work:
    """One placement on one (device, edge, cloud) path: milliseconds of compute at full speed
    on each tier, bytes up and down each hop, and how many hops each direction crosses."""

    id: int
    mode: str
    tiers: tuple[str, ...]
    compute_ms: tuple[float, ...]  # per tier, in `tiers` order
    up_bytes: tuple[float, ...]  # per hop
    down_bytes: tuple[float, ...]
    up_hops: int  # hops crossed upward (the highest tier used)
    down_hops: int  # hops the outputs come back down
    predicted_ms: float  # the cost model's unloaded latency on the nominal links
    labels: tuple[int, ...]

    @property
    def device_ms(self) -> float:
        return self.compute_ms[0]


@dataclass(frozen=True)
class Replan:
    """A re-plan's state (its cache key and the loaded profile it priced) and its choice."""

    key: tuple[Any, ...]
    profile: Profile
    cm: CostModel
    labels: tuple[int, ...]
    cuts: dict[str, str]


def _quantise(x: float, step: float) -> float:
    return step ** round(math.log(max(x, 1e-9)) / math.log(step))


def _same_costs(a: Profile, b: Profile) -> bool:
    """True when two profiles price every placement identically (same tiers, latencies, links)."""
    if a.tiers != b.tiers or set(a.links) != set(b.links):
        return False
    lat = CostModel(a).lat, CostModel(b).lat
    links = all(math.isclose(a.links[h].mbps, b.links[h].mbps, rel_tol=1e-9)
                and math.isclose(a.links[h].rtt_ms, b.links[h].rtt_ms, rel_tol=1e-9)
                for h in a.links)
    return links and lat[0].shape == lat[1].shape and bool(np.allclose(*lat, rtol=1e-9))


class Pricing:
    """Routes (placements priced as :class:`Work`) for every combination a scenario needs."""

    def __init__(self, scn: Scenario) -> None:
        self.scn = scn
        self.works: list[Work] = []
        self._work_ids: dict[tuple[Any, ...], int] = {}
        self._profiles: dict[tuple[Any, ...], Profile] = {}
        self._plans: dict[tuple[Any, ...], Plan] = {}
        self._replans: dict[tuple[Any, ...], Replan] = {}
        self._costs: dict[tuple[Any, ...], float] = {}
        self._apps = [self._app_profile(a) for a in scn.applications]
        self._json = [a.plan for a in scn.applications]
        self._ap = {ap.name: ap for ap in scn.access_points}
        self._edge_keys: dict[str, tuple[Any, ...]] = {}
        self.replans = 0
        self.notes: list[str] = []

    # ---- profiles ---------------------------------------------------------------------

    @staticmethod
    def _app_profile(app: Application) -> Profile:
        """The plan's profile (a Plan is its profile plus the choice), with the input's wire
        size replaced when the application gives one."""
        plan_only = set(Plan.model_fields) - set(Profile.model_fields)
        prof = Profile.model_validate(app.plan.model_dump(exclude=plan_only))
        if app.input_bytes is None:
            return prof
        names = set(prof.inputs) or {n.name for n in prof.nodes if n.op == "placeholder"}
        nodes = [n.model_copy(update={"out_bytes": app.input_bytes}) if n.name in names else n
                 for n in prof.nodes]
        return prof.model_copy(update={"nodes": nodes, "input_bytes": app.input_bytes})

    def path(self, hardware: str, ap: AccessPoint, edge: str) -> TierPath:
        """The device -> edge -> cloud chain a device of ``hardware`` at ``ap`` runs on, with
        its stage on ``edge`` (the access point's own edge, or another over the MAN)."""
        device = Node(name=f"device:{hardware}", tier="device",
                      hardware=self.scn.hardware(hardware))
        edge_node = self.scn.fleet.node(edge)
        radio = Link.model_validate({"from": device.name, "to": edge, "mbps": ap.uplink_mbps,
                                     "rtt_ms": ap.rtt_ms})
        nodes, links = [device, edge_node], [radio]
        cloud = edge_cloud(self.scn.fleet, edge)
        if cloud is not None:
            nodes.append(cloud[0])
            links.append(cloud[1])
        return TierPath(nodes=nodes, links=links)

    def _edge_key(self, edge: str) -> tuple[Any, ...]:
        """What prices an edge: its hardware and its cloud's hardware and link (edges that
        agree on these share plans and work)."""
        got = self._edge_keys.get(edge)
        if got is None:
            cloud = edge_cloud(self.scn.fleet, edge)
            got = self._edge_keys[edge] = (
                self.scn.fleet.node(edge).hardware,
                None if cloud is None else (cloud[0].hardware, cloud[1].mbps, cloud[1].rtt_ms))
        return got

    def path_key(self, app: int, hardware: str, ap: str, edge: str | None = None,
                 mbps: bool = True) -> tuple[Any, ...]:
        """Everything the price of a request depends on, so equal paths share one cache entry:
        the application, the device's hardware, the access point's link, the edge's pricing.
        ``mbps=False`` leaves out the nominal rate (a re-plan sets its own)."""
        point = self._ap[ap]
        rate = point.uplink_mbps if mbps else None
        return (app, hardware, rate, point.rtt_ms, self._edge_key(edge or point.edge))

    def profile(self, app: int, hardware: str, ap: str, edge: str | None = None) -> Profile:
        """The application's model priced for this device, access point and edge."""
        point = self._ap[ap]
        edge = edge or point.edge
        key = self.path_key(app, hardware, ap, edge)
        prof = self._profiles.get(key)
        if prof is None:
            base = self._apps[app]
            try:
                prof = retarget(base, self.path(hardware, point, edge), self.scn.fleet.name)
            except EdgeWeaveError as e:
                if "no host measurements" not in str(e):
                    raise
                prof = base  # a plan without host figures can only be replayed as it is
                note = (f"application {self.scn.applications[app].name!r}: its plan has no "
                        "host measurements, so every device is priced as the plan's device")
                if note not in self.notes:
                    self.notes.append(note)
            self._profiles[key] = prof
        return prof

    # ---- placements -> work ---------------------------------------------------------------

    def work(self, app: int, hardware: str, ap: str, labels: tuple[int, ...],
             edge: str | None = None, cuts: dict[str, str] | None = None) -> Work:
        """The :class:`Work` of placement ``labels`` (tier index per node) on this path, its
        cuts encoded with ``cuts`` (hop -> codec; default: the application plan's)."""
        cuts = self._json[app].cuts if cuts is None else cuts
        key = (self.path_key(app, hardware, ap, edge), labels,
               tuple(sorted(cuts.items())))
        wid = self._work_ids.get(key)
        if wid is not None:
            return self.works[wid]
        prof = self.profile(app, hardware, ap, edge)
        cm = CostModel(prof, cuts=cuts)
        bd = cm.evaluate(labels)
        out = [labels[cm.index[o]] for o in prof.outputs]
        w = Work(id=len(self.works), mode=mode_of(cm, np.array(labels)),
                 tiers=tuple(prof.tiers), compute_ms=tuple(bd.tier_compute_ms),
                 up_bytes=tuple(float(b) for b in bd.up_bytes),
                 down_bytes=tuple(float(b) for b in bd.down_bytes),
                 up_hops=max(labels), down_hops=max(out), predicted_ms=bd.total_ms,
                 labels=labels)
        self.works.append(w)
        self._work_ids[key] = w.id
        return w

    @staticmethod
    def labels(prof: Profile, placement: dict[str, str]) -> tuple[int, ...]:
        """A placement (node -> tier) as tier indices in the profile's node order."""
        rank = {t: i for i, t in enumerate(prof.tiers)}
        try:
            return tuple(rank[placement[n.name]] for n in prof.nodes)
        except KeyError as e:
            raise PlanError(f"placement: node or tier {e.args[0]!r} is not in the profile"
                            ) from None

    def planned(self, app: int, hardware: str, ap: str) -> Plan:
        """The plan this device starts with: the application's Plan JSON itself when the
        device, link and servers are the ones it was made for (a replay), else the planner's
        plan for them, under the same objective and constraints."""
        key = ("initial", *self.path_key(app, hardware, ap))
        got = self._plans.get(key)
        if got is None:
            prof = self.profile(app, hardware, ap)
            base = self._json[app]
            if _same_costs(prof, self._apps[app]):
                got = base
            elif not any(v is not None for v in base.constraints.values()):
                got = self._full_plan(app, hardware, ap)  # the same planner call
            else:
                got = self._plan(prof, base, constrained=True)
            self._plans[key] = got
        return got

    def _plan(self, prof: Profile, base: Plan, constrained: bool) -> Plan:
        self.replans += 1
        try:
            if constrained:
                c = base.constraints
                return plan(prof, base.objective, c.get("slo_ms"), c.get("device_mem_mb"))
            return plan(prof, base.objective)
        except PlanError:
            if not constrained:
                raise
            return plan(prof, base.objective)  # no placement meets them here: the fastest

    def mode_labels(self, app: int, hardware: str, ap: str, mode: str) -> tuple[int, ...] | None:
        """The best placement of one inference mode (device-only, edge-only, cloud-only, ...)
        on this path, from the planner's alternatives; None if the path lacks its tier."""
        p = self._full_plan(app, hardware, ap)
        try:
            alt = p.alternative(mode)
        except PlanError:
            return None
        if not alt.available or alt.placement is None:
            return None
        return self.labels(p, alt.placement)

    def _full_plan(self, app: int, hardware: str, ap: str) -> Plan:
        """A freshly made plan for the path (its alternatives keep their placements in memory,
        which a Plan read from JSON does not)."""
        key = ("full", *self.path_key(app, hardware, ap))
        got = self._plans.get(key)
        if got is None:
            got = self._plans[key] = self._plan(self.profile(app, hardware, ap),
                                                self._json[app], constrained=False)
        return got

    def replan(self, app: int, hardware: str, ap: str, mbps: float,
               loads: dict[str, float]) -> Replan:
        """The planner's choice for the link at ``mbps`` and tiers at ``loads`` (factors), on
        the quantised state grid: the planner's own optimiser (`plan.planner.optimise`, what
        `plan.plan` runs, less the alternatives a re-plan does not need) on
        `Profile.with_link(...).with_load(...)`, with the default codec as the runtime's
        re-plan uses."""
        q_mbps = _quantise(mbps, MBPS_STEP)
        q_loads = tuple((t, _quantise(k, LOAD_STEP)) for t, k in sorted(loads.items()))
        key = (self.path_key(app, hardware, ap, mbps=False), q_mbps, q_loads)
        got = self._replans.get(key)
        if got is None:
            prof = self.profile(app, hardware, ap)
            loaded = prof.with_link(prof.hop_names()[0], mbps=q_mbps).with_load(
                {t: k for t, k in q_loads if t in prof.tiers})
            cm = CostModel(loaded)
            sol = optimise(cm, self._json[app].objective, base_forbid(cm), Constraints())
            got = self._replans[key] = Replan(key, loaded, cm, tuple(int(x) for x in sol.labels),
                                              dict(cm.cuts))
            self.replans += 1
        return got

    def cost(self, app: int, state: Replan, labels: tuple[int, ...],
             cuts: dict[str, str]) -> float:
        """What placement ``labels`` with ``cuts`` costs in re-plan ``state`` by the
        application's objective (the runtime client's `_cost`, for its min-gain test)."""
        key = (state.key, labels, tuple(sorted(cuts.items())))
        value = self._costs.get(key)
        if value is None:
            cm = state.cm if cuts == state.cuts else CostModel(state.profile, cuts=cuts)
            value = self._costs[key] = cm.evaluate(labels).value(
                self._json[app].objective)
        return value
