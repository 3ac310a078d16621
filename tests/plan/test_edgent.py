"""Edgent: the joint (exit, cut) choice against brute force, the configuration map, the
online selector and the infeasible-requirement error."""

from itertools import pairwise

import numpy as np
import pytest
import torch

from edgeweave.errors import PlanError
from edgeweave.graph import run_stages, split
from edgeweave.plan import bruteforce
from edgeweave.plan.branchy import (
    STAGE_ORDER,
    digits_branchy,
    exit_graph,
    exit_placement,
    profile_branchy,
)
from edgeweave.plan.costs import CostModel
from edgeweave.plan.edgent import ExitBranch, option_plan, plan_edgent, price_all
from edgeweave.plan.edgent_dynamic import (
    EdgentSelector,
    bandwidth_states,
    build_config_map,
    replay,
)
from edgeweave.profile import DevicePower, LinkSpec, NodeCost, Profile, random_profile
from edgeweave.runtime.bandwidth import BandwidthEstimator
from edgeweave.topology import DEFAULT_FLEET, load_fleet

MBPS = (1.0, 5.0, 20.0, 100.0)


def brute_force(branches, slo_ms, mbps):
    """(accuracy, latency) of the best pair, found WITHOUT Edgent's code: every monotone
    device/edge placement of every exit (cloud forbidden, input on the device)."""
    best = None
    for b in branches:
        prof = b.profile.with_link(b.profile.hop_names()[0], mbps=mbps)
        cm = CostModel(prof)
        forbid = np.zeros((cm.n, cm.n_tiers), dtype=bool)
        forbid[:, 2:] = True
        forbid[cm.inputs, 1:] = True
        rows = bruteforce.monotone_placements(cm, forbid)
        for total in cm.evaluate_many(rows).total_ms:
            if total <= slo_ms * (1 + 1e-9):
                cand = (-b.accuracy, float(total))
                best = cand if best is None or cand < best else best
    return None if best is None else (-best[0], best[1])


def check_against_brute_force(branches, mbps_values):
    for mbps in mbps_values:
        lat = sorted(o.latency_ms for o in price_all(branches, mbps))
        for slo in [lat[0] * 0.5, *np.quantile(lat, [0.0, 0.1, 0.3, 0.6, 1.0])]:
            expected = brute_force(branches, slo, mbps)
            if expected is None:
                with pytest.raises(PlanError):
                    plan_edgent(branches, slo, mbps)
                continue
            got = plan_edgent(branches, slo, mbps).chosen
            assert got.accuracy == pytest.approx(expected[0])
            assert got.latency_ms == pytest.approx(expected[1], rel=1e-9, abs=1e-12)
            assert got.latency_ms <= slo * (1 + 1e-9)


def synthetic_branches(seed, tiers=("device", "edge", "cloud")):
    rng = np.random.default_rng(seed)
    lengths = sorted(rng.choice(np.arange(3, 10), size=3, replace=False))
    accs = rng.choice([0.8, 0.85, 0.9], size=3)  # repeats: ties must go to the faster
    return [ExitBranch(k, float(a), random_profile(seed * 10 + k, int(n), chain=True,
                                                   tiers=tiers))
            for k, (n, a) in enumerate(zip(lengths, accs, strict=True))]


@pytest.mark.parametrize("seed", range(6))
def test_choice_equals_brute_force_on_synthetic_profiles(seed):
    check_against_brute_force(synthetic_branches(seed), MBPS)


def test_every_pair_is_recorded():
    branches = synthetic_branches(3)
    choice = plan_edgent(branches, 1e9, 20.0)
    expected = {(b.exit, c) for b in branches for c in range(len(b.profile.nodes))}
    assert {o.key for o in choice.options} == expected  # cuts 0..n_ops (n_ops = nodes - 1)
    assert choice.chosen.accuracy == max(b.accuracy for b in branches)
    doc = choice.to_json()
    assert len(doc["options"]) == len(expected) and all(o["meets_slo"] for o in doc["options"])


def test_infeasible_requirement_names_the_fastest_option():
    branches = synthetic_branches(1)
    fastest = min(price_all(branches, 5.0), key=lambda o: o.latency_ms)
    with pytest.raises(PlanError) as err:
        plan_edgent(branches, fastest.latency_ms * 0.9, 5.0)
    msg = str(err.value)
    assert "cannot be met at 5 Mbit/s" in msg
    assert fastest.label() in msg and f"{fastest.latency_ms:.3f} ms" in msg
    with pytest.raises(PlanError, match="slo_ms"):
        plan_edgent(branches, 0.0, 5.0)


