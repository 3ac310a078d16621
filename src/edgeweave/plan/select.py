"""Model selection (MCDNN, DeepDecision): choose a model variant AND where it runs.

Each candidate is a model variant (fp32, int8, pruned, distilled, ...) with its accuracy,
measured on validation data, and its :class:`~edgeweave.profile.Profile` on the fleet; or a
big/little pair (:mod:`edgeweave.adapt.biglittle`). Every candidate is placed by the planner
(:func:`edgeweave.plan.planner.plan`; nothing here re-implements the cost model), then:

* without ``min_accuracy``: the most accurate candidate that meets the latency SLO, the
  device energy budget and the device memory limit (those given) wins; ties go to the lower
  objective (latency or device energy), then to the lower latency;
* with ``min_accuracy``: the candidate with the lowest objective among those at least that
  accurate and meeting the other constraints wins; ties go to the more accurate.

Each candidate's own placement minimises the objective under the constraints. The planner
takes a latency SLO and a memory limit directly; a device energy budget is met by asking the
planner for the least-energy placement under those (the budget is infeasible if even that
breaks it) and, when the objective is latency, by bisecting the SLO handed to the
least-energy planner: the smallest SLO under which the least-energy placement fits the budget
is the lowest latency any placement within the budget achieves.

A big/little pair runs its little model on the device (Park et al.) and its big model where
the planner puts it. With escalation rate ``r``: mean latency = little + r x big (the big
model's planned latency includes sending the input up and the answer down when it is off the
device), worst case = little + big, device energy = little + r x big, device memory = little
+ big's device-resident part. Because these are monotone in the big model's cost, the pair's
constraints become constraints on the big model's placement (SLO ``(slo - little) / r`` for a
mean SLO, ``slo - little`` for a worst-case one), which the planner then solves exactly.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from edgeweave import formats
from edgeweave.errors import PlanError
from edgeweave.plan.costs import Breakdown, CostModel
from edgeweave.plan.planner import plan
from edgeweave.plan.record import Plan
from edgeweave.profile.schema import Profile

OBJECTIVES = ("latency", "energy")
#: what a selection record calls itself in its JSON (the simulator reads it)
KIND = "edgeweave.selection"
#: What a latency SLO bounds for a big/little pair: its mean or its worst-case latency.
SLO_STATS = ("mean", "worst")
_TOL = 1e-9      # relative slack, as the planner's own SLO check
_BISECT = 1e-7   # relative width at which the energy-budget bisection stops
_MIB = 2**20


# --------------------------------------------------------------------------------------------
# Candidates and the record
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Candidate:
    """One model variant: validation accuracy in [0, 1] and its profile on the fleet."""

    name: str
    accuracy: float
    profile: Profile
    notes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BigLittleCandidate:
    """A big/little pair: accuracy and escalation rate of the pair at its threshold (both on
    validation data), and the profiles of the little and the big model on the same fleet."""

    name: str
    accuracy: float
    little: Profile
    big: Profile
    escalation_rate: float
    threshold: float | None = None
    mode: str | None = None
    notes: Mapping[str, Any] = field(default_factory=dict)


class Outcome(BaseModel):
    """One candidate as the selector saw it.

    When the candidate is feasible the figures are those of its chosen placement; when it is
    not, they are those of its best placement for the objective ignoring the constraints (what
    it would cost at best), and ``why`` says which constraints it breaks.
    """

    name: str
    kind: str  # "model" or "big-little"
    accuracy: float
    feasible: bool
    why: list[str] = Field(default_factory=list)
    total_ms: float  # mean latency for a big/little pair
    worst_ms: float
    energy_j: float  # the end device's, per inference (mean for a pair)
    device_param_bytes: int
    mode: str
    placements: dict[str, dict[str, str]]  # "model", or "little" and "big" -> node -> tier
    exact: bool
    escalation_rate: float | None = None
    threshold: float | None = None
    notes: dict[str, Any] = Field(default_factory=dict)

    def value(self, objective: str) -> float:
        return self.total_ms if objective == "latency" else self.energy_j


class Selection(BaseModel):
    """Every candidate's outcome, the rule applied and the choice (None when none is feasible,
    in which case :func:`select` raises :class:`SelectionError` carrying this record)."""

    objective: str
    rule: str
    constraints: dict[str, float | str | None]
    chosen: str | None
    outcomes: list[Outcome]
    exact: bool
    plans: dict[str, Plan] = Field(default_factory=dict)  # the choice's: "model" or little/big

    def outcome(self, name: str) -> Outcome:
        for o in self.outcomes:
            if o.name == name:
                return o
        raise PlanError(f"selection has no candidate {name!r}")

    @property
    def chosen_outcome(self) -> Outcome | None:
        return None if self.chosen is None else self.outcome(self.chosen)

    def to_json(self) -> dict[str, Any]:
        """The record as `edgeweave adapt select --json` writes it: the chosen variant's Plans
        (``model``, or the pair's ``little`` and ``big``) ride along, so the runtime and the
        simulator run the choice from this file alone."""
        doc = {"kind": KIND, formats.FIELD: formats.SELECTION,
               **self.model_dump(mode="json", exclude={"plans"})}
        doc["plans"] = {role: p.to_json() for role, p in self.plans.items()}
        return doc


class SelectionError(PlanError):
    """No candidate meets the constraints; ``selection`` holds every candidate's outcome."""

    def __init__(self, message: str, selection: Selection):
        super().__init__(message)
        self.selection = selection


# --------------------------------------------------------------------------------------------
# Placement of one profile under an SLO, a memory limit and an energy budget
# --------------------------------------------------------------------------------------------

def _check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise PlanError(f"--objective: model selection minimises {' or '.join(OBJECTIVES)}, "
                        f"got {objective!r}")


def plan_within(profile: Profile, objective: str = "latency", slo_ms: float | None = None,
                device_mem_mb: float | None = None, energy_budget_j: float | None = None
                ) -> Plan:
    """The planner's best placement for ``objective`` that also keeps the device's energy per
    inference within ``energy_budget_j`` (see the module doc for how); raises PlanError naming
    the budget when no placement meets it. ``exact`` is True when every planner call was."""
    _check_objective(objective)
    if energy_budget_j is not None and not energy_budget_j > 0:
        raise PlanError(f"--energy-mj: the energy budget must be positive, got "
                        f"{energy_budget_j * 1e3:g} mJ")
    best = plan(profile, objective, slo_ms, device_mem_mb)
    if energy_budget_j is None:
        return best
    constraints = {"slo_ms": slo_ms, "device_mem_mb": device_mem_mb,
                   "energy_budget_j": energy_budget_j}
    if _energy(best) <= energy_budget_j * (1 + _TOL):
        return best.model_copy(update={"constraints": constraints})
    frugal = plan(profile, "energy", slo_ms, device_mem_mb)
    if _energy(frugal) > energy_budget_j * (1 + _TOL):
        within = " under the other constraints" if slo_ms or device_mem_mb else ""
        raise PlanError(f"{profile.model}: no placement meets the device energy budget "
                        f"{energy_budget_j * 1e3:g} mJ{within} (least: "
                        f"{_energy(frugal) * 1e3:.4g} mJ)")
    # objective is latency here (for energy, `best` is `frugal`): bisect the SLO
    lo, hi, found = _total(best), _total(frugal), frugal
    exact = best.exact and frugal.exact
    for _ in range(200):
        if hi - lo <= _BISECT * max(hi, 1e-12):
            break
        mid = lo + (hi - lo) / 2
        try:
            trial = plan(profile, "energy", mid, device_mem_mb)
        except PlanError:  # nothing is that fast under the memory limit
            lo = mid
            continue
        exact = exact and trial.exact
        if _energy(trial) <= energy_budget_j * (1 + _TOL):
            found, hi = trial, _total(trial)
        else:
            lo = mid
    return found.model_copy(update={
        "objective": objective,
        "exact": exact,
        "algorithm": f"{found.algorithm}; least energy under a bisected SLO (energy budget)",
        "constraints": constraints,
    })


def device_only(profile: Profile) -> Profile:
    """The profile restricted to its first (device) tier, so the planner keeps everything on
    the device (a little model of a big/little pair)."""
    return profile.model_copy(update={"tiers": list(profile.tiers[:1]), "links": {}})


def _total(p: Plan) -> float:
    return float(p.predicted["total_ms"])


def _energy(p: Plan) -> float:
    return float(p.predicted["energy_j"])


def _device_bytes(p: Plan) -> int:
    return int(p.predicted["device_param_bytes"])


# --------------------------------------------------------------------------------------------
# Pricing one candidate
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Limits:
    slo_ms: float | None = None
    energy_j: float | None = None
    mem_mb: float | None = None
    slo_stat: str = "mean"


@dataclass(frozen=True)
class _Priced:
    total_ms: float
    worst_ms: float
    energy_j: float
    device_param_bytes: int
    mode: str
    placements: dict[str, dict[str, str]]
    exact: bool
    plans: dict[str, Plan]


def _price(c: Candidate | BigLittleCandidate, objective: str, lim: _Limits) -> _Priced:
    """The candidate's best placement under ``lim``; PlanError if it has none."""
    if isinstance(c, Candidate):
        p = plan_within(c.profile, objective, lim.slo_ms, lim.mem_mb, lim.energy_j)
        return _Priced(_total(p), _total(p), _energy(p), _device_bytes(p), p.mode,
                       {"model": p.placement}, p.exact, {"model": p})
    try:
        lp = plan(device_only(c.little), objective, None, lim.mem_mb)
    except PlanError:
        need = sum(n.param_bytes for n in c.little.nodes) / _MIB
        raise PlanError(f"{c.name}: the little model alone needs {need:.4g} MiB on the device, "
                        f"over the device memory limit {lim.mem_mb:g} MiB") from None
    l_ms, l_j, l_bytes = _total(lp), _energy(lp), _device_bytes(lp)
    r = c.escalation_rate
    slo = energy = mem = None
    if lim.slo_ms is not None and (lim.slo_stat == "worst" or r > 0):
        slo = lim.slo_ms - l_ms if lim.slo_stat == "worst" else (lim.slo_ms - l_ms) / r
        if slo <= 0:
            raise PlanError(f"{c.name}: the little model alone takes {l_ms:.4g} ms on the "
                            f"device, the whole latency SLO {lim.slo_ms:g} ms")
    if lim.energy_j is not None and r > 0:
        energy = (lim.energy_j - l_j) / r
        if energy <= 0:
            raise PlanError(f"{c.name}: the little model alone uses {l_j * 1e3:.4g} mJ of the "
                            f"device, the whole energy budget {lim.energy_j * 1e3:g} mJ")
    if lim.mem_mb is not None:
        mem = max(lim.mem_mb - l_bytes / _MIB, 1e-12)  # > 0: the planner wants a positive limit
    try:
        bp = plan_within(c.big, objective, slo, mem, energy)
    except PlanError as e:
        raise PlanError(f"{c.name}: no placement of the big model fits what the little model "
                        f"leaves ({e})") from None
    b_ms, b_j = _total(bp), _energy(bp)
    return _Priced(l_ms + r * b_ms, l_ms + b_ms, l_j + r * b_j, l_bytes + _device_bytes(bp),
                   f"little device-only + big {bp.mode}",
                   {"little": lp.placement, "big": bp.placement}, bp.exact,
                   {"little": lp, "big": bp})


# --------------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------------

def _validate(candidates: Sequence[Candidate | BigLittleCandidate]) -> None:
    if not candidates:
        raise PlanError("model selection needs at least one candidate")
    names = [c.name for c in candidates]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise PlanError(f"candidate names must be unique; repeated: {', '.join(dup)}")
    ref: Profile | None = None
    for c in candidates:
        if not isinstance(c, Candidate | BigLittleCandidate):
            raise PlanError(f"candidate {c!r} is neither a Candidate nor a BigLittleCandidate")
        if not 0.0 <= c.accuracy <= 1.0 or math.isnan(c.accuracy):
            raise PlanError(f"{c.name}: accuracy must be in [0, 1], got {c.accuracy}")
        profiles = [c.profile] if isinstance(c, Candidate) else [c.little, c.big]
        if isinstance(c, BigLittleCandidate) and not 0.0 <= c.escalation_rate <= 1.0:
            raise PlanError(f"{c.name}: escalation_rate must be in [0, 1], "
                            f"got {c.escalation_rate}")
        for p in profiles:
            ref = ref or p
            if list(p.tiers) != list(ref.tiers) or p.links != ref.links:
                raise PlanError(f"{c.name}: profiled on tiers {p.tiers} with links "
                                f"{_links(p)}, but {ref.model} on {ref.tiers} with "
                                f"{_links(ref)}; profile every candidate on the same fleet")


def _links(p: Profile) -> str:
    return ", ".join(f"{h} {lk.mbps:g} Mbit/s {lk.rtt_ms:g} ms" for h, lk in p.links.items())


def check_request(objective: str = "latency", slo_ms: float | None = None,
                  energy_budget_j: float | None = None, device_mem_mb: float | None = None,
                  min_accuracy: float | None = None, slo_stat: str = "mean") -> None:
    """Raise PlanError on a malformed request (what :func:`select` checks before any work), so
    a caller can refuse it before training or profiling anything."""
    _check_objective(objective)
    if slo_stat not in SLO_STATS:
        raise PlanError(f"--slo-stat: must be one of {', '.join(SLO_STATS)}, got {slo_stat!r}")
    for flag, value in (("--slo-ms", slo_ms), ("--device-mem-mb", device_mem_mb)):
        if value is not None and not value > 0:
            raise PlanError(f"{flag}: must be positive, got {value}")
    if energy_budget_j is not None and not energy_budget_j > 0:
        raise PlanError(f"--energy-mj: must be positive, got {energy_budget_j * 1e3:g}")
    if min_accuracy is not None and not 0.0 <= min_accuracy <= 1.0:
        raise PlanError(f"--min-acc: must be in [0, 1], got {min_accuracy}")


def select(
    candidates: Sequence[Candidate | BigLittleCandidate],
    objective: str = "latency",
    slo_ms: float | None = None,
    energy_budget_j: float | None = None,
    device_mem_mb: float | None = None,
    min_accuracy: float | None = None,
    slo_stat: str = "mean",
) -> Selection:
    """Choose a candidate and its placement (see the module doc for the rule); raises
    :class:`SelectionError` naming the tightest constraint when none is feasible.

    ``slo_stat`` says whether the SLO bounds a big/little pair's mean latency (default, as
    MCDNN and DeepDecision budget expected cost) or its worst case (little + big).
    """
    check_request(objective, slo_ms, energy_budget_j, device_mem_mb, min_accuracy, slo_stat)
    _validate(candidates)

    limits = _Limits(slo_ms, energy_budget_j, device_mem_mb, slo_stat)
    alone: dict[str, list[bool]] = {k: [] for k in ("slo", "energy", "mem", "accuracy")}
    fastest: list[float] = []
    least_energy: list[float] = []
    outcomes: list[Outcome] = []
    priced: list[_Priced | None] = []
    for c in candidates:
        fast = _price(c, "latency", _Limits())
        frugal = _price(c, "energy", _Limits())
        fast_ms = fast.worst_ms if slo_stat == "worst" else fast.total_ms
        fastest.append(fast_ms)
        least_energy.append(frugal.energy_j)
        why = []
        if min_accuracy is not None:
            alone["accuracy"].append(c.accuracy >= min_accuracy)
            if c.accuracy < min_accuracy:
                why.append(f"accuracy {c.accuracy:.2%} < minimum {min_accuracy:.2%}")
        if slo_ms is not None:
            alone["slo"].append(fast_ms <= slo_ms * (1 + _TOL))
            if not alone["slo"][-1]:
                why.append(f"latency SLO {slo_ms:g} ms: fastest {fast_ms:.4g} ms")
        if energy_budget_j is not None:
            alone["energy"].append(frugal.energy_j <= energy_budget_j * (1 + _TOL))
            if not alone["energy"][-1]:
                why.append(f"energy budget {energy_budget_j * 1e3:g} mJ: least "
                           f"{frugal.energy_j * 1e3:.4g} mJ")
        if device_mem_mb is not None:
            try:
                _price(c, objective, _Limits(mem_mb=device_mem_mb))
                alone["mem"].append(True)
            except PlanError as e:
                alone["mem"].append(False)
                why.append(f"device memory {device_mem_mb:g} MiB: {e}")
        try:
            got: _Priced | None = _price(c, objective, limits)
        except PlanError as e:
            got = None
            if not why:  # every constraint can be met alone, just not together
                why.append(f"constraints not met together: {e}")
        shown = got or (fast if objective == "latency" else frugal)
        priced.append(got if got is not None and not why else None)
        outcomes.append(Outcome(
            name=c.name, kind="model" if isinstance(c, Candidate) else "big-little",
            accuracy=c.accuracy, feasible=not why, why=why, total_ms=shown.total_ms,
            worst_ms=shown.worst_ms, energy_j=shown.energy_j,
            device_param_bytes=shown.device_param_bytes, mode=shown.mode,
            placements=shown.placements, exact=shown.exact,
            escalation_rate=None if isinstance(c, Candidate) else c.escalation_rate,
            threshold=None if isinstance(c, Candidate) else c.threshold,
            notes=dict(c.notes),
        ))

    rule = ("max-accuracy" if min_accuracy is None else f"min-{objective}")
    constraints: dict[str, float | str | None] = {
        "slo_ms": slo_ms, "slo_stat": slo_stat, "energy_budget_j": energy_budget_j,
        "device_mem_mb": device_mem_mb, "min_accuracy": min_accuracy}
    feasible = [i for i, p in enumerate(priced) if p is not None]
    exact = all(o.exact for o in outcomes)
    if not feasible:
        record = Selection(objective=objective, rule=rule, constraints=constraints, chosen=None,
                           outcomes=outcomes, exact=exact)
        raise SelectionError(_tightest(candidates, alone, fastest, least_energy, limits,
                                       min_accuracy), record)

    def key(i: int) -> tuple[float, ...]:
        o = outcomes[i]
        if min_accuracy is None:
            return (-o.accuracy, o.value(objective), o.total_ms, i)
        return (o.value(objective), -o.accuracy, o.total_ms, i)

    best = min(feasible, key=key)
    chosen = priced[best]
    assert chosen is not None
    return Selection(objective=objective, rule=rule, constraints=constraints,
                     chosen=candidates[best].name, outcomes=outcomes, exact=exact,
                     plans=chosen.plans)


def _tightest(candidates: Sequence[Candidate | BigLittleCandidate],
              alone: dict[str, list[bool]], fastest: list[float], least_energy: list[float],
              lim: _Limits, min_accuracy: float | None) -> str:
    """The error message when nothing is feasible: the constraint the fewest candidates meet
    even on its own (ties: the one the best candidate misses by the widest ratio)."""
    n = len(candidates)
    names = [c.name for c in candidates]
    rows = []  # (met alone by, -miss ratio, label, best)
    if lim.slo_ms is not None:
        i = min(range(n), key=lambda k: fastest[k])
        rows.append((sum(alone["slo"]), -fastest[i] / lim.slo_ms,
                     f"the latency SLO {lim.slo_ms:g} ms ({lim.slo_stat})",
                     f"fastest: {names[i]} at {fastest[i]:.4g} ms"))
    if lim.energy_j is not None:
        i = min(range(n), key=lambda k: least_energy[k])
        rows.append((sum(alone["energy"]), -least_energy[i] / lim.energy_j,
                     f"the device energy budget {lim.energy_j * 1e3:g} mJ",
                     f"least: {names[i]} at {least_energy[i] * 1e3:.4g} mJ"))
    if lim.mem_mb is not None:
        rows.append((sum(alone["mem"]), -1.0, f"the device memory limit {lim.mem_mb:g} MiB",
                     "see each candidate's reason"))
    if min_accuracy is not None:
        i = max(range(n), key=lambda k: candidates[k].accuracy)
        acc = candidates[i].accuracy
        rows.append((sum(alone["accuracy"]), -(min_accuracy / acc if acc > 0 else math.inf),
                     f"the minimum accuracy {min_accuracy:.2%}",
                     f"most accurate: {names[i]} at {acc:.2%}"))
    met, _, label, best = min(rows, key=lambda r: (r[0], r[1]))
    if met == 0:
        return (f"no candidate meets the constraints; the tightest is {label}: none of the {n} "
                f"candidates meets it even alone ({best})")
    return (f"no candidate meets all the constraints together; the tightest is {label}: only "
            f"{met} of the {n} candidates meet it alone ({best})")


# --------------------------------------------------------------------------------------------
# Helpers for big/little reports and for profiling variants consistently
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EscalationCosts:
    """What one big/little inference costs on the fleet, per the planner's cost model:
    the little model on the device, and one escalation to the big model in ``big_mode``."""

    little_ms: float
    little_energy_j: float
    big_mode: str
    big_ms: float          #: the big model's compute
    transfer_ms: float     #: input up and answer down (0 when the big model is on the device)
    big_energy_j: float    #: the device's energy for one escalation
    big_placement: dict[str, str]


def big_little_costs(little: Profile, big: Profile, big_mode: str = "edge-only"
                     ) -> EscalationCosts:
    """Costs for :func:`edgeweave.adapt.biglittle.biglittle_report`: the little model
    device-only, the big one in ``big_mode`` (an inference mode, e.g. ``device-only`` or
    ``edge-only``), each the planner's best placement in that mode, priced by the cost model."""
    lp = plan(device_only(little), "latency")
    alt = plan(big, "latency").alternative(big_mode)
    if not alt.available or alt.placement is None:
        raise PlanError(f"{big.model}: mode {big_mode} is not available ({alt.note})")
    cm = CostModel(big)
    bd: Breakdown = cm.evaluate(cm.labels_of(alt.placement).tolist())
    return EscalationCosts(_total(lp), _energy(lp), big_mode, bd.compute_ms, bd.transfer_ms,
                           bd.energy_j, dict(alt.placement))


def _packed_costs(module: Any, info: Any) -> tuple[int, int]:
    """FLOPs and parameter bytes of a node, counting the packed weights of dynamically
    quantized Linear layers (``torch.ao.nn.quantized.dynamic.Linear``), which the graph's cost
    rules see as parameter-free elementwise ops (their weights are not ``nn.Parameter``s)."""
    import torch

    flops, param_bytes = int(info.flops), int(info.param_bytes)
    if module is None or param_bytes or isinstance(module, torch.nn.Linear) \
            or not hasattr(module, "in_features") or not hasattr(module, "out_features"):
        return flops, param_bytes
    tensors = []
    for attr in ("weight", "bias"):
        value = getattr(module, attr, None)
        if callable(value) and not isinstance(value, torch.nn.Module):
            try:
                value = value()
            except Exception:  # not a packed-weight accessor after all
                value = None
        if isinstance(value, torch.Tensor):
            tensors.append(value)
    if not tensors:
        return flops, param_bytes
    batch = math.prod(info.out_shape[:-1]) if info.out_shape else 1
    out_f, in_f = int(module.out_features), int(module.in_features)
    has_bias = len(tensors) > 1
    return (2 * batch * in_f * out_f + (batch * out_f if has_bias else 0),
            sum(t.numel() * t.element_size() for t in tensors))


def profile_variants(modules: Mapping[str, Any], input_shape: Sequence[int], fleet: Any,
                     device: str | None = None, warmup: int = 1, repeats: int = 5,
                     seed: int = 0) -> dict[str, Profile]:
    """Profile variants of one model (name -> ``nn.Module``) on ``fleet`` so that they compare.

    Each variant is captured and profiled by :func:`edgeweave.profile.profile_graph`; then
    every node's host latency is re-predicted by ONE per-layer-type regression fitted on the
    calibration sweep (measured once, shared) plus all the variants' measured layers, at one
    host speed and one node-to-whole-model scale (the medians over the variants), and the tier
    latencies are recomputed with
    :func:`edgeweave.profile.retarget`. Profiled one by one on a shared host, identical layers
    of two variants can come out 2x apart (the host's load changes between them); with the
    shared regression they get identical predictions and variants differ only by what they
    compute. Packed int8 Linear weights are counted (see :func:`_packed_costs`).
    """
    from edgeweave.graph import capture
    from edgeweave.profile.build import calibration_samples, profile_graph, retarget
    from edgeweave.profile.regression import LatencyModel, Sample

    if not modules:
        raise PlanError("profile_variants: no modules given")
    shape = tuple(int(d) for d in input_shape)
    graphs = {name: capture(m, shape, name) for name, m in modules.items()}
    samples = calibration_samples()
    raw = {name: profile_graph(g, fleet, device, warmup, repeats, "regression", seed,
                               calibration=samples)
           for name, g in graphs.items()}
    samples = list(samples)
    speeds: dict[str, float] = {}
    scales: dict[str, float] = {}
    costs: dict[str, list[tuple[int, int]]] = {}
    for name, g in graphs.items():
        prof = raw[name]
        host = (prof.model_extra or {})["host"]
        speeds[name] = float(host["gflops"])
        scales[name] = float(host.get("whole_model_scale", 1.0))
        subs = dict(g.module.named_modules())
        costs[name] = []
        for info, node in zip(g.nodes, prof.nodes, strict=True):
            flops, pbytes = _packed_costs(subs.get(info.target) if info.kind == "call_module"
                                          else None, info)
            costs[name].append((flops, pbytes))
            if info.kind != "placeholder":
                # the interpreter's node time (before scaling to the whole-model run), at
                # 1 GFLOP/s, as the calibration samples are
                host_ms = float((node.model_extra or {})["host_ms"]) / scales[name]
                samples.append(Sample(info.op, flops, info.in_bytes, info.out_bytes,
                                      host_ms * speeds[name]))
    shared = LatencyModel.fit(samples)
    ref = statistics.median(speeds.values())
    ref_scale = statistics.median(scales.values())
    path = fleet.tier_path(device)
    out = {}
    for name, g in graphs.items():
        prof = raw[name]
        nodes = []
        for info, node, (flops, pbytes) in zip(g.nodes, prof.nodes, costs[name], strict=True):
            pred = 0.0 if info.kind == "placeholder" else \
                shared.predict(info.op, flops, info.in_bytes, info.out_bytes) / ref * ref_scale
            nodes.append(node.model_copy(update={"flops": flops, "param_bytes": pbytes,
                                                 "host_pred_ms": pred}))
        host = dict((prof.model_extra or {})["host"], gflops=ref)
        prof = prof.model_copy(update={
            "nodes": nodes, "host": host, "latency_source": "regression",
            "shared_regression": {"variants": list(graphs), "host_gflops": ref,
                                  "host_gflops_each": speeds, "whole_model_scale": ref_scale,
                                  "whole_model_scale_each": scales},
        })
        out[name] = retarget(prof, path, fleet.name)
    return out
