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

Each candidate's own placement minimises the objective under the constraints
(:func:`edgeweave.plan.within.plan_within`).

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from edgeweave import formats
from edgeweave.errors import PlanError
from edgeweave.plan.planner import plan
from edgeweave.plan.record import Plan
from edgeweave.plan.within import (
    TOL,
    check_objective,
    device_bytes,
    device_only,
    energy_j,
    plan_within,
    total_ms,
)
from edgeweave.profile.schema import Profile

#: what a selection record calls itself in its JSON (the simulator reads it)
KIND = "edgeweave.selection"
#: What a latency SLO bounds for a big/little pair: its mean or its worst-case latency.
SLO_STATS = ("mean", "worst")
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
        return _Priced(total_ms(p), total_ms(p), energy_j(p), device_bytes(p), p.mode,
                       {"model": p.placement}, p.exact, {"model": p})
    try:
        lp = plan(device_only(c.little), objective, None, lim.mem_mb)
    except PlanError:
        need = sum(n.param_bytes for n in c.little.nodes) / _MIB
        raise PlanError(f"{c.name}: the little model alone needs {need:.4g} MiB on the device, "
                        f"over the device memory limit {lim.mem_mb:g} MiB") from None
    l_ms, l_j, l_bytes = total_ms(lp), energy_j(lp), device_bytes(lp)
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
    b_ms, b_j = total_ms(bp), energy_j(bp)
    return _Priced(l_ms + r * b_ms, l_ms + b_ms, l_j + r * b_j, l_bytes + device_bytes(bp),
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
    check_objective(objective)
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
            alone["slo"].append(fast_ms <= slo_ms * (1 + TOL))
            if not alone["slo"][-1]:
                why.append(f"latency SLO {slo_ms:g} ms: fastest {fast_ms:.4g} ms")
        if energy_budget_j is not None:
            alone["energy"].append(frugal.energy_j <= energy_budget_j * (1 + TOL))
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