def test_branching_profile_is_rejected():
    from edgeweave.profile import random_profile as rp

    dag = rp(4, 8, chain=False)
    if CostModel(dag).is_chain():
        pytest.skip("random DAG happened to be a chain")
    with pytest.raises(PlanError, match="chain"):
        plan_edgent([ExitBranch(0, 0.9, dag)], 1e9, 5.0)


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    tb = digits_branchy(side=16, width=8, epochs=2)
    bp = profile_branchy(tb.net, load_fleet(DEFAULT_FLEET), tb.accuracies, tb.input_shape,
                         repeats=2)
    return tb, bp


@pytest.mark.slow
def test_choice_equals_brute_force_on_trained_digits_net(trained):
    tb, bp = trained
    assert len(bp.branches) == 3 == tb.net.num_exits
    sizes = [len(b.profile.nodes) for b in bp.branches]
    assert sizes[0] < sizes[1] < sizes[2]
    assert [b.accuracy for b in bp.branches] == tb.accuracies
    check_against_brute_force(bp.branches, MBPS)


@pytest.mark.slow
def test_exit_placement_runs_the_chosen_exit_split(trained):
    tb, bp = trained
    x = tb.data.x_test[:4]
    with torch.no_grad():
        reference = tb.net(x)
    for branch in bp.branches:
        n_ops = len(branch.profile.nodes) - 1
        for cut in (0, n_ops // 2, n_ops):
            stages = {s.key: s for s in split(bp.graph, exit_placement(bp.graph, branch, cut),
                                              STAGE_ORDER)}
            env = {bp.graph.placeholders[0]: x}
            for key in ("device", "edge"):
                if key in stages:
                    s = stages[key]
                    env.update(zip(s.outputs, s.module(*(env[i] for i in s.inputs)),
                                   strict=True))
            out = env[bp.graph.outputs[branch.exit]]
            torch.testing.assert_close(out, reference[branch.exit])


@pytest.mark.slow
def test_config_map_picks_static_optimum_in_every_state(trained):
    _, bp = trained
    trace = [0.5, 1.0, 3.0, 8.0, 20.0, 60.0, 120.0]
    states = bandwidth_states(trace, n_states=4)
    assert states[0].low_mbps == 0 and np.isinf(states[-1].high_mbps)
    lat = sorted(o.latency_ms for o in price_all(bp.branches, 20.0))
    slo = float(np.quantile(lat, 0.2))
    cmap = build_config_map(bp.branches, states, slo)
    for entry in cmap.entries:
        expected = brute_force(bp.branches, slo, entry.state.plan_mbps)
        assert entry.feasible == (expected is not None)
        if expected is None:
            continue
        assert entry.option.accuracy == pytest.approx(expected[0])
        assert entry.option.latency_ms == pytest.approx(expected[1])
        # planned at the state's bottom, so it holds everywhere in the state
        top = entry.state.high_mbps if np.isfinite(entry.state.high_mbps) else 1e4
        for mbps in np.geomspace(entry.state.plan_mbps, top * 0.999, 5):
            priced = {o.key: o for o in price_all(bp.branches, float(mbps))}
            assert priced[entry.option.key].latency_ms <= slo * (1 + 1e-9)


def _chain(name, device_ms, edge_ms, input_bytes=20_000):
    """input -> ops with the given device/edge latencies; 2 ms RTT Wi-Fi-like first hop."""
    tiers = ("device", "edge", "cloud")
    nodes = [NodeCost(name="input", op="placeholder", flops=0, param_bytes=0,
                      out_bytes=input_bytes, latency_ms=dict.fromkeys(tiers, 0.0),
                      energy_j=dict.fromkeys(tiers, 0.0))]
    for i, (d, e) in enumerate(zip(device_ms, edge_ms, strict=True)):
        nodes.append(NodeCost(name=f"op{i}", op="synthetic", flops=1, param_bytes=0,
                              out_bytes=input_bytes * 2, latency_ms={"device": d, "edge": e,
                                                                     "cloud": e},
                              energy_j=dict.fromkeys(tiers, 0.0)))
    nodes[-1] = nodes[-1].model_copy(update={"out_bytes": 40})
    names = [n.name for n in nodes]
    return Profile(model=name, fleet="synthetic", input_bytes=input_bytes, tiers=list(tiers),
                   nodes=nodes, edges=list(pairwise(names)),
                   output=names[-1], inputs=["input"],
                   links={"device-edge": LinkSpec(mbps=10, rtt_ms=2),
                          "edge-cloud": LinkSpec(mbps=100, rtt_ms=20)},
                   device_power=DevicePower(compute_w=5, idle_w=1, tx_w=2, rx_w=2)).check()


def _step_map():
    """A cheap, less accurate early exit and an accurate exit too slow for the device: the
    accurate one fits 10 ms only when the upload is fast (top state, >= 31.6 Mbit/s)."""
    branches = [ExitBranch(0, 0.8, _chain("early", [2.0], [0.2])),
                ExitBranch(1, 0.95, _chain("final", [2.0, 30.0], [0.2, 1.0]))]
    cmap = build_config_map(branches, bandwidth_states([1.0, 100.0], 4), 10.0)
    assert cmap.entries[0].option.key == (0, 1)  # early exit on the device
    assert cmap.entries[-1].option.key == (1, 0)  # final exit on the edge
    return branches, cmap


def test_selector_switches_after_confirmed_change_and_logs_it():
    _, cmap = _step_map()
    top = len(cmap.entries) - 1
    sel = EdgentSelector(cmap, initial_mbps=1.0, confirm=2)
    assert sel.state == 0
    sel.update(150.0, t=1.0)  # one outlier: no switch
    sel.update(1.0, t=2.0)
    assert sel.state == 0 and not sel.switches
    sel.update(150.0, t=3.0)
    sel.update(140.0, t=4.0)
    assert sel.state == top and sel.current.option.key == (1, 0)
    [log] = sel.switches
    assert log["t_s"] == 4.0 and (log["old_state"], log["new_state"]) == (0, top)
    assert log["old"] == cmap.entries[0].option.label()
    assert log["new"] == cmap.entries[top].option.label()


def test_selector_accepts_the_runtime_estimator():
    _, cmap = _step_map()
    sel = EdgentSelector(cmap, initial_mbps=1.0, estimator=BandwidthEstimator(), confirm=1)
    for _ in range(6):  # 100 KB in 8 ms = 100 Mbit/s
        sel.observe(100_000, 0.008)
    assert sel.state == len(cmap.entries) - 1 and len(sel.switches) == 1


def test_replay_dynamic_misses_only_around_changes():
    branches, cmap = _step_map()
    bw = [1.0] * 20 + [100.0] * 20 + [1.0] * 20
    low_opt = cmap.entries[0].option
    static = replay(branches, bw, cmap.slo_ms, low_opt, "static")
    assert static.misses == 0  # planned for the worst bandwidth
    confirm = 2
    dyn = replay(branches, bw, cmap.slo_ms,
                 EdgentSelector(cmap, initial_mbps=1.0, confirm=confirm), "dynamic")
    assert len(dyn.switches) == 2
    assert dyn.misses <= confirm  # only while the drop back to 1 Mbit/s is being confirmed
    assert dyn.mean_accuracy > static.mean_accuracy  # the accurate exit while the link is fast
    fast = replay(branches, bw, cmap.slo_ms, plan_edgent(branches, 10.0, 100.0).chosen, "fast")
    assert fast.misses == 40  # the final exit on the edge misses every slow request


@pytest.mark.slow
def test_option_plan_is_a_plan_the_runtime_can_split(trained):
    tb, bp = trained
    x = tb.data.x_test[:2]
    with torch.no_grad():
        reference = tb.net(x)
    for branch in bp.branches:
        graph = exit_graph(bp.graph, branch)
        assert graph.outputs == [bp.graph.outputs[branch.exit]] and graph.is_chain()
        for option in price_all([branch], 5.0):
            chosen = option_plan(branch, option, 5.0, slo_ms=50.0)
            assert chosen.algorithm == "edgent" and chosen.exact
            assert chosen.predicted["total_ms"] == pytest.approx(option.latency_ms)
            assert chosen.mode == ("device-only" if option.cut == option.n_ops else
                                   "edge-only" if option.cut == 0 else "device-edge")
            torch.testing.assert_close(run_stages(split(graph, chosen.placement, chosen.tiers),
                                                  x), reference[branch.exit])
    with pytest.raises(PlanError, match="exit"):
        option_plan(bp.branches[0], price_all([bp.branches[1]], 5.0)[0])
