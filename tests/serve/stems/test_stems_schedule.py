"""Mainstream's scheduler: optimal (equals brute force), within budget, its baselines, and one
clear error for each bad input."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from edgeweave.serve.stems import (
    StemCosts,
    TenancyError,
    Tenant,
    build_forest,
    max_sharing,
    measure_stem_costs,
    no_sharing,
    quality,
    schedule,
    stem_cost,
)

RATES = (30.0, 15.0, 7.5)
COSTS = StemCosts((0.01, 0.08, 0.05, 0.004, 0.001), 0.0005)


def _tenants(seed: int, n: int = 3, depths=(0, 1, 3, 5)) -> list[Tenant]:
    """Accuracy falling (not strictly) with depth, as fine-tuning measures it."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        acc, table = rng.uniform(0.85, 1.0), {}
        for d in depths:
            table[d] = round(acc, 4)
            acc -= rng.uniform(0.0, 0.08)
        out.append(Tenant(f"t{i}", table, event_s=rng.choice((0.05, 0.1, 0.3))))
    return out


def _brute_force(tenants, costs, budget, metric):
    best = -1.0
    options = [[(d, r) for d in sorted(t.accuracy) for r in RATES] for t in tenants]
    for combo in itertools.product(*options):
        depths, fps = [d for d, _ in combo], [r for _, r in combo]
        if stem_cost(depths, fps, costs) <= budget * (1 + 1e-9):
            best = max(best, sum(quality(metric, t.accuracy[d], r, 30.0, t.event_s)
                                 for t, (d, r) in zip(tenants, combo, strict=True)))
    return best


@pytest.mark.parametrize("metric", ["event", "frames"])
@pytest.mark.parametrize("seed", range(4))
def test_schedule_equals_brute_force(seed, metric):
    tenants = _tenants(seed)
    full = stem_cost([0] * 3, [30.0] * 3, COSTS)
    for fraction in (0.12, 0.25, 0.4, 0.6, 1.0):
        budget = full * fraction
        try:
            got = schedule(tenants, COSTS, budget, RATES, 30.0, metric)
        except TenancyError:
            assert _brute_force(tenants, COSTS, budget, metric) < 0
            continue
        assert got.value == pytest.approx(_brute_force(tenants, COSTS, budget, metric),
                                          abs=1e-9)
        assert got.cost_ms_per_s <= budget * (1 + 1e-9)
        depths = [c.depth for c in got.choices]
        assert got.cost_ms_per_s == pytest.approx(stem_cost(depths, [c.fps for c in got.choices],
                                                            COSTS))
        assert got.value == pytest.approx(sum(c.quality for c in got.choices))


def test_baselines_fix_the_depths_and_mainstream_is_at_least_as_good():
    tenants = _tenants(7)
    full = stem_cost([0] * 3, [30.0] * 3, COSTS)
    for fraction in (0.4, 0.7, 1.0):
        budget = full * fraction
        best = schedule(tenants, COSTS, budget, RATES, 30.0)
        none = no_sharing(tenants, COSTS, budget, RATES, 30.0)
        most = max_sharing(tenants, COSTS, budget, RATES, 30.0)
        assert {c.depth for c in none.choices} == {0}
        assert {c.depth for c in most.choices} == {5}
        assert (none.policy, most.policy, best.policy) == ("no-sharing", "max-sharing",
                                                           "mainstream")
        for s in (none, most):
            assert s.cost_ms_per_s <= budget * (1 + 1e-9)
            assert best.value >= s.value - 1e-12


def test_sharing_beats_both_baselines_somewhere_on_a_real_trade_off():
    """Deep sharing is cheap but inaccurate, no sharing accurate but dear: at a middle budget
    the mixed schedule is strictly better than either."""
    tenants = [Tenant(f"t{i}", {0: 0.95, 3: 0.93, 5: 0.7}, 0.1) for i in range(3)]
    budget = stem_cost([3] * 3, [30.0] * 3, COSTS) * 1.01
    best = schedule(tenants, COSTS, budget, RATES, 30.0)
    assert best.value > no_sharing(tenants, COSTS, budget, RATES, 30.0).value + 0.01
    assert best.value > max_sharing(tenants, COSTS, budget, RATES, 30.0).value + 0.01
    assert {c.depth for c in best.choices} == {3}


