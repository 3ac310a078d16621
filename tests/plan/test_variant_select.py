"""Model selection (MCDNN/DeepDecision-style) against brute force over candidates x placements."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edgeweave.errors import PlanError
from edgeweave.plan import (
    BigLittleCandidate,
    Candidate,
    SelectionError,
    plan_within,
    select,
)
from edgeweave.plan.bruteforce import monotone_placements
from edgeweave.plan.costs import CostModel
from edgeweave.plan.modes import base_forbid
from edgeweave.plan.within import device_only
from edgeweave.profile import LinkSpec, random_profile
from helpers import make_profile

TOL = 1e-9
LINKS = {"device-edge": LinkSpec(mbps=20.0, rtt_ms=8.0),
         "edge-cloud": LinkSpec(mbps=100.0, rtt_ms=30.0)}


def _profile(seed: int, n: int, chain: bool = True):
    p = random_profile(seed, n, chain=chain)
    return p.model_copy(update={"links": dict(LINKS), "model": f"m{seed}"})


def _options(profile):
    """Every monotone placement of a profile: (total_ms, energy_j, device bytes) arrays."""
    cm = CostModel(profile)
    ev = cm.evaluate_many(monotone_placements(cm, base_forbid(cm)))
    return ev.total_ms, ev.energy_j, ev.device_param_bytes


def brute_force(cands, objective, slo=None, energy=None, mem_mb=None, min_acc=None,
                slo_stat="mean"):
    """Per candidate: its best (value, total) over all feasible placements, or None; and the
    winner by the selection rule."""
    per = {}
    for c in cands:
        if isinstance(c, Candidate):
            total, joule, mem = _options(c.profile)
            worst = total
        else:
            l_total, l_joule, l_mem = _options(device_only(c.little))
            assert len(l_total) == 1  # device-only: one placement
            b_total, b_joule, b_mem = _options(c.big)
            r = c.escalation_rate
            total = l_total[0] + r * b_total
            worst = l_total[0] + b_total
            joule = l_joule[0] + r * b_joule
            mem = l_mem[0] + b_mem
        ok = np.ones(len(total), dtype=bool)
        if slo is not None:
            ok &= (worst if slo_stat == "worst" else total) <= slo * (1 + TOL)
        if energy is not None:
            ok &= joule <= energy * (1 + TOL)
        if mem_mb is not None:
            ok &= mem <= mem_mb * 2**20
        if min_acc is not None and c.accuracy < min_acc:
            ok[:] = False
        if not ok.any():
            per[c.name] = None
            continue
        value = total if objective == "latency" else joule
        idx = np.flatnonzero(ok)
        best = idx[np.lexsort((total[idx], value[idx]))[0]]
        per[c.name] = (float(value[best]), float(total[best]))
    feasible = [c for c in cands if per[c.name] is not None]
    if not feasible:
        return per, None

    def key(c):
        v, t = per[c.name]
        return (-c.accuracy, v, t) if min_acc is None else (v, -c.accuracy, t)

    return per, min(feasible, key=key)


def _candidates(seed: int, chain: bool = True):
    rng = np.random.default_rng(seed)
    profs = [_profile(1000 * seed + k, int(rng.integers(4, 8)), chain) for k in range(4)]
    accs = rng.uniform(0.80, 0.99, size=5)
    cands = [Candidate(f"v{k}", float(accs[k]), p) for k, p in enumerate(profs)]
    cands.append(BigLittleCandidate("bl", float(accs[4]), profs[0], profs[3],
                                    float(rng.uniform(0.05, 0.6))))
    return cands


def _constraint_grid(cands, rng):
    """Constraints that bind somewhere between the candidates' extremes."""
    fast = [select([c], "latency").chosen_outcome.total_ms for c in cands]
    frugal = [select([c], "energy").chosen_outcome.energy_j for c in cands]
    slo = float(rng.uniform(0.8 * min(fast), 1.3 * max(fast)))
    energy = float(rng.uniform(0.8 * min(frugal), 1.5 * max(frugal)))
    mem = float(rng.uniform(1.0, 12.0))
    accs = sorted(c.accuracy for c in cands)
    min_acc = float(rng.uniform(accs[0], accs[-1]))
    return [
        {},
        {"slo": slo},
        {"energy": energy},
        {"slo": slo, "energy": energy},
        {"slo": slo, "mem_mb": mem},
        {"slo": slo * 1.5, "energy": energy, "mem_mb": mem, "min_acc": min_acc},
        {"min_acc": min_acc},
        {"energy": energy, "min_acc": min_acc},
    ]


def _run(cands, objective, cons, slo_stat="mean"):
    return select(cands, objective, cons.get("slo"), cons.get("energy"), cons.get("mem_mb"),
                  cons.get("min_acc"), slo_stat)


