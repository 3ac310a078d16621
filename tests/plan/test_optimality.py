"""Every planner against brute force over all monotone placements (all nested closed sets)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from edgeweave.plan import bruteforce, mincut
from edgeweave.plan.costs import CostModel
from edgeweave.plan.modes import base_forbid
from edgeweave.plan.planner import plan
from edgeweave.plan.scan import scan
from helpers import dag_profiles

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _close(a, b):
    return a == pytest.approx(b, rel=1e-6, abs=1e-9)


@SETTINGS
@given(dag_profiles(max_nodes=8))
def test_mincut_equals_brute_force_on_dags(profile):
    """Equal up to the solver's documented rounding: its integer capacities confuse placements
    whose costs differ by about 1e-6 of the costs' total (mincut's docstring), which matters
    only when the optimum is a tiny fraction of it (a node of 6e-8 ms beside MB transfers)."""
    cm = CostModel(profile)
    forbid = base_forbid(cm)
    for objective in ("latency", "energy"):
        _, best = bruteforce.best(cm, objective, forbid)
        worst = float(cm.evaluate_many(bruteforce.monotone_placements(cm, forbid))
                      .value(objective).max())
        labels = mincut.solve(cm, cm.weights(objective), forbid)
        assert cm.is_monotone(labels)
        assert labels[cm.inputs[0]] == 0
        assert cm.evaluate(labels).value(objective) == pytest.approx(
            best, rel=1e-6, abs=max(1e-9, 1e-6 * worst))


@SETTINGS
@given(dag_profiles(max_nodes=7, n_tiers=2))
def test_mincut_equals_brute_force_with_two_tiers(profile):
    cm = CostModel(profile)
    _, best = bruteforce.best(cm, "latency", base_forbid(cm))
    result = plan(profile, "latency")
    assert result.exact
    assert _close(result.predicted["total_ms"], best)


@SETTINGS
@given(dag_profiles(max_nodes=12, chain=True))
def test_chain_scan_equals_brute_force_for_every_objective(profile):
    cm = CostModel(profile)
    assert cm.is_chain()
    for objective in ("latency", "energy", "throughput"):
        _, best = bruteforce.best(cm, objective, base_forbid(cm))
        result = plan(profile, objective)
        assert result.exact and result.algorithm.startswith("chain scan")
        got = cm.evaluate(cm.labels_of(result.placement)).value(objective)
        assert _close(got, best)


@SETTINGS
@given(dag_profiles(max_nodes=9))
def test_scan_enumerates_every_cut_of_the_topological_order(profile):
    cm = CostModel(profile)
    res = scan(cm)
    assert all(cm.is_monotone(lab) for lab in res.labels)
    # every placement that splits the topological order into consecutive segments, once
    segments = {tuple(lab[cm.order]) for lab in res.labels}
    assert len(segments) == len(res.labels)
    assert all(list(seg) == sorted(seg) for seg in segments)


@SETTINGS
@given(dag_profiles(max_nodes=7))
def test_dag_throughput_is_feasible_and_never_beats_brute_force(profile):
    cm = CostModel(profile)
    _, best = bruteforce.best(cm, "throughput", base_forbid(cm))
    result = plan(profile, "throughput")
    labels = cm.labels_of(result.placement)
    assert cm.is_monotone(labels)
    got = cm.evaluate(labels).bottleneck_ms
    assert got >= best - 1e-9
    if result.exact:
        assert _close(got, best)


@SETTINGS
@given(dag_profiles(max_nodes=7))
def test_energy_under_slo_is_feasible_and_exact_when_claimed(profile):
    cm = CostModel(profile)
    forbid = base_forbid(cm)
    fastest = cm.evaluate(bruteforce.best(cm, "latency", forbid)[0]).total_ms
    slo = fastest * 1.2 + 1.0
    feasible = [
        cm.evaluate(lab) for lab in bruteforce.monotone_placements(cm, forbid)
        if cm.evaluate(lab).total_ms <= slo
    ]
    best = min(bd.energy_j for bd in feasible)
    result = plan(profile, "energy", slo_ms=slo)
    assert result.predicted["total_ms"] <= slo * (1 + 1e-9)
    assert result.predicted["energy_j"] >= best - 1e-12
    if result.exact:
        assert _close(result.predicted["energy_j"], best)


def test_modes_restrict_the_placement():
    from helpers import make_profile

    prof = make_profile(
        latencies=[(0, 0, 0), (10, 2, 1), (20, 4, 1), (5, 1, 1)],
        out_bytes=[1000, 500, 200, 100],
        edges=[(0, 1), (1, 2), (2, 3)],
        links=[(10.0, 10.0), (50.0, 30.0)],
    )
    result = plan(prof, "latency")
    by_mode = {a.mode: a for a in result.alternatives}
    assert set(by_mode) == {"device-only", "edge-only", "cloud-only", "device-edge",
                            "edge-cloud", "device-edge-cloud"}
    assert set(by_mode["device-only"].placement.values()) == {"device"}
    assert by_mode["device-only"].total_ms == pytest.approx(35.0)
    edge = by_mode["edge-only"].placement
    assert edge["n0"] == "device" and {edge[n] for n in ("n1", "n2", "n3")} == {"edge"}
    split = by_mode["device-edge"].placement
    assert split["n1"] == "device" and split["n3"] == "edge"
    # the chosen plan is at least as good as every mode
    assert all(result.predicted["total_ms"] <= a.total_ms + 1e-9 for a in result.alternatives)
    labels = np.array([["device", "edge", "cloud"].index(t) for t in result.placement.values()])
    assert (np.diff(labels) >= 0).all()
