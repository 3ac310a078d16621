"""What a request asks of each tier and hop, from the plan's own profile and cost model.

The simulator never prices anything itself. Every Plan an application holds (`sim.apps`: its
Plan JSON, each Edgent configuration, a selected variant, a partition's plan) carries its
profile with the host measurements it was predicted from, so the same model on another device,
edge or link is `profile.retarget` onto that tier path; a placement's per-tier compute and
per-hop bytes are `CostModel.evaluate`; a placement for a new path, or a re-plan for a slower
link or a busier edge, is the planner's own optimiser (`plan.planner.optimise`, what `plan.plan`
runs) on `Profile.with_link` / `Profile.with_load`, as the runtime's adaptive client does. The
simulator then makes those milliseconds and bytes wait in its queues.

A placement becomes a :class:`Work`: compute at full speed per tier and bytes per hop, with an
integer id the engine indexes. Everything is cached: a campus has a few dozen (plan, hardware,
access point) combinations and the planner runs once per combination and per quantised
(bandwidth, load) state, not per request; a fixed-mode policy asks the optimiser for its one
mode only, not for every alternative.

A partition's plan is replayed as its cluster frame (`sim.cluster`, priced by the partition)
followed by the rest of the model: the plan's placement with the partitioned prefix pinned to
the gateway, whose compute the frame already holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeweave.errors import EdgeWeaveError, PlanError
from edgeweave.plan import Plan
from edgeweave.plan.costs import CostModel
from edgeweave.plan.modes import MODES, base_forbid, mode_forbid, mode_of
from edgeweave.plan.planner import Constraints, optimise
from edgeweave.profile import Profile, retarget
from edgeweave.sim.apps import Source, sources
from edgeweave.sim.cluster import Frame, frame_of
from edgeweave.sim.scenario import AccessPoint, Scenario
from edgeweave.sim.world import edge_cloud
from edgeweave.topology import Link, Node, TierPath

#: re-plans are cached on a geometric grid of bandwidth and load: states within these ratios
#: share a plan (the grid of the runtime's own triggers: it re-plans on a 10% bandwidth or a
#: 20% load move), so the planner runs once per grid cell, not once per device
MBPS_STEP = 1.1
LOAD_STEP = 1.2
_MODES = {m.name: m for m in MODES}


@dataclass(frozen=True)
class Work:
    """One placement on one (device, edge, cloud) path: milliseconds of compute at full speed
    on each tier, bytes up and down each hop, and how many hops each direction crosses;
    ``frame``: the cluster part a partition runs first; ``accuracy``: its answers' (None:
    not recorded)."""

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
    accuracy: float | None = None
    frame: Frame | None = None

    @property
    def device_ms(self) -> float:
        return self.compute_ms[0]


@dataclass(frozen=True)
class Decision:
    """A device's placement of one source: tier index per node, the cut codecs, and the
    first hop's bandwidth it was made for; ``replay``: the Plan JSON's own placement."""

    labels: tuple[int, ...]
    cuts: dict[str, str]
    mbps: float
    replay: bool


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


def _base_profile(plan: Plan, input_bytes: int | None) -> Profile:
    """The plan's profile (a Plan is its profile plus the choice), with the input's wire size
    replaced when the application gives one."""
    plan_only = set(Plan.model_fields) - set(Profile.model_fields)
    prof = Profile.model_validate(plan.model_dump(exclude=plan_only))
    if input_bytes is None:
        return prof
    names = set(prof.inputs) or {n.name for n in prof.nodes if n.op == "placeholder"}
    nodes = [n.model_copy(update={"out_bytes": input_bytes}) if n.name in names else n
             for n in prof.nodes]
    return prof.model_copy(update={"nodes": nodes, "input_bytes": input_bytes})


class Pricing:
    """Routes (placements priced as :class:`Work`) for every combination a scenario needs.

    Every Plan of every application is a *source* (index into ``sources``); an application's
    sources are ``app_sources[app]``, its primary one first (`sim.apps.sources`)."""

    def __init__(self, scn: Scenario) -> None:
        self.scn = scn
        self.works: list[Work] = []
        self.sources: list[Source] = []
        self.app_sources: list[list[int]] = []
        self._base: list[Profile] = []
        self._frames: list[Frame | None] = []
        for app in scn.applications:
            ids = []
            for src in sources(app.plan):
                ids.append(len(self.sources))
                self.sources.append(src)
                self._base.append(_base_profile(src.plan, app.input_bytes))
                part = src.plan.partition
                self._frames.append(None if part is None else frame_of(part))
            self.app_sources.append(ids)
        self._work_ids: dict[tuple[Any, ...], int] = {}
        self._profiles: dict[tuple[Any, ...], Profile] = {}
        self._cms: dict[tuple[Any, ...], CostModel] = {}
        self._decisions: dict[tuple[Any, ...], Decision] = {}
        self._modes: dict[tuple[Any, ...], tuple[int, ...] | None] = {}
        self._replans: dict[tuple[Any, ...], Replan] = {}
        self._costs: dict[tuple[Any, ...], float] = {}
        self._ap = {ap.name: ap for ap in scn.access_points}
        self._edge_keys: dict[str, int] = {}  # edge -> the number of what prices it
        self._edge_ids: dict[tuple[Any, ...], int] = {}
        self.replans = 0  # planner (optimiser) calls
        self.notes: list[str] = []

    def primary(self, app: int) -> int:
        return self.app_sources[app][0]

    def frame(self, src: int) -> Frame | None:
        return self._frames[src]

    # ---- profiles ---------------------------------------------------------------------

    def path(self, hardware: str, ap: AccessPoint, edge: str) -> TierPath:
        """The device -> edge -> cloud chain a device of ``hardware`` at ``ap`` runs on, with
        its stage on ``edge`` (the access point's own edge, or another over the MAN)."""
        device = Node(name=f"device:{hardware}", tier="device",
                      hardware=self.scn.hardware(hardware), edge=None)
        edge_node = self.scn.fleet.node(edge)
        radio = Link.model_validate({"from": device.name, "to": edge, "mbps": ap.uplink_mbps,
                                     "rtt_ms": ap.rtt_ms})
        nodes, links = [device, edge_node], [radio]
        cloud = edge_cloud(self.scn.fleet, edge)
        if cloud is not None:
            nodes.append(cloud[0])
            links.append(cloud[1])
        return TierPath(nodes=nodes, links=links)

    def _edge_key(self, edge: str) -> int:
        """What prices an edge: its hardware and its cloud's hardware and link (edges that
        agree on these share plans and work), numbered: a cache key holding the hardware
        records themselves would hash them field by field on every re-plan check."""
        got = self._edge_keys.get(edge)
        if got is None:
            cloud = edge_cloud(self.scn.fleet, edge)
            what = (self.scn.fleet.node(edge).hardware,
                    None if cloud is None else (cloud[0].hardware, cloud[1].mbps,
                                                cloud[1].rtt_ms))
            got = self._edge_keys[edge] = self._edge_ids.setdefault(what, len(self._edge_ids))
        return got

    def path_key(self, src: int, hardware: str, ap: str, edge: str | None = None,
                 mbps: bool = True) -> tuple[Any, ...]:
        """Everything the price of a request depends on, so equal paths share one cache entry:
        the source, the device's hardware, the access point's link, the edge's pricing.
        ``mbps=False`` leaves out the nominal rate (a re-plan sets its own)."""
        point = self._ap[ap]
        rate = point.uplink_mbps if mbps else None
        return (src, hardware, rate, point.rtt_ms, self._edge_key(edge or point.edge))

    def profile(self, src: int, hardware: str, ap: str, edge: str | None = None) -> Profile:
        """The source's model priced for this device, access point and edge."""
        point = self._ap[ap]
        edge = edge or point.edge
        key = self.path_key(src, hardware, ap, edge)
        prof = self._profiles.get(key)
        if prof is None:
            base = self._base[src]
            try:
                prof = retarget(base, self.path(hardware, point, edge), self.scn.fleet.name)
            except EdgeWeaveError as e:
                if "no host measurements" not in str(e):
                    raise
                prof = base  # a plan without host figures can only be replayed as it is
                note = (f"{self.sources[src].plan.model}: its plan has no host measurements, "
                        "so every device is priced as the plan's device")
                if note not in self.notes:
                    self.notes.append(note)
            self._profiles[key] = prof
        return prof

    def _cost_model(self, src: int, hardware: str, ap: str, edge: str | None,
                    cuts: dict[str, str]) -> CostModel:
        key = (self.path_key(src, hardware, ap, edge), tuple(sorted(cuts.items())))
        cm = self._cms.get(key)
        if cm is None:
            cm = self._cms[key] = CostModel(self.profile(src, hardware, ap, edge), cuts=cuts)
        return cm

    # ---- placements -> work ---------------------------------------------------------------

    def pinned(self, src: int, cm: CostModel) -> list[int]:
        """Node indices a replay keeps on the device: a partition's prefix (the frame runs
        it), none otherwise."""
        part = self.sources[src].plan.partition
        if part is None or self._frames[src] is None:
            return []
        return [cm.index[n] for n in part.prefix_nodes if n in cm.index]

    def work(self, src: int, hardware: str, ap: str, labels: tuple[int, ...],
             edge: str | None = None, cuts: dict[str, str] | None = None,
             cluster: bool = False) -> Work:
        """The :class:`Work` of placement ``labels`` (tier index per node) of source ``src``
        on this path, its cuts encoded with ``cuts`` (hop -> codec; default: the source plan's).
        ``cluster``: a partition's replay (its frame first, the prefix's compute left to it)."""
        source = self.sources[src]
        cuts = source.plan.cuts if cuts is None else cuts
        frame = self._frames[src] if cluster else None
        key = (self.path_key(src, hardware, ap, edge), labels, tuple(sorted(cuts.items())),
               frame is not None)
        wid = self._work_ids.get(key)
        if wid is not None:
            return self.works[wid]
        cm = self._cost_model(src, hardware, ap, edge, cuts)
        bd = cm.evaluate(labels)
        out = [labels[cm.index[o]] for o in cm.profile.outputs]
        compute = list(bd.tier_compute_ms)
        predicted = bd.total_ms
        mode = mode_of(cm, np.array(labels))
        if frame is not None:
            prefix_ms = float(cm.lat[self.pinned(src, cm), 0].sum())
            compute[0] = max(0.0, compute[0] - prefix_ms)
            predicted += frame.predicted_ms - prefix_ms
            mode = f"{source.plan.partition.method} + {mode}"  # type: ignore[union-attr]
        w = Work(id=len(self.works), mode=mode, tiers=tuple(cm.tiers),
                 compute_ms=tuple(compute), up_bytes=tuple(float(b) for b in bd.up_bytes),
                 down_bytes=tuple(float(b) for b in bd.down_bytes), up_hops=max(labels),
                 down_hops=max(out), predicted_ms=predicted, labels=labels,
                 accuracy=source.accuracy, frame=frame)
        self.works.append(w)
        self._work_ids[key] = w.id
        return w

    def combine(self, first: Work, then: Work) -> Work:
        """One request that runs ``first`` on the device and then ``then`` (a big/little
        pair's escalation: the little model, then the big one where it is placed)."""
        key = ("combined", first.id, then.id)
        wid = self._work_ids.get(key)
        if wid is not None:
            return self.works[wid]
        assert first.up_hops == 0, "the first part of a combined request runs on the device"
        w = Work(id=len(self.works), mode=f"{first.mode} + {then.mode}", tiers=then.tiers,
                 compute_ms=(first.compute_ms[0] + then.compute_ms[0], *then.compute_ms[1:]),
                 up_bytes=then.up_bytes, down_bytes=then.down_bytes, up_hops=then.up_hops,
                 down_hops=then.down_hops, predicted_ms=first.predicted_ms + then.predicted_ms,
                 labels=then.labels, accuracy=then.accuracy, frame=then.frame)
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

    # ---- decisions ----------------------------------------------------------------------

    def _forbid(self, src: int, cm: CostModel, forbid: np.ndarray | None = None) -> np.ndarray:
        forbid = base_forbid(cm) if forbid is None else forbid
        for u in self.pinned(src, cm):
            forbid[u, 1:] = True
        return forbid

    def _optimise(self, src: int, cm: CostModel, constraints: Constraints,
                  forbid: np.ndarray | None = None) -> tuple[int, ...]:
        """The planner's optimiser on ``cm`` (the plan's objective; a partition's prefix
        pinned); without a feasible placement under ``constraints``, the best without them."""
        self.replans += 1
        objective = self.sources[src].plan.objective
        forbid = self._forbid(src, cm, forbid)
        try:
            sol = optimise(cm, objective, forbid, constraints)
        except PlanError:
            if not constraints.any:
                raise
            sol = optimise(cm, objective, forbid, Constraints())
        return tuple(int(x) for x in sol.labels)

    def initial(self, src: int, hardware: str, ap: str) -> Decision:
        """The placement a device starts with: the Plan JSON's own when the device, link and
        servers are the ones it was made for (a replay), else the planner's for them, under
        the plan's objective and constraints (the default codec, as a re-plan uses)."""
        key = self.path_key(src, hardware, ap)
        got = self._decisions.get(key)
        if got is None:
            base = self.sources[src].plan
            prof = self.profile(src, hardware, ap)
            hop = prof.hop_names()[0]
            if _same_costs(prof, self._base[src]):
                got = Decision(self.labels(base, base.placement), dict(base.cuts),
                               base.links[hop].mbps, True)
            else:
                c = base.constraints
                mem = c.get("device_mem_mb")
                cons = Constraints(c.get("slo_ms"), None if mem is None else mem * 2**20)
                cm = self._cost_model(src, hardware, ap, None, {})
                got = Decision(self._optimise(src, cm, cons), dict(cm.cuts),
                               prof.links[hop].mbps, False)
            self._decisions[key] = got
        return got

    def mode_labels(self, src: int, hardware: str, ap: str, mode: str
                    ) -> tuple[int, ...] | None:
        """The best placement of one inference mode (device-only, edge-only, cloud-only, ...)
        on this path (the planner's alternative for that mode); None if the path lacks its
        tier."""
        key = (self.path_key(src, hardware, ap), mode)
        if key in self._modes:
            return self._modes[key]
        cm = self._cost_model(src, hardware, ap, None, {})
        forbid = mode_forbid(cm, _MODES[mode])
        got = None
        if forbid is not None:
            self.replans += 1
            try:
                sol = optimise(cm, self.sources[src].plan.objective, forbid, Constraints())
                got = tuple(int(x) for x in sol.labels)
            except PlanError:
                got = None
        self._modes[key] = got
        return got

    def replan(self, src: int, hardware: str, ap: str, mbps: float,
               loads: dict[str, float]) -> Replan:
        """The planner's choice for the link at ``mbps`` and tiers at ``loads`` (factors), on
        the quantised state grid: the optimiser on `Profile.with_link(...).with_load(...)`,
        with the default codec as the runtime's re-plan uses."""
        q_mbps = _quantise(mbps, MBPS_STEP)
        q_loads = tuple((t, _quantise(k, LOAD_STEP)) for t, k in sorted(loads.items()))
        key = (self.path_key(src, hardware, ap, mbps=False), q_mbps, q_loads)
        got = self._replans.get(key)
        if got is None:
            prof = self.profile(src, hardware, ap)
            loaded = prof.with_link(prof.hop_names()[0], mbps=q_mbps).with_load(
                {t: k for t, k in q_loads if t in prof.tiers})
            cm = CostModel(loaded)
            labels = self._optimise(src, cm, Constraints())
            got = self._replans[key] = Replan(key, loaded, cm, labels, dict(cm.cuts))
        return got

    def cost(self, src: int, state: Replan, labels: tuple[int, ...],
             cuts: dict[str, str]) -> float:
        """What placement ``labels`` with ``cuts`` costs in re-plan ``state`` by the source
        plan's objective (the runtime client's `_cost`, for its min-gain test)."""
        key = (state.key, labels, tuple(sorted(cuts.items())))
        value = self._costs.get(key)
        if value is None:
            cm = state.cm if cuts == state.cuts else CostModel(state.profile, cuts=cuts)
            value = self._costs[key] = cm.evaluate(labels).value(
                self.sources[src].plan.objective)
        return value