def _check_against_brute_force(cands, objective, cons, slo_stat="mean", require_exact=True):
    """Run the selector and compare with brute force; returns the selector's exactness."""
    per, winner = brute_force(cands, objective, slo_stat=slo_stat, **cons)
    try:
        sel = _run(cands, objective, cons, slo_stat)
    except SelectionError as e:
        if e.selection.exact or require_exact:
            assert winner is None, f"selector found nothing, brute force chose {winner.name}"
        assert all(not o.feasible and o.why for o in e.selection.outcomes)
        return e.selection.exact
    assert winner is not None, f"selector chose {sel.chosen}, brute force found nothing"
    chosen = sel.chosen_outcome
    assert per[chosen.name] is not None  # what it chose really is feasible
    assert chosen.value(objective) >= per[chosen.name][0] * (1 - 1e-6) - 1e-12
    if require_exact:
        assert sel.exact
    if not sel.exact:
        return False
    for o in sel.outcomes:  # every candidate: same feasibility, same optimum
        assert o.feasible == (per[o.name] is not None), (o.name, o.why)
        if o.feasible:
            assert o.value(objective) == pytest.approx(per[o.name][0], rel=1e-6, abs=1e-12)
    assert chosen.accuracy == winner.accuracy
    assert chosen.value(objective) == pytest.approx(per[winner.name][0], rel=1e-6, abs=1e-12)
    return True


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("objective", ["latency", "energy"])
def test_choice_equals_brute_force_on_chains(seed, objective):
    cands = _candidates(seed)
    rng = np.random.default_rng(100 + seed)
    for cons in _constraint_grid(cands, rng):
        _check_against_brute_force(cands, objective, cons)


@pytest.mark.parametrize("seed", range(4))
def test_worst_case_slo_for_big_little_equals_brute_force(seed):
    cands = _candidates(seed)
    rng = np.random.default_rng(200 + seed)
    for cons in _constraint_grid(cands, rng)[1:4]:
        _check_against_brute_force(cands, "latency", cons, slo_stat="worst")


@pytest.mark.parametrize("seed", range(3))
def test_dags_feasible_and_exact_when_the_planner_is(seed):
    cands = _candidates(seed, chain=False)
    rng = np.random.default_rng(300 + seed)
    exact = [_check_against_brute_force(cands, "latency", cons, require_exact=False)
             for cons in _constraint_grid(cands, rng)]
    assert exact[0]  # unconstrained DAG planning is exact (min-cut)


def test_plan_within_energy_budget_is_the_fastest_placement_within_it():
    for seed in range(10):
        prof = _profile(seed, 7)
        total, joule, _ = _options(prof)
        for budget in np.quantile(joule, [0.05, 0.3, 0.7]):
            p = plan_within(prof, "latency", energy_budget_j=float(budget))
            assert p.predicted["energy_j"] <= budget * (1 + TOL)
            best = total[joule <= budget * (1 + TOL)].min()
            assert p.predicted["total_ms"] == pytest.approx(best, rel=1e-6)
            assert p.exact and p.constraints["energy_budget_j"] == float(budget)
        with pytest.raises(PlanError, match="energy budget"):
            plan_within(prof, "latency", energy_budget_j=float(joule.min()) * 0.5)


# ---- hand-made cases --------------------------------------------------------------------------

def _toy(device_ms: float, params: int = 1000, edge_ms: float = 0.1):
    """input -> one op: `device_ms` on the device, `edge_ms` on the edge (16 kB input)."""
    return make_profile([(0.0, 0.0, 0.0), (device_ms, edge_ms, edge_ms / 2)], [16_000, 40],
                        [(0, 1)], [(20.0, 8.0), (100.0, 30.0)], param_bytes=[0, params])


def _zoo():
    # fast/inaccurate, slow/accurate and a big/little pair between them
    small, large = _toy(2.0, 10_000), _toy(30.0, 4_000_000)
    return [Candidate("small", 0.90, small), Candidate("large", 0.97, large),
            BigLittleCandidate("pair", 0.965, small, large, 0.2)]


def test_rules_pick_as_expected():
    cands = _zoo()
    # without constraints, the most accurate; "large" is best offloaded to the edge
    sel = select(cands)
    assert sel.chosen == "large" and sel.rule == "max-accuracy"
    assert sel.chosen_outcome.mode == "edge-only"
    # a tight SLO leaves the little model and the pair; the pair is more accurate
    sel = select(cands, slo_ms=5.0)
    assert sel.chosen == "pair"
    pair = sel.outcome("pair")
    little_ms = sel.outcome("small").total_ms
    assert little_ms == pytest.approx(2.0)
    big_ms = pair.worst_ms - little_ms
    assert pair.total_ms == pytest.approx(little_ms + 0.2 * big_ms)
    assert pair.placements["little"] == {"n0": "device", "n1": "device"}
    assert pair.placements["big"]["n1"] == "edge"
    assert set(sel.plans) == {"little", "big"}
    # minimum accuracy -> minimise latency among those accurate enough
    sel = select(cands, min_accuracy=0.95)
    assert sel.rule == "min-latency" and sel.chosen == "pair"
    sel = select(cands, min_accuracy=0.5)
    assert sel.chosen == "small"
    # worst-case SLO: the pair's worst case is little + big
    with pytest.raises(SelectionError):
        select(cands[2:], slo_ms=pair.worst_ms * 0.99, slo_stat="worst")
    assert select(cands[2:], slo_ms=pair.worst_ms * 1.01, slo_stat="worst").chosen == "pair"


