"""`plan(profile, objective, ...)`: the one entry point; picks the algorithm the graph allows.

  chain graph                      -> exhaustive cut scan (Neurosurgeon): exact for every objective
  DAG, latency or energy           -> min s-t cut (DADS, Ishikawa layering for 3 tiers): exact
  DAG, SLO or device-memory limit  -> exact when the unconstrained optimum already complies;
                                      otherwise Lagrangian min-cuts + order scans, best feasible
                                      candidate, reported exact=false
  DAG, throughput                  -> scan over a topological order + min-cut candidates,
                                      exact=false
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgeweave.errors import PlanError
from edgeweave.plan import mincut
from edgeweave.plan.costs import OBJECTIVES, Breakdown, CostModel
from edgeweave.plan.modes import MODES, base_forbid, mode_forbid, mode_of
from edgeweave.plan.record import Alternative, Plan, predicted_of
from edgeweave.plan.scan import narrow_positions, scan
from edgeweave.profile.schema import Profile

_FULL_SCAN_NODES = 64
_LAMBDAS = np.concatenate([[0.0], np.logspace(-7, 3, 31)])
_MEM_PENALTIES = np.concatenate([[0.0], np.logspace(-12, -3, 10)])


@dataclass(frozen=True)
class Constraints:
    slo_ms: float | None = None
    device_mem_bytes: float | None = None

    def ok(self, bd: Breakdown) -> bool:
        return bool(self.ok_many(np.array([bd.total_ms]), np.array([bd.device_param_bytes]))[0])

    def ok_many(self, total_ms: np.ndarray, device_param_bytes: np.ndarray) -> np.ndarray:
        ok = np.ones(len(total_ms), dtype=bool)
        if self.slo_ms is not None:
            ok &= total_ms <= self.slo_ms * (1 + 1e-9)
        if self.device_mem_bytes is not None:
            ok &= device_param_bytes <= self.device_mem_bytes
        return ok

    @property
    def any(self) -> bool:
        return self.slo_ms is not None or self.device_mem_bytes is not None


@dataclass(frozen=True)
class Solution:
    labels: np.ndarray
    breakdown: Breakdown
    exact: bool
    algorithm: str


def _rank(bd: Breakdown, objective: str) -> tuple[float, float]:
    return (bd.value(objective), bd.total_ms)


def _best(cm: CostModel, candidates: list[np.ndarray], objective: str, cons: Constraints
          ) -> tuple[np.ndarray, Breakdown] | None:
    best: tuple[np.ndarray, Breakdown] | None = None
    for labels in candidates:
        bd = cm.evaluate(labels)
        if cons.ok(bd) and (best is None or _rank(bd, objective) < _rank(best[1], objective)):
            best = (labels, bd)
    return best


def _scan_candidates(cm: CostModel, forbid: np.ndarray, objective: str, cons: Constraints,
                     keep: int = 8) -> list[np.ndarray]:
    """The best few cut tuples along the topological order that meet the constraints. Long
    DAGs are cut only at their narrowest positions, keeping the scan to a few thousand rows
    (chains always get the full, exact scan)."""
    positions = None
    if not cm.is_chain() and cm.n > _FULL_SCAN_NODES:
        positions = narrow_positions(cm, cm.order, _FULL_SCAN_NODES)
    res = scan(cm, forbid=forbid, positions=positions)
    ev = res.costs
    ok = cons.ok_many(ev.total_ms, ev.device_param_bytes)
    rows = np.flatnonzero(ok)
    rows = rows[np.lexsort((ev.total_ms[rows], ev.value(objective)[rows]))][:keep]
    return [res.labels[r] for r in rows]


def _lagrangian_candidates(cm: CostModel, forbid: np.ndarray, objective: str,
                           cons: Constraints) -> list[np.ndarray]:
    base = cm.weights("latency" if objective == "throughput" else objective)
    lat = cm.weights("latency")
    lambdas = _LAMBDAS if (cons.slo_ms is not None and objective == "energy") else [0.0]
    mems = _MEM_PENALTIES if cons.device_mem_bytes is not None else [0.0]
    out = []
    for lam in lambdas:
        for mu in mems:
            w = base + lat.scaled(lam) + cm.device_memory_weights(mu)
            out.append(mincut.solve(cm, w, forbid))
    if objective == "throughput":
        out.append(mincut.solve(cm, cm.weights("energy"), forbid))
    return out


def optimise(cm: CostModel, objective: str, forbid: np.ndarray, cons: Constraints) -> Solution:
    """The best placement under `forbid` and `cons`; raises PlanError if none complies."""
    if cm.is_chain():
        cands = _scan_candidates(cm, forbid, objective, cons, keep=1)
        found = _best(cm, cands, objective, cons)
        algorithm, exact = "chain scan (Neurosurgeon)", True
    elif objective != "throughput":
        labels = mincut.solve(cm, cm.weights(objective), forbid)
        found = _best(cm, [labels], objective, cons)
        algorithm, exact = "min s-t cut (DADS, Ishikawa layering)", True
        if found is None:  # the unconstrained optimum breaks a constraint: search, inexactly
            cands = _lagrangian_candidates(cm, forbid, objective, cons)
            cands += _scan_candidates(cm, forbid, objective, cons)
            found = _best(cm, cands, objective, cons)
            algorithm, exact = "Lagrangian min-cuts + topological scan", False
    else:
        cands = _scan_candidates(cm, forbid, objective, cons)
        cands += _lagrangian_candidates(cm, forbid, objective, cons)
        found = _best(cm, cands, objective, cons)
        algorithm, exact = "topological scan + min-cut candidates", False
    if found is None:
        raise PlanError(_why_infeasible(cm, forbid, cons))
    return Solution(found[0], found[1], exact, algorithm)


def _why_infeasible(cm: CostModel, forbid: np.ndarray, cons: Constraints) -> str:
    fastest = mincut.solve(cm, cm.weights("latency"), forbid)
    bd = cm.evaluate(fastest)
    parts = []
    if cons.slo_ms is not None:
        parts.append(f"latency SLO {cons.slo_ms:g} ms (fastest placement: {bd.total_ms:.1f} ms)")
    if cons.device_mem_bytes is not None:
        parts.append(f"device memory limit {cons.device_mem_bytes / 2**20:g} MiB")
    return f"{cm.profile.model}: no placement meets the " + " and ".join(parts)


def plan(
    profile: Profile,
    objective: str = "latency",
    slo_ms: float | None = None,
    device_mem_mb: float | None = None,
    codecs: Sequence[str] = ("none",),
) -> Plan:
    """Choose where each node runs, and which activation codec each cut uses (JALAD/Ko et al.:
    every per-hop combination of `codecs` is planned and the best kept); compare with every
    inference mode the fleet offers."""
    if objective not in OBJECTIVES:
        raise PlanError(f"--objective: {objective!r} is not one of {', '.join(OBJECTIVES)}")
    if slo_ms is not None and slo_ms <= 0:
        raise PlanError(f"--slo-ms: must be positive, got {slo_ms}")
    if device_mem_mb is not None and device_mem_mb <= 0:
        raise PlanError(f"--device-mem-mb: must be positive, got {device_mem_mb}")
    if not codecs:
        raise PlanError("--codec: give at least one codec")
    cons = Constraints(slo_ms, None if device_mem_mb is None else device_mem_mb * 2**20)
    best: tuple[CostModel, Solution] | None = None
    failure: PlanError | None = None
    for combo in itertools.product(codecs, repeat=len(profile.hop_names())):
        cm = CostModel(profile, dict(zip(profile.hop_names(), combo, strict=True)))
        try:
            sol = optimise(cm, objective, base_forbid(cm), cons)
        except PlanError as e:
            failure = e
            continue
        if best is None or _rank(sol.breakdown, objective) < _rank(best[1].breakdown, objective):
            best = (cm, sol)
    if best is None:
        raise failure or PlanError("no plan found")
    cm, chosen = best
    alternatives = [_alternative(cm, mode, objective, cons) for mode in MODES]
    return Plan(
        **profile.model_dump(),
        objective=objective,
        placement=cm.placement_of(chosen.labels),
        cuts=cm.cuts,
        predicted=predicted_of(chosen.breakdown, cm.tiers, profile.hop_names()),
        alternatives=alternatives,
        exact=chosen.exact,
        mode=mode_of(cm, chosen.labels),
        algorithm=chosen.algorithm,
        constraints={"slo_ms": slo_ms, "device_mem_mb": device_mem_mb},
        profile_digest=profile.digest(),
    )


def _alternative(cm: CostModel, mode, objective: str, cons: Constraints) -> Alternative:
    forbid = mode_forbid(cm, mode)
    if forbid is None:
        return Alternative(mode=mode.name, available=False, note="fleet lacks a tier")
    try:
        sol = optimise(cm, objective, forbid, Constraints())
    except PlanError as e:
        return Alternative(mode=mode.name, available=False, note=str(e))
    bd = sol.breakdown
    return Alternative(
        mode=mode.name,
        available=True,
        total_ms=bd.total_ms,
        energy_j=bd.energy_j,
        throughput_fps=bd.throughput_fps,
        meets_constraints=cons.ok(bd),
        placement=cm.placement_of(sol.labels),
    )
