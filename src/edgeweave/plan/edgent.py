"""Edgent's static mode: choose the exit point and the device/edge cut together.

Edgent (Li, Zhou & Chen, "Edge Intelligence: On-Demand DNN Inference with Device-Edge Synergy",
2018; summarised in Zhou et al., Proc. IEEE 2019, Sec. VI) right-sizes a branchy network: exit
*k* is the sub-model "backbone prefix up to exit k, then head k", and every sample leaves there,
so its accuracy is exit k's measured accuracy. Each such chain is split once between the device
(operators ``[0, cut)``) and the edge server (the rest); ``cut = 0`` is edge-only (the device only
uploads its input) and ``cut = n_ops`` is device-only. Edgent maximises accuracy subject to the
predicted latency meeting the requirement, the latency coming from per-layer regression models
(the profiler's). Ties in accuracy go to the lower latency.

Every (exit, cut) pair is priced with :class:`~edgeweave.plan.costs.CostModel`, the one cost
model the other planners use, so an Edgent choice and a Neurosurgeon plan of the same chain at
the same bandwidth agree to the last bit. The number of pairs is sum_k (n_ops_k + 1), a few
hundred at most, so pricing them all is both exact and cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from edgeweave import formats
from edgeweave.errors import PlanError
from edgeweave.plan.costs import CostModel
from edgeweave.plan.modes import mode_of
from edgeweave.plan.record import Plan, predicted_of
from edgeweave.profile.schema import Profile

#: Relative slack on the latency requirement, so an option priced at exactly the requirement
#: is not lost to float rounding (the same slack :mod:`edgeweave.plan.planner` uses).
SLO_SLACK = 1e-9


@dataclass(frozen=True)
class ExitBranch:
    """One exit of a branchy model as Edgent sees it: the chain ``prefix + head`` as a profile
    (one input, one output) and the accuracy of answering every sample at this exit."""

    exit: int
    accuracy: float
    profile: Profile

    def input_indices(self) -> list[int]:
        names = [n.name for n in self.profile.nodes]
        given = [names.index(i) for i in self.profile.inputs if i in names]
        return given or [i for i, n in enumerate(self.profile.nodes) if n.op == "placeholder"]


@dataclass(frozen=True)
class EdgentOption:
    """One (exit, cut) pair and what it is predicted to cost at one bandwidth."""

    exit: int
    cut: int  # operators run on the device, in chain order
    n_ops: int
    split_after: str | None  # last operator on the device (None: edge-only)
    accuracy: float
    latency_ms: float
    device_ms: float
    edge_ms: float
    transfer_ms: float
    up_bytes: int
    down_bytes: int

    @property
    def where(self) -> str:
        if self.cut == 0:
            return "edge-only"
        if self.cut == self.n_ops:
            return "device-only"
        return f"split after {self.split_after}"

    @property
    def key(self) -> tuple[int, int]:
        return (self.exit, self.cut)

    def label(self) -> str:
        return f"exit {self.exit}, cut {self.cut}/{self.n_ops} ({self.where})"

    def to_json(self) -> dict:
        return {**asdict(self), "where": self.where}


#: what an Edgent record calls itself in its JSON (the simulator and the report read it)
KIND = "edgeweave.edgent"


@dataclass(frozen=True)
class EdgentChoice:
    """The record of one static decision: every option priced, and the one chosen, with the
    chosen (exit, cut) as the Plan the runtime executes and the simulator replays."""

    slo_ms: float
    mbps: float
    rtt_ms: float
    options: list[EdgentOption]
    chosen: EdgentOption
    plan: Plan | None = None

    def feasible(self) -> list[EdgentOption]:
        return [o for o in self.options if meets(o, self.slo_ms)]

    def to_json(self) -> dict:
        doc = {"kind": KIND, formats.FIELD: formats.EDGENT,
               "slo_ms": self.slo_ms, "mbps": self.mbps, "rtt_ms": self.rtt_ms,
               "chosen": self.chosen.to_json(),
               "options": [{**o.to_json(), "meets_slo": meets(o, self.slo_ms)}
                           for o in self.options]}
        if self.plan is not None:
            doc["plan"] = self.plan.to_json()
        return doc


def meets(option: EdgentOption, slo_ms: float) -> bool:
    return option.latency_ms <= slo_ms * (1 + SLO_SLACK)


def first_hop(profile: Profile) -> str:
    hops = profile.hop_names()
    if not hops:
        raise PlanError(f"profile of {profile.model}: Edgent needs a device and an edge tier, "
                        f"got tiers {profile.tiers}")
    return hops[0]


def chain_order(cm: CostModel, inputs: Sequence[int], where: str) -> list[int]:
    """The operators of a chain profile in execution order; PlanError if it branches."""
    if not cm.is_chain():
        raise PlanError(f"{where}: Edgent cuts a chain (prefix + head) once, but this profile "
                        "branches; give one chain profile per exit")
    return [u for u in cm.order if u not in inputs]


def cut_labels(cm: CostModel, ops: Sequence[int]) -> np.ndarray:
    """Row ``cut`` places ``ops[:cut]`` (and the input) on the device, the rest on the edge."""
    labels = np.zeros((len(ops) + 1, cm.n), dtype=int)
    for cut in range(len(ops) + 1):
        labels[cut, list(ops[cut:])] = 1
    return labels


def price_branch(branch: ExitBranch, mbps: float | None = None) -> list[EdgentOption]:
    """Every cut of one exit's chain, priced by the cost model at ``mbps`` on the first hop
    (the profile's own bandwidth when None)."""
    prof = branch.profile
    hop = first_hop(prof)
    if mbps is not None:
        prof = prof.with_link(hop, mbps=mbps)
    cm = CostModel(prof)
    ops = chain_order(cm, branch.input_indices(), f"exit {branch.exit} ({prof.model})")
    n = len(ops)
    labels = cut_labels(cm, ops)
    ev = cm.evaluate_many(labels)
    return [
        EdgentOption(
            exit=branch.exit, cut=cut, n_ops=n,
            split_after=cm.names[ops[cut - 1]] if cut else None,
            accuracy=float(branch.accuracy),
            latency_ms=float(ev.total_ms[cut]),
            device_ms=float(ev.tier_compute_ms[cut, 0]),
            edge_ms=float(ev.tier_compute_ms[cut, 1]),
            transfer_ms=float(ev.hop_up_ms[cut, 0] + ev.hop_down_ms[cut, 0]),
            up_bytes=int(ev.up_bytes[cut, 0]),
            down_bytes=int(ev.down_bytes[cut, 0]),
        )
        for cut in range(n + 1)
    ]


def price_all(branches: Sequence[ExitBranch], mbps: float | None = None) -> list[EdgentOption]:
    """Every (exit, cut) pair of every branch, exits in order."""
    if not branches:
        raise PlanError("branches: Edgent needs at least one exit branch")
    return [o for b in branches for o in price_branch(b, mbps)]


def rank_key(option: EdgentOption) -> tuple[float, float, int, int]:
    """Edgent's order of preference: accuracy first, then latency (ties broken by exit and
    cut so the choice is deterministic)."""
    return (-option.accuracy, option.latency_ms, option.exit, option.cut)


def choose(options: Sequence[EdgentOption], slo_ms: float, mbps: float | None = None
           ) -> EdgentOption:
    """The most accurate option meeting ``slo_ms``; PlanError naming the fastest otherwise."""
    if not options:
        raise PlanError("options: nothing to choose from (no exit branch was priced)")
    feasible = [o for o in options if meets(o, slo_ms)]
    if not feasible:
        fastest = min(options, key=lambda o: (o.latency_ms, -o.accuracy))
        at = f" at {mbps:g} Mbit/s" if mbps is not None else ""
        raise PlanError(
            f"latency requirement {slo_ms:g} ms cannot be met{at}: the fastest option is "
            f"{fastest.label()} at {fastest.latency_ms:.3f} ms predicted "
            f"(accuracy {100 * fastest.accuracy:.1f}%); raise --slo-ms to at least that")
    return min(feasible, key=rank_key)


def plan_edgent(branches: Sequence[ExitBranch], slo_ms: float, mbps: float | None = None
           ) -> EdgentChoice:
    """Static Edgent: price every (exit, cut) at ``mbps`` and keep the most accurate option
    within ``slo_ms`` (see module doc). Raises PlanError when none meets it."""
    if not slo_ms > 0:
        raise PlanError(f"slo_ms: the latency requirement must be > 0 ms, got {slo_ms}")
    if mbps is not None and not mbps > 0:
        raise PlanError(f"mbps: bandwidth must be > 0 Mbit/s, got {mbps}")
    options = price_all(branches, mbps)
    prof = branches[0].profile
    link = prof.links[first_hop(prof)]
    link = link if mbps is None else link.model_copy(update={"mbps": float(mbps)})
    chosen = choose(options, slo_ms, link.mbps)
    branch = next(b for b in branches if b.exit == chosen.exit)
    return EdgentChoice(slo_ms=float(slo_ms), mbps=float(link.mbps), rtt_ms=float(link.rtt_ms),
                        options=options, chosen=chosen,
                        plan=option_plan(branch, chosen, link.mbps, slo_ms))


def branches_from_profile(profile: Profile, accuracies: Sequence[float]) -> list[ExitBranch]:
    """Split the profile of a whole branchy model (one output per exit, early exits first, as
    :class:`~edgeweave.adapt.exits.BranchyNet` returns them) into one chain profile per exit:
    the output's ancestors. One profiling run (one regression fit) then serves every exit."""
    outputs = profile.outputs
    if len(accuracies) != len(outputs):
        raise PlanError(f"accuracies: expected {len(outputs)} (one per exit output of "
                        f"{profile.model}), got {len(accuracies)}")
    producers: dict[str, list[str]] = {n.name: [] for n in profile.nodes}
    for a, b in profile.edges:
        producers[b].append(a)
    branches = []
    for k, (out, acc) in enumerate(zip(outputs, accuracies, strict=True)):
        keep, stack = set(), [out]
        while stack:
            u = stack.pop()
            if u not in keep:
                keep.add(u)
                stack += producers[u]
        sub = profile.model_copy(update={
            "model": f"{profile.model}@exit{k}",
            "nodes": [n for n in profile.nodes if n.name in keep],
            "edges": [e for e in profile.edges if e[0] in keep and e[1] in keep],
            "output": out,
            "inputs": [i for i in profile.inputs if i in keep],
        })
        branches.append(ExitBranch(exit=k, accuracy=float(acc), profile=sub.check()))
    return branches


def option_plan(branch: ExitBranch, option: EdgentOption, mbps: float | None = None,
                slo_ms: float | None = None) -> Plan:
    """The chosen (exit, cut) as an ordinary :class:`Plan` of the exit's chain profile, so the
    runtime executes an Edgent decision like any other plan (on the exit's graph)."""
    if option.exit != branch.exit:
        raise PlanError(f"option is for exit {option.exit}, branch is exit {branch.exit}")
    prof = branch.profile
    if mbps is not None:
        prof = prof.with_link(first_hop(prof), mbps=mbps)
    cm = CostModel(prof)
    ops = chain_order(cm, branch.input_indices(), f"exit {branch.exit} ({prof.model})")
    if not 0 <= option.cut <= len(ops):
        raise PlanError(f"cut: expected 0..{len(ops)} for exit {branch.exit}, got {option.cut}")
    labels = cut_labels(cm, ops)[option.cut]
    return Plan(
        **prof.model_dump(), objective="latency", placement=cm.placement_of(labels),
        cuts=cm.cuts, predicted=predicted_of(cm.evaluate(labels), cm.tiers, prof.hop_names()),
        alternatives=[], exact=True, mode=mode_of(cm, labels), algorithm="edgent",
        constraints={"slo_ms": slo_ms, "device_mem_mb": None}, profile_digest=prof.digest())