def test_big_little_extremes_in_the_planner():
    small, large = _toy(2.0), _toy(30.0)
    never = select([BigLittleCandidate("p", 0.9, small, large, 0.0)]).chosen_outcome
    alone = select([Candidate("s", 0.9, device_only(small))]).chosen_outcome
    assert never.total_ms == pytest.approx(alone.total_ms)
    assert never.energy_j == pytest.approx(alone.energy_j)
    always = select([BigLittleCandidate("p", 0.9, small, large, 1.0)]).chosen_outcome
    big = select([Candidate("b", 0.9, large)]).chosen_outcome
    assert always.total_ms == pytest.approx(alone.total_ms + big.total_ms)
    assert always.worst_ms == pytest.approx(always.total_ms)


def test_infeasible_slo_names_it_as_the_tightest():
    with pytest.raises(SelectionError) as err:
        select(_zoo(), slo_ms=1.0)
    msg = str(err.value)
    assert "tightest is the latency SLO 1 ms" in msg and "none of the 3" in msg
    assert "fastest: small at 2 ms" in msg
    assert isinstance(err.value, PlanError)
    for o in err.value.selection.outcomes:
        assert not o.feasible and any("latency SLO" in w for w in o.why)


def test_infeasible_energy_and_accuracy_and_memory_are_named():
    cands = _zoo()
    least = min(select([c], "energy").chosen_outcome.energy_j for c in cands)
    with pytest.raises(SelectionError, match="tightest is the device energy budget"):
        select(cands, energy_budget_j=least * 0.5)
    with pytest.raises(SelectionError, match=r"tightest is the minimum accuracy 99\.00%.*"
                                             r"most accurate: large at 97\.00%"):
        select(cands, min_accuracy=0.99, slo_ms=1000.0)
    # memory: every candidate can offload, except the pair's little model (10 kB on device)
    sel = select(cands[2:], device_mem_mb=0.02)
    assert sel.chosen == "pair"
    with pytest.raises(SelectionError, match="device memory limit") as err:
        select(cands[2:], device_mem_mb=0.005)
    assert "little model alone needs" in err.value.selection.outcomes[0].why[0]


def test_jointly_infeasible_constraints_say_so():
    # SLO alone: only "small" (and the pair); accuracy alone: only "large" -> nothing together
    with pytest.raises(SelectionError, match="together") as err:
        select(_zoo()[:2], slo_ms=5.0, min_accuracy=0.95)
    assert "only 1 of the 2 candidates" in str(err.value)


def test_record_is_complete_and_serialisable():
    sel = select(_zoo(), slo_ms=5.0)
    doc = json.loads(json.dumps(sel.to_json()))
    assert doc["chosen"] == "pair" and doc["constraints"]["slo_ms"] == 5.0
    assert [o["name"] for o in doc["outcomes"]] == ["small", "large", "pair"]
    large = next(o for o in doc["outcomes"] if o["name"] == "large")
    assert not large["feasible"] and large["why"] and math.isfinite(large["total_ms"])
    assert set(doc["plans"]) == {"little", "big"}
    assert doc["plans"]["big"]["placement"]["n1"] == "edge"


def test_malformed_requests():
    cands = _zoo()
    with pytest.raises(PlanError, match="latency or energy"):
        select(cands, "throughput")
    with pytest.raises(PlanError, match="unique"):
        select([cands[0], cands[0]])
    with pytest.raises(PlanError, match="accuracy must be in"):
        select([Candidate("x", 1.5, _toy(1.0))])
    with pytest.raises(PlanError, match="same fleet"):
        other = _toy(1.0).model_copy(update={"links": {
            "device-edge": LinkSpec(mbps=1.0, rtt_ms=8.0), **{"edge-cloud": LINKS["edge-cloud"]}
        }})
        select([cands[0], Candidate("y", 0.9, other)])
    with pytest.raises(PlanError, match="--slo-ms"):
        select(cands, slo_ms=0)
    with pytest.raises(PlanError, match="--energy-mj"):
        select(cands, energy_budget_j=-1.0)
    with pytest.raises(PlanError, match="--min-acc"):
        select(cands, min_accuracy=2.0)
    with pytest.raises(PlanError, match="slo-stat"):
        select(cands, slo_stat="p99")
    with pytest.raises(PlanError, match="escalation_rate"):
        select([BigLittleCandidate("p", 0.9, _toy(1.0), _toy(2.0), 1.5)])
    with pytest.raises(PlanError, match="at least one"):
        select([])
