"""The simulator against the real runtime (`runtime.lab` processes, same Plan, same link shaping
and dilation, same arrival times): median latency per request within a tolerance.

The issue's target is 10% (the benchmark reports the measured error per configuration); this
test guards the comparison with a wider tolerance, because a CI box shared with other jobs
slows the real servers by tens of percent in bursts the simulator cannot know about."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgeweave.sim.lab_run import run_real
from edgeweave.sim.validate import CASES, arrivals, compare, prepare

TOLERANCE = 0.25


@pytest.fixture(scope="module")
def alexnet():
    """One profile for both runs (profiling is a third of each run's time)."""
    from edgeweave.sim.validate import measure

    return measure("alexnet", repeats=5)


#: the issue's three configurations in two runs: the bandwidth step runs on the chain's
#: device-edge-cloud placement (the chain, its first hop stepping down half way through)
SHORT = {"bandwidth-step": {"mode": "device-edge-cloud", "step": (5.0, 8.0)},
         "shared-edge": {}}


@pytest.mark.slow  # starts edge and cloud servers per case
@pytest.mark.parametrize("name", list(SHORT))
def test_simulated_median_latency_matches_the_real_runtime(name, alexnet):
    case = dataclasses.replace(CASES[name], duration_s=10.0, requests=None, **SHORT[name])
    setup = prepare(case, alexnet)
    # the simulator takes each tier's compute as measured through the timed run, so a host
    # whose speed moved between the warm-up, the run and the cool-down needs no second run
    real = run_real(setup.case, setup.graph, setup.chosen, setup.prof, setup.dilation,
                    setup.times, setup.devs, calibration=10)
    assert len(real.warm) == len(real.cool) == 5 * case.devices  # both sides
    f = compare(setup, real, alexnet.model)
    assert len(f.sim_ms) == len(f.real_ms) == f.requests > 5
    assert np.isfinite(f.real_ms).all()
    row = f.row()
    assert abs(row["err_p50"]) < TOLERANCE, row
    # every timed request's batch at the edge, as its reply said, beside the simulated
    # edge's; the chain's edge runs no stage (it forwards), so neither side batches there
    assert len(real.batch) == f.requests
    staged = setup.chosen.predicted["tier_compute_ms"]["edge"] > 0
    for side in ("edge_batch_real", "edge_batch_sim"):
        assert sum(row[side].values()) == (f.requests if staged else 0), row[side]
    if case.devices == 1:  # a lone device never has two requests at the edge at once
        assert row["edge_batch_real"] == row["edge_batch_sim"]
    else:
        assert row["edge_batch_mean_real"] >= 1 and row["edge_batch_mean_sim"] >= 1
    lo, hi = row["err_p50_ci"]
    assert lo <= hi and row["tail_requests"] >= 1
    # a lone device's timed requests queued nowhere: they calibrate a replay too
    assert ("replay_err_p50" in row) == (case.devices == 1)
    assert set(row["timed_drift"]) == set(row["load_factors"])
    # every case is also simulated calibrated beside the run only, and with the run's compute
    # drawn regardless of when; each request's record pairs its two latencies with the
    # runtime's segments
    assert np.isfinite([row[f"{k}_err_p{q}"] for k in ("around", "timed_compute")
                        for q in (50, 95)]).all()
    assert set(row["around_load_factors"]) == set(row["load_factors"])
    assert [r["real_ms"] for r in f.records] == f.real_ms
    assert [r["sim_ms"] for r in f.records] == f.sim_ms
    assert all(r["segments"]["total_ms"] > 0 for r in f.records)
    if case.step is not None:  # the real client's first hop did slow down at the step
        hop = f"{setup.chosen.hop_names()[0]}_uplink"
        up = [(r["t_s"] >= case.step[0], r["segments"][hop]) for r in f.records]
        before = [ms for after, ms in up if not after]
        after = [ms for after, ms in up if after]
        assert before and after and min(after) > 2 * max(before), up


def test_both_sides_replay_the_same_arrivals():
    t, d = arrivals(CASES["shared-edge"], seed=3)
    assert (np.diff(t) >= 0).all() and set(d.tolist()) == {0, 1, 2, 3}
    t2, d2 = arrivals(CASES["shared-edge"], seed=3)
    assert (t == t2).all() and (d == d2).all()


def test_a_calibrated_simulation_keeps_the_warm_ups_median_and_tail():
    """The warm-up's measured compute (a tail: one request in ten 2.5x slower, as a host
    busy with other work gives) and the runtime's per-request cost beyond compute and links
    calibrate the simulated lab: a lone device that never queues then sees the warm-up's
    median and p95, where the Plan's figures alone miss both."""
    from sim_helpers import CHAIN3, toy_plan

    from edgeweave.sim.calibration import calibrate
    from edgeweave.sim.run import simulate
    from edgeweave.sim.validate import sim_scenario
    from edgeweave.topology import load_fleet

    chosen = toy_plan(chain=CHAIN3)
    pred = chosen.predicted
    assert chosen.mode == "device-edge-cloud"
    links_ms = sum(h["up_ms"] + h["down_ms"] for h in pred["hops"].values())
    rng = np.random.default_rng(5)
    warm = []
    for _ in range(200):
        seg = {f"{t}_compute": ms * 1.3 * (2.5 if rng.random() < 0.1 else 1.0)
               * rng.uniform(0.9, 1.1) for t, ms in pred["tier_compute_ms"].items()}
        overhead = rng.gamma(4.0, 2.0)  # ms: encoding, gRPC, bookkeeping over two hops
        warm.append({**seg, "total_ms": links_ms + sum(seg.values()) + overhead})
    cal = calibrate(warm, chosen)
    assert cal.hops == 2 and cal.overhead_ms == pytest.approx(4.0, rel=0.15)
    assert cal.load["cloud"] == pytest.approx(1.3 * 1.15, rel=0.1)
    measured = np.array([w["total_ms"] for w in warm])
    case = dataclasses.replace(CASES["chain"], rate_per_s=0.2, duration_s=2000.0)
    times, devs = arrivals(case, seed=1)
    got = {}
    for label, c in (("calibrated", cal), ("plan only", None)):
        scn = sim_scenario(case, chosen, load_fleet("pi4-wifi-edge-cloud"), calibration=c)
        assert scn.applications[0].in_flight == 1  # the lab's client: one request at a time
        out = simulate(scn, arrivals=(times, devs)).outcome
        got[label] = np.percentile((out.done - out.t) * 1000.0, [50, 95])
    want = np.percentile(measured, [50, 95])
    assert got["calibrated"] == pytest.approx(want, rel=0.05)
    assert got["plan only"][0] == pytest.approx(pred["total_ms"], rel=0.01)
    assert got["plan only"][1] < 0.9 * want[1]


def test_calibration_takes_the_link_each_request_crossed():
    """A cool-down after a bandwidth step crosses the slower link: what the runtime recorded
    for it is the link's time, not the runtime's own cost (taken against the Plan's link
    figure, the difference would be counted as per-hop overhead, tens of ms)."""
    from sim_helpers import CHAIN3, toy_plan

    from edgeweave.sim.calibration import calibrate

    chosen = toy_plan(chain=CHAIN3)
    pred = chosen.predicted
    hops = {h: v for h, v in pred["hops"].items() if v["up_ms"] > 0}
    first = next(iter(hops))
    links_ms = sum(v["up_ms"] + v["down_ms"] for v in hops.values())
    compute = {f"{t}_compute": ms for t, ms in pred["tier_compute_ms"].items() if ms > 0}
    rows = []
    for k in range(20):
        slow = k >= 10  # the second half after the first hop's bandwidth fell 6x
        up = hops[first]["up_ms"] * (6.0 if slow else 1.0)
        extra = up - hops[first]["up_ms"]
        rows.append({**compute, f"{first}_uplink": up,
                     "total_ms": links_ms + extra + sum(compute.values()) + 3.0 + 0.1 * k})
    cal = calibrate(rows, chosen)
    assert cal.overhead_ms * cal.hops == pytest.approx(3.0 + 0.1 * 9.5, rel=1e-6)


def test_drift_compares_the_cool_down_with_the_warm_up():
    from edgeweave.sim.validate import RealRun, drift

    warm = [{"edge_compute": 98.0 + k, "total_ms": 150.0} for k in range(5)]
    cool = [{"edge_compute": 118.0 + k, "total_ms": 170.0} for k in range(5)]
    real = RealRun([1.0], 0, 0.0, warm, [{}], cool)
    assert real.calibration == warm + cool
    assert drift(real) == pytest.approx({"edge": 0.2})


def test_the_simulated_edge_batches_what_arrives_together_as_the_real_node_does():
    """The lab's edge serves its stage through the serving engine: with one worker busy,
    requests that arrive meanwhile run together in the next batch (the node's --max-batch, no
    batching delay), not one behind another. Four devices sending at once to a one-worker
    edge: the first runs alone, the other three in one batch that costs 1 + 2 x marginal of
    one request, so they finish together and the last is answered sooner than a FIFO of
    single requests would answer it; a stage that cannot batch (None) is served one by one."""
    from sim_helpers import toy_plan

    from edgeweave.runtime.server import NodeConfig
    from edgeweave.sim.run import simulate
    from edgeweave.sim.validate import serving_spec, sim_scenario
    from edgeweave.topology import load_fleet

    chosen = toy_plan().priced(mode="edge-only")
    edge_ms = chosen.predicted["tier_compute_ms"]["edge"]
    case = dataclasses.replace(CASES["shared-edge"], rate_per_s=1.0)
    assert case.edge_concurrency == 1
    spec = serving_spec(1, 0.25)
    assert spec["max_batch"] == NodeConfig("edge", "edge").max_batch > 1
    assert spec["max_delay_ms"] == 0 and serving_spec(1, None)["max_batch"] == 1
    times, devs = np.zeros(4), np.arange(4)
    done, served, fleet = {}, {}, load_fleet("pi4-wifi-edge-cloud")
    for marginal in (0.25, None):
        scn = sim_scenario(case, chosen, fleet,
                           batch_marginal=marginal)
        run = simulate(scn, arrivals=(times, devs))
        out = run.outcome
        done[marginal] = np.sort((out.done - out.t) * 1000.0)
        served[marginal] = run.sim.server(fleet.nodes_in("edge")[0].name).served_in
    batched, single = done[0.25], done[None]
    assert batched[1:] == pytest.approx([batched[3]] * 3, abs=1e-6)  # one batch of three
    assert batched[3] - batched[0] == pytest.approx(edge_ms * 1.5, rel=1e-3)
    assert np.diff(single) == pytest.approx([edge_ms] * 3, rel=1e-3)  # one behind another
    # requests per batch size, as the real edge's replies report them (`RealRun.batch`)
    assert served == {0.25: {1: 1, 3: 3}, None: {1: 4}}


def test_a_case_sized_by_requests_stretches_its_duration_and_keeps_its_step_in_place():
    from edgeweave.sim.validate import ROW_REQUESTS

    step = CASES["bandwidth-step"]
    assert step.requests == ROW_REQUESTS and step.step == (20.0, 8.0)
    sized = dataclasses.replace(step, rate_per_s=2.0).sized()
    assert sized.duration_s == pytest.approx(ROW_REQUESTS / 2.0) and sized.requests is None
    assert sized.step == pytest.approx((sized.duration_s / 2, 8.0))  # half way, as before
    shared = dataclasses.replace(CASES["shared-edge"], rate_per_s=1.5).sized()
    assert shared.duration_s == pytest.approx(ROW_REQUESTS / (4 * 1.5))
    times, _ = arrivals(shared)
    assert 0.7 * ROW_REQUESTS < len(times) < 1.3 * ROW_REQUESTS
    assert sized.sized() is sized


def test_a_replay_gives_each_request_its_measured_compute_in_order():
    """A lone device's timed requests, one of them in a burst that made its tiers 3x slower:
    replayed in order, each simulated request takes its real twin's compute (the burst where
    it fell), so each latency is the measured one; drawn at random, the burst lands elsewhere."""
    from sim_helpers import CHAIN3, toy_plan

    from edgeweave.sim.calibration import calibrate
    from edgeweave.sim.run import simulate
    from edgeweave.sim.validate import replay_in_order, sim_scenario
    from edgeweave.topology import load_fleet

    chosen = toy_plan(chain=CHAIN3)
    pred = chosen.predicted
    links_ms = sum(h["up_ms"] + h["down_ms"] for h in pred["hops"].values())
    rng = np.random.default_rng(4)
    rows = []
    for k in range(30):
        seg = {f"{t}_compute": ms * (3.0 if k in (7, 8) else rng.uniform(0.9, 1.1))
               for t, ms in pred["tier_compute_ms"].items() if ms >= 1.0}
        rows.append({**seg, "total_ms": links_ms + sum(seg.values()) + 3.0})
    case = dataclasses.replace(CASES["chain"], requests=None)
    times, devs = np.arange(30) * 10.0, np.zeros(30, dtype=int)  # far apart: nothing queues
    scn = sim_scenario(case, chosen, load_fleet("pi4-wifi-edge-cloud"),
                       calibration=calibrate(rows, chosen))
    got = replay_in_order(scn, times, devs)
    assert got == pytest.approx([r["total_ms"] for r in rows], rel=0.01)
    drawn = simulate(scn, arrivals=(times, devs)).outcome
    assert sorted(np.argsort(drawn.done - drawn.t)[-2:]) != [7, 8]


def test_the_timed_runs_own_compute_leaves_out_batches_and_keeps_the_calibrations_overhead():
    """`during_run`: the speed the host gave the timed run (its requests 30% slower than the
    warm-up's), from the requests the edge ran alone (a batch's compute, 2x, is the batch's);
    the timed requests queued (their totals hold 80 ms of waiting), so the per-hop cost is
    the calibration's, not what their totals would make of it."""
    from sim_helpers import toy_plan

    from edgeweave.sim.calibration import calibrate, during_run

    chosen = toy_plan().priced(mode="edge-only")
    pred = chosen.predicted
    edge_ms = pred["tier_compute_ms"]["edge"]
    links_ms = sum(h["up_ms"] + h["down_ms"] for h in pred["hops"].values() if h["up_ms"] > 0)
    warm = [{"edge_compute": edge_ms * (1.0 + 0.01 * k), "total_ms": 0.0} for k in range(10)]
    for w in warm:
        w["total_ms"] = links_ms + w["edge_compute"] + 4.0
    around = calibrate(warm, chosen)
    timed, batch = [], []
    for k in range(20):
        b = 2 if k % 4 == 0 else 1
        compute = edge_ms * 1.3 * (2.0 if b > 1 else 1.0)
        timed.append({"edge_compute": compute, "total_ms": links_ms + compute + 80.0 + 4.0})
        batch.append(b)
    got = during_run(timed, batch, chosen, around)
    assert got.load["edge"] == pytest.approx(1.3)
    assert len(got.compute["edge"]) == 15
    assert got.overhead_ms == pytest.approx(around.overhead_ms) == pytest.approx(4.0)
    assert calibrate(timed, chosen).overhead_ms > 40  # what the queued totals would give


def test_compute_measured_in_the_run_follows_the_hosts_speed_through_it():
    """`in_run`: the cloud computed at its planned speed for the first half of the timed run
    and at half of it for the second (another job started); the warm-up before the run and
    the cool-down after it saw each speed once. Calibrated beside the run, every simulated
    request gets their average (1.5x); measured in the run, each half gets its own speed, the
    per-request spread is what is left around it, and the per-hop cost is still the
    warm-up's (the timed totals are not used)."""
    from sim_helpers import CHAIN3, toy_plan

    from edgeweave.sim.calibration import calibrate, follow_levels, in_run
    from edgeweave.sim.run import simulate
    from edgeweave.sim.validate import sim_scenario
    from edgeweave.topology import load_fleet

    chosen = toy_plan(chain=CHAIN3)
    pred = chosen.predicted
    planned = {t: ms for t, ms in pred["tier_compute_ms"].items() if ms >= 1.0}
    links_ms = sum(h["up_ms"] + h["down_ms"] for h in pred["hops"].values())
    rng = np.random.default_rng(2)

    def row(cloud: float, total: float | None = None) -> dict[str, float]:
        seg = {f"{t}_compute": ms * (cloud if t == "cloud" else 1.0) * rng.uniform(0.97, 1.03)
               for t, ms in planned.items()}
        return {**seg, "total_ms": total or links_ms + sum(seg.values()) + 3.0}

    around = calibrate([row(1.0) for _ in range(10)] + [row(2.0) for _ in range(10)], chosen)
    n = 120
    times, devs = np.arange(n) * 10.0, np.zeros(n, dtype=int)  # far apart: nothing queues
    timed = [row(1.0 if k < n // 2 else 2.0, total=1e4) for k in range(n)]  # totals unused
    cal = in_run(timed, [1] * n, times, chosen, around)
    assert cal.load["cloud"] == pytest.approx(1.5, rel=0.02)
    assert cal.overhead_ms == pytest.approx(around.overhead_ms)
    _, level = cal.levels("cloud")
    assert level[:40] == pytest.approx(np.full(40, 1 / 1.5), rel=0.03)
    assert level[-40:] == pytest.approx(np.full(40, 2 / 1.5), rel=0.03)
    # the drift is not counted as spread too (what is left: the half window around the change)
    assert cal.cv["cloud"] < 0.5 * calibrate(timed, chosen).cv["cloud"]
    case = dataclasses.replace(CASES["chain"], requests=None, duration_s=float(n * 10))
    halves = {}
    for label, c in (("in run", cal), ("around", around)):
        scn = sim_scenario(case, chosen, load_fleet("pi4-wifi-edge-cloud"), calibration=c)
        out = simulate(scn, arrivals=(times, devs),
                       before=lambda sim, c=c: follow_levels(sim, c)).outcome
        ms = (out.done - out.t) * 1000.0
        halves[label] = ms[n // 2 + 15:].mean() - ms[:n // 2 - 15].mean()  # past the window
    assert halves["in run"] == pytest.approx(planned["cloud"], rel=0.1)
    assert abs(halves["around"]) < 0.2 * planned["cloud"]  # the average speed throughout
