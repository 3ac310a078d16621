"""The planner's best placement of one profile under a latency SLO, a device memory limit and a
device energy budget, which model selection needs for every candidate.

Each candidate's own placement minimises the objective under the constraints. The planner
takes a latency SLO and a memory limit directly; a device energy budget is met by asking the
planner for the least-energy placement under those (the budget is infeasible if even that
breaks it) and, when the objective is latency, by bisecting the SLO handed to the
least-energy planner: the smallest SLO under which the least-energy placement fits the budget
is the lowest latency any placement within the budget achieves.
"""

from __future__ import annotations

from edgeweave.errors import PlanError
from edgeweave.plan.planner import plan
from edgeweave.plan.record import Plan
from edgeweave.profile.schema import Profile

#: What model selection minimises (the planner also knows "throughput").
SELECT_OBJECTIVES = ("latency", "energy")
TOL = 1e-9       # relative slack, as the planner's own SLO check
_BISECT = 1e-7   # relative width at which the energy-budget bisection stops


def check_objective(objective: str) -> None:
    if objective not in SELECT_OBJECTIVES:
        raise PlanError(f"--objective: model selection minimises {' or '.join(SELECT_OBJECTIVES)}, "
                        f"got {objective!r}")


def plan_within(profile: Profile, objective: str = "latency", slo_ms: float | None = None,
                device_mem_mb: float | None = None, energy_budget_j: float | None = None
                ) -> Plan:
    """The planner's best placement for ``objective`` that also keeps the device's energy per
    inference within ``energy_budget_j`` (see the module doc for how); raises PlanError naming
    the budget when no placement meets it. ``exact`` is True when every planner call was."""
    check_objective(objective)
    if energy_budget_j is not None and not energy_budget_j > 0:
        raise PlanError(f"--energy-mj: the energy budget must be positive, got "
                        f"{energy_budget_j * 1e3:g} mJ")
    best = plan(profile, objective, slo_ms, device_mem_mb)
    if energy_budget_j is None:
        return best
    constraints = {"slo_ms": slo_ms, "device_mem_mb": device_mem_mb,
                   "energy_budget_j": energy_budget_j}
    if energy_j(best) <= energy_budget_j * (1 + TOL):
        return best.model_copy(update={"constraints": constraints})
    frugal = plan(profile, "energy", slo_ms, device_mem_mb)
    if energy_j(frugal) > energy_budget_j * (1 + TOL):
        within = " under the other constraints" if slo_ms or device_mem_mb else ""
        raise PlanError(f"{profile.model}: no placement meets the device energy budget "
                        f"{energy_budget_j * 1e3:g} mJ{within} (least: "
                        f"{energy_j(frugal) * 1e3:.4g} mJ)")
    # objective is latency here (for energy, `best` is `frugal`): bisect the SLO
    lo, hi, found = total_ms(best), total_ms(frugal), frugal
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
        if energy_j(trial) <= energy_budget_j * (1 + TOL):
            found, hi = trial, total_ms(trial)
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


def total_ms(p: Plan) -> float:
    return float(p.predicted["total_ms"])


def energy_j(p: Plan) -> float:
    return float(p.predicted["energy_j"])


def device_bytes(p: Plan) -> int:
    return int(p.predicted["device_param_bytes"])
