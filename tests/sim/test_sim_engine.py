"""The engine end to end on tiny fleets: a Plan JSON replayed on an unloaded fleet takes exactly
the planner's predicted latency; each policy places requests where it says; every request ends
one way (answered, or failed by mobility, network, capacity or deadline)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sim_helpers import CHAIN3, scenario, toy_plan

from edgeweave.sim.engine import CAPACITY, DEADLINE, MOBILITY, NETWORK, OK, Simulation
from edgeweave.sim.scenario import load_scenario


def one_device(**kw):
    kw.setdefault("populations", [{"name": "pi", "count": 1, "hardware": "rpi4",
                                   "applications": "toy"}])
    return scenario(**kw)


def spaced(n, gap=10.0, devices=1):
    t = np.repeat(np.arange(n) * gap, devices)
    return t + 1.0, np.tile(np.arange(devices), n)


@pytest.mark.parametrize("chain,mbps", [(None, 18.88), (CHAIN3, 18.88), (CHAIN3, 2.0),
                                        (None, 2.0)])
def test_plan_json_replay_equals_the_planners_prediction_on_an_unloaded_fleet(
        tmp_path, chain, mbps):
    kw = {"chain": chain} if chain else {}
    plan = toy_plan(mbps=mbps, **kw)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan.to_json()))
    doc = {"name": "replay", "duration_s": 60, "fleet": "pi4-wifi-edge-cloud",
           "access_points": [{"name": "ap", "edge": "edge", "mbps": mbps, "rtt_ms": 5}],
           "places": [{"name": "lab", "access_point": "ap"}],
           "populations": [{"name": "pi", "count": 1, "hardware": "rpi4",
                            "applications": "toy"}],
           "applications": [{"name": "toy", "plan": "plan.json"}]}
    (tmp_path / "s.yaml").write_text(json.dumps(doc))
    sim = Simulation(load_scenario(tmp_path / "s.yaml"), arrivals=spaced(4))
    out = sim.run()
    assert (out.status == OK).all()
    assert sim.pricing.initial(0, "rpi4", "ap").replay  # the Plan JSON itself
    assert {sim.pricing.works[w].mode for w in out.work} == {plan.mode}
    np.testing.assert_allclose((out.done - out.t) * 1000, plan.predicted["total_ms"],
                               rtol=1e-9)
    assert sim.policy.switches == 0


def test_fixed_policies_place_every_request_where_they_say():
    scn = scenario(duration_s=60)
    modes = {}
    for policy in ("device-only", "edge-only", "cloud-only"):
        sim = Simulation(scn, policy=policy)
        out = sim.run()
        modes[policy] = {sim.pricing.works[w].mode for w in out.work}
        net = out.network_s[out.status == OK]
        assert (net == 0).all() if policy == "device-only" else (net > 0).all()
        if policy == "edge-only":
            assert (out.edge[out.status == OK] == sim.edges.index("edge")).all()
    assert modes == {"device-only": {"device-only"}, "edge-only": {"edge-only"},
                     "cloud-only": {"cloud-only"}}


def test_random_spreads_requests_over_device_edge_and_cloud():
    sim = Simulation(scenario(duration_s=120), policy="random")
    out = sim.run()
    modes = np.array([sim.pricing.works[w].mode for w in out.work])
    shares = [(modes == m).mean() for m in ("device-only", "edge-only", "cloud-only")]
    assert shares == pytest.approx([1 / 3] * 3, abs=0.06)


def two_edges():
    return {"name": "two-edges", "nodes": [
        {"name": "pi", "tier": "device", "hardware": "rpi4"},
        {"name": "e1", "tier": "edge", "hardware": "edge-server"},
        {"name": "e2", "tier": "edge", "hardware": "edge-server"},
        {"name": "cloud", "tier": "cloud", "hardware": "cloud-gpu"}],
        "links": [{"from": "pi", "to": "e1", "mbps": 100, "rtt_ms": 2},
                  {"from": "e1", "to": "e2", "mbps": 1000, "rtt_ms": 1},
                  {"from": "e1", "to": "cloud", "mbps": 100, "rtt_ms": 40},
                  {"from": "e2", "to": "cloud", "mbps": 100, "rtt_ms": 40}]}


def test_least_loaded_sends_work_over_the_man_to_the_idle_edge():
    fleet = two_edges()
    scn = scenario(fleet=fleet, plan=toy_plan(_fleet(fleet)),
                   access_points=[{"name": "ap", "edge": "e1", "mbps": 100, "rtt_ms": 2,
                                   "shared": False}],
                   servers={"edge": {"cores": 1, "slots": 64, "queue": 64}})
    t, d = spaced(1, devices=10)  # ten requests at once
    sim = Simulation(scn, policy="least-loaded", arrivals=(t, d))
    out = sim.run()
    used = [sim.edges[e] for e in out.edge]
    assert (out.status == OK).all()
    assert used.count("e1") == 5 and used.count("e2") == 5  # load balanced by requests/core
    baseline = Simulation(scn, policy="edge-only", arrivals=(t, d)).run()
    assert np.median(out.done - out.t) < np.median(baseline.done - baseline.t)


def _fleet(doc):
    from edgeweave.topology import Fleet
    return Fleet.from_dict(doc)


def test_edgeweave_replans_when_the_link_drops_as_the_runtime_client_does():
    from edgeweave.topology import BandwidthTrace
    step = BandwidthTrace(t_s=[0.0, 30.0, 1e6], mbps=[18.88, 1.0, 1.0])
    scn = one_device(access_points=[{"name": "ap", "edge": "edge", "rtt_ms": 5,
                                     "trace": step, "mbps": 18.88}])
    sim = Simulation(scn, arrivals=spaced(12, gap=5.0))
    out = sim.run()
    modes = [sim.pricing.works[w].mode for w in out.work]
    assert modes[:6] == ["edge-only"] * 6
    assert modes[-1] == "device-only" and sim.policy.switches == 1
    # the first request after the step pays the slow link, the re-plan then avoids it
    assert (out.done - out.t)[6] > 0.9 and (out.done - out.t)[-1] < 0.25


def test_edgeweave_replans_when_its_edge_slows_down_as_the_runtime_client_does():
    """The edge computes 20x slower than its profile: the device's load factor for it (what
    the runtime learns from its replies) leaves the 20% band its plan was made in, and the
    re-plan on that load moves the work off the edge, answering sooner; with adaptation off
    it stays there."""
    modes, switches, ms = {}, {}, {}
    for adapt in (True, False):
        scn = one_device(servers={"edge": {"speed": 0.05}},
                         policy={"name": "edgeweave", "params": {"adapt": adapt}})
        sim = Simulation(scn, arrivals=spaced(12, gap=5.0))
        out = sim.run()
        modes[adapt] = [sim.pricing.works[w].mode for w in out.work]
        switches[adapt] = sim.policy.switches
        ms[adapt] = (out.done - out.t) * 1000.0
    assert modes[False] == ["edge-only"] * 12 and switches[False] == 0
    assert modes[True][0] == "edge-only" and switches[True] == 1
    assert "edge" not in modes[True][-1].split("-"), modes[True]
    assert ms[True][-1] < 0.8 * ms[False][-1]


def test_without_adaptation_the_plan_is_kept():
    from edgeweave.topology import BandwidthTrace
    step = BandwidthTrace(t_s=[0.0, 30.0, 1e6], mbps=[18.88, 1.0, 1.0])
    scn = one_device(access_points=[{"name": "ap", "edge": "edge", "rtt_ms": 5,
                                     "trace": step, "mbps": 18.88}],
                     policy={"name": "edgeweave", "params": {"adapt": False}})
    sim = Simulation(scn, arrivals=spaced(12, gap=5.0))
    sim.run()
    assert sim.policy.switches == 0


def test_a_full_server_refuses_with_a_capacity_failure():
    scn = scenario(servers={"edge": {"cores": 1, "slots": 1, "queue": 1}},
                   access_points=[{"name": "ap", "edge": "edge", "mbps": 1000, "rtt_ms": 0,
                                   "shared": False}])
    sim = Simulation(scn, policy="edge-only", arrivals=spaced(1, devices=5))
    out = sim.run()
    assert sorted(out.status.tolist()) == [OK, OK, CAPACITY, CAPACITY, CAPACITY]


def test_out_of_coverage_offloading_fails_with_network_and_edgeweave_falls_back():
    scn = one_device(places=[{"name": "tunnel", "access_point": None}])
    out = Simulation(scn, policy="edge-only", arrivals=spaced(3)).run()
    assert (out.status == NETWORK).all()
    sim = Simulation(scn, policy="edgeweave", arrivals=spaced(3))
    out = sim.run()
    assert (out.status == OK).all()
    assert {sim.pricing.works[w].mode for w in out.work} == {"device-only"}


def test_an_answer_after_the_device_moved_is_a_mobility_failure():
    scn = one_device(
        access_points=[{"name": "a", "edge": "edge", "mbps": 0.1, "rtt_ms": 5},
                       {"name": "b", "edge": "edge", "mbps": 18.88, "rtt_ms": 5}],
        places=[{"name": "x", "access_point": "a", "dwell_s": 5},
                {"name": "y", "access_point": "b", "dwell_s": 5}],
        duration_s=600)
    sim = Simulation(scn, policy="edge-only")
    out = sim.run()
    moved = np.array([sim.ap_of(d, t1) != a for d, t1, a in
                      zip(out.device, out.done, out.ap, strict=True)])
    answered = np.isin(out.status, [OK, DEADLINE, MOBILITY])
    assert (out.status[answered & moved] == MOBILITY).all()
    assert (out.status[answered & ~moved] != MOBILITY).all()
    assert (out.status == MOBILITY).sum() > 10


def test_answers_past_the_deadline_are_deadline_failures():
    plan = toy_plan()
    scn = one_device(applications=[{"name": "toy", "plan": plan, "interval_s": 2,
                                    "deadline_ms": plan.predicted["total_ms"] * 1.5}],
                     policy="device-only")
    out = Simulation(scn, arrivals=spaced(3)).run()
    assert (out.status == DEADLINE).all()  # device-only takes 200 ms, the deadline ~112


def test_every_request_ends_exactly_one_way():
    sim = Simulation(scenario(duration_s=60, populations=[
        {"name": "pis", "count": 40, "hardware": {"rpi4": 1, "rpi3": 1},
         "applications": "toy"}]), policy="random")
    out = sim.run()
    assert len(out.t) > 500
    assert set(np.unique(out.status)) <= {OK, DEADLINE, MOBILITY, NETWORK, CAPACITY}
    assert np.isfinite(out.done).all() and (out.done >= out.t).all()


def test_a_forwarded_request_holds_its_edge_slot_until_the_reply_comes_back():
    """The runtime's edge keeps a request admitted while the cloud works on it, so with one
    slot the next request waits for the whole edge -> cloud -> edge round trip."""
    plan = toy_plan(chain=CHAIN3)
    assert plan.mode == "device-edge-cloud"
    scn = scenario(plan=plan, servers={"edge": {"cores": 1, "slots": 1, "queue": 4}},
                   access_points=[{"name": "ap", "edge": "edge", "mbps": 18.88, "rtt_ms": 5,
                                   "shared": False}])
    sim = Simulation(scn, arrivals=spaced(1, devices=2))
    out = sim.run()
    assert (out.status == OK).all()
    w = sim.pricing.works[out.work[0]]
    wan = 100e6 / 8  # bytes/s of the fleet's edge-cloud link, rtt 40 ms
    hold = (w.compute_ms[1] + w.compute_ms[2]) / 1000 + 0.04 + (
        w.up_bytes[1] + w.down_bytes[1]) / wan
    first, second = sorted(out.done - out.t)
    assert second - first == pytest.approx(hold, rel=1e-6)


def test_servers_take_their_hardware_cores_and_the_runtime_admission_by_default():
    from edgeweave.runtime.server import NodeConfig

    sim = Simulation(scenario(servers={"cloud": {"cores": 32, "slots": 64}}))
    edge, cloud = sim.world.servers["edge"], sim.world.servers["cloud"]
    defaults = NodeConfig(role="edge", name="edge")
    assert edge.cores == sim.scn.fleet.node("edge").hardware.cores == 4
    assert (edge.slots, edge.queue) == (defaults.max_concurrency, defaults.max_queue)
    assert (cloud.cores, cloud.slots, cloud.queue) == (32, 64, defaults.max_queue)


def test_a_device_answers_one_request_before_it_sends_the_next_as_the_runtime_client():
    plan = toy_plan()
    total = plan.predicted["total_ms"] / 1000.0
    times = np.array([1.0, 1.0 + total / 4, 1.0 + total / 2])  # three within one answer
    arrivals = (times, np.zeros(3, dtype=int))
    app = {"name": "toy", "plan": plan, "interval_s": 2}
    one = Simulation(one_device(applications=[app]), arrivals=arrivals).run()
    assert (one.status == OK).all()
    # each goes out when the previous answer is back, and its wait counts in its time
    np.testing.assert_allclose(one.done, 1.0 + total * np.arange(1, 4), rtol=1e-9)
    free = Simulation(one_device(applications=[{**app, "in_flight": None}]),
                      arrivals=arrivals).run()
    assert (free.status == OK).all()
    assert free.done[0] == one.done[0] and (free.done[1:] < one.done[1:]).all()
    two = Simulation(one_device(applications=[{**app, "in_flight": 2}]),
                     arrivals=arrivals).run()
    assert two.done[1] == free.done[1] < one.done[1] and two.done[2] >= free.done[2]


def test_the_clock_runs_fed_arrivals_in_time_order_with_its_queue():
    """Fed arrivals (`Clock.feed`) interleave with queued calls and simpy processes by time,
    an arrival first at a tie; `run(until)` stops in the same order, and `scheduled` counts
    the fed calls as events."""
    from edgeweave.sim.clock import Clock

    def trace(until=None):
        env, seen = Clock(), []
        env.feed([0.5, 1.0, 2.0, 2.0], lambda i: seen.append((env.now, f"arrival {i}")))
        env.call_at(1.0, lambda a: seen.append((env.now, a)), "call")
        env.call_at(0.2, lambda a: env.call_at(1.5, lambda b: seen.append((env.now, b)), a),
                    "later call")

        def ticker():
            yield env.timeout(0.7)
            seen.append((env.now, "process"))

        env.process(ticker())
        env.run(until)
        return seen, env.scheduled

    seen, events = trace()
    assert seen == [(0.5, "arrival 0"), (0.7, "process"), (1.0, "arrival 1"), (1.0, "call"),
                    (1.5, "later call"), (2.0, "arrival 2"), (2.0, "arrival 3")]
    assert events >= 4 + 3  # four arrivals, three calls (and simpy's own process events)
    assert trace(until=1.6)[0] == seen[:5]