def test_a_huge_budget_gives_everyone_its_best_depth_at_the_top_rate():
    tenants = _tenants(3)
    got = schedule(tenants, COSTS, 1e6, RATES, 30.0, "frames")
    for t, c in zip(tenants, got.choices, strict=True):
        assert c.fps == 30.0 and c.accuracy == max(t.accuracy.values())


def test_quality_metrics():
    assert quality("event", 0.9, 10, 30, 0.1) == pytest.approx(0.9)  # one frame per event
    assert quality("event", 0.9, 20, 30, 0.1) == pytest.approx(0.99)
    assert quality("event", 0.9, 5, 30, 0.1) == pytest.approx(0.45)  # half the events sampled
    assert quality("frames", 0.9, 15, 30, 0.1) == pytest.approx(0.45)
    with pytest.raises(TenancyError, match="metric"):
        quality("f1", 0.9, 15, 30, 0.1)


def test_schedule_picks_depths_the_forest_can_run(stem_workload):
    """End to end on the trained workload: measured costs, scheduled, executed."""
    data, backbone, tenants = stem_workload
    costs = measure_stem_costs(backbone.blocks, tenants[0].versions[5].tail[-1],
                               data.x_test[:16], warmup=1, repeats=3)
    sched = [t.tenant() for t in tenants]
    budget = stem_cost([2] * 3, [15.0] * 3, costs)
    got = schedule(sched, costs, budget, RATES, 30.0)
    assert got.cost_ms_per_s <= budget * (1 + 1e-9)
    forest = build_forest(backbone, tenants, {c.tenant: c.depth for c in got.choices})
    assert forest.depths == tuple(got.choice(t.name).depth for t in tenants)


@pytest.mark.parametrize("budget", [0, -5.0, math.nan, math.inf, "10"])
def test_budget_must_be_positive(budget):
    with pytest.raises(TenancyError, match="budget: expected a positive number"):
        schedule(_tenants(0), COSTS, budget, RATES, 30.0)


def test_bad_inputs_name_the_field():
    tenants = _tenants(0)
    with pytest.raises(TenancyError, match=r"depths: unknown tenant\(s\) 'nobody'"):
        schedule(tenants, COSTS, 10.0, RATES, 30.0, depths={"nobody": {0}})
    with pytest.raises(TenancyError, match=r"depths for tenant .t0.: expected a depth in 0\.\.5"):
        schedule(tenants, COSTS, 10.0, RATES, 30.0, depths={"t0": {9}})
    with pytest.raises(TenancyError, match="none of the depths allowed"):
        schedule(tenants, COSTS, 10.0, RATES, 30.0, depths={"t0": {2}})
    with pytest.raises(TenancyError, match=r"accuracy depth: expected a depth in 0\.\.5"):
        Tenant("t", {6: 0.9})
    with pytest.raises(TenancyError, match="accuracy at depth 1: expected an accuracy"):
        Tenant("t", {1: 1.5})
    with pytest.raises(TenancyError, match="event_s"):
        Tenant("t", {1: 0.5}, event_s=0)
    with pytest.raises(TenancyError, match="names must be unique"):
        schedule([tenants[0], tenants[0]], COSTS, 10.0, RATES, 30.0)
    with pytest.raises(TenancyError, match="20 fps must divide 30 fps"):
        schedule(tenants, COSTS, 10.0, (30.0, 20.0), 30.0)
    with pytest.raises(TenancyError, match="metric"):
        schedule(tenants, COSTS, 10.0, RATES, 30.0, metric="f1")
    with pytest.raises(TenancyError, match="is not in this schedule"):
        schedule(tenants, COSTS, 10.0, RATES, 30.0).choice("nobody")
    with pytest.raises(TenancyError, match="5 block costs"):
        StemCosts((0.1, 0.2), 0.0)


def test_a_budget_too_small_for_anyone_says_what_it_would_take():
    tenants = _tenants(0)
    floor = stem_cost([5] * 3, [7.5] * 3, COSTS)
    with pytest.raises(TenancyError, match=f"needs {floor:.4g}"):
        schedule(tenants, COSTS, floor * 0.9, RATES, 30.0)
    assert schedule(tenants, COSTS, floor, RATES, 30.0).cost_ms_per_s == pytest.approx(floor)
