"""Federated training on the simulated fleet: a device that leaves its access point before its
upload ends drops out of the round, a device out of coverage is not available, inference load
slows the rounds (and training slows inference), and hierarchical edges train concurrently."""

from __future__ import annotations

import numpy as np
import pytest
from sim_helpers import scenario

from edgeweave.sim.engine import OK, Simulation
from edgeweave.sim.mobility import Timeline
from edgeweave.sim.run import simulate, train_on_fleet

EXPERIMENT = {"model": "mlp:64,16,10", "data": {"dataset": "digits", "clients": 4},
              "strategy": {"name": "fedavg", "fraction": 1.0},
              "fit": {"lr": 0.1, "batch_size": 32, "epochs": 1}, "rounds": 2}


def fleet_scenario(mbps=0.01, edges=("edge", "edge"), fleet="pi4-wifi-edge-cloud", **kw):
    """Four Pis, two access points; a model upload takes ~4 s at 0.01 Mbit/s."""
    from sim_helpers import toy_plan

    from edgeweave.topology import Fleet
    plan = toy_plan(Fleet.from_dict(fleet) if isinstance(fleet, dict) else fleet)
    return scenario(
        duration_s=120, fleet=fleet, plan=plan,
        populations=[{"name": "pis", "count": 4, "hardware": "rpi4", "applications": "toy"}],
        access_points=[{"name": "a", "edge": edges[0], "mbps": mbps, "rtt_ms": 5},
                       {"name": "b", "edge": edges[1], "mbps": mbps, "rtt_ms": 5}],
        places=[{"name": "x", "access_point": "a"}, {"name": "y", "access_point": "b"},
                {"name": "street", "access_point": None}],
        training={"experiment": EXPERIMENT, **kw})


def pin(sim, moves):
    """Replace the drawn itineraries: ``moves[d]`` is device d's [(t, place index), ...]."""
    d = np.concatenate([[dev] * len(m) for dev, m in enumerate(moves)])
    t = np.array([t for m in moves for t, _ in m], dtype=float)
    p = np.array([p for m in moves for _, p in m])
    sim.places = Timeline.build(d, t, p, len(moves))


def test_a_device_that_leaves_before_its_upload_ends_drops_out():
    sim = Simulation(fleet_scenario(), inference=False)
    pin(sim, [[(0, 0), (2.0, 1)], [(0, 0)], [(0, 1)], [(0, 1)]])
    sim.start()
    result = train_on_fleet(sim)
    first = result["rounds"][0]
    assert first["available"] == 4
    assert first["dropped_mobility"] == 1 and first["clients"] == 3
    # in round 2 device 0 is settled at its new place and trains again
    assert result["rounds"][1]["dropped_mobility"] == 0 and result["rounds"][1]["clients"] == 4


def test_a_device_without_coverage_is_not_available():
    sim = Simulation(fleet_scenario(), inference=False)
    pin(sim, [[(0, 2)], [(0, 0)], [(0, 1)], [(0, 1)]])
    sim.start()
    result = train_on_fleet(sim)
    assert [r["available"] for r in result["rounds"]] == [3, 3]
    assert [r["clients"] for r in result["rounds"]] == [3, 3]


def test_clients_sharing_an_access_point_take_turns_uploading():
    def first_round(moves):
        sim = Simulation(fleet_scenario(), inference=False)
        pin(sim, moves)
        sim.start()
        return train_on_fleet(sim)["rounds"][0]["sim_round_s"]

    # one client per access point (two out of coverage): a download, then an upload (d each)
    alone = first_round([[(0, 0)], [(0, 1)], [(0, 2)], [(0, 2)]])
    # three clients on "a": downloads one after another (d, 2d, 3d), each upload right after
    # its download, queued behind the previous upload: the third ends at 4d
    shared = first_round([[(0, 0)], [(0, 0)], [(0, 0)], [(0, 1)]])
    assert shared == pytest.approx(2 * alone, rel=0.05)


def test_inference_and_training_slow_each_other_down():
    scn = fleet_scenario(mbps=4.0)
    exp = scn.training.experiment.model_copy(update={"model": "mlp:64,512,10"})  # 150 kB
    scn = scn.model_copy(update={
        "places": scn.places[:2],  # always covered
        "training": scn.training.model_copy(update={"experiment": exp}),
        "applications": [scn.applications[0].model_copy(
            update={"interval_s": 2.0, "active_s": 100, "idle_s": 0})]})
    quiet = simulate(scn, inference=False).training
    both = simulate(scn, policy="edge-only")
    alone = simulate(scn, policy="edge-only", training=False)
    t_quiet = sum(r["sim_round_s"] for r in quiet["rounds"])
    t_both = sum(r["sim_round_s"] for r in both.training["rounds"])
    assert t_both > 1.1 * t_quiet
    # the same requests (same seed) while the rounds run wait behind model transfers
    assert (alone.outcome.t == both.outcome.t).all()
    during = ((both.outcome.t < both.training["rounds"][-1]["sim_end_s"])
              & (both.outcome.status == OK) & (alone.outcome.status == OK))
    assert during.sum() > 5
    service = [(r.outcome.done - r.outcome.t)[during].mean() for r in (both, alone)]
    assert service[0] > 1.05 * service[1]


def test_hierarchical_edges_train_concurrently_and_report_per_tier_bytes():
    two = {"name": "two-edges", "nodes": [
        {"name": "pi", "tier": "device", "hardware": "rpi4"},
        {"name": "e1", "tier": "edge", "hardware": "edge-server"},
        {"name": "e2", "tier": "edge", "hardware": "edge-server"},
        {"name": "cloud", "tier": "cloud", "hardware": "cloud-gpu"}],
        "links": [{"from": "pi", "to": "e1", "mbps": 18.88, "rtt_ms": 5},
                  {"from": "e1", "to": "cloud", "mbps": 100, "rtt_ms": 40},
                  {"from": "e2", "to": "cloud", "mbps": 100, "rtt_ms": 40}]}
    scn = fleet_scenario(fleet=two, edges=("e1", "e2"), hierarchical={"edge_rounds": 2})
    sim = Simulation(scn, inference=False)
    pin(sim, [[(0, 0)], [(0, 0)], [(0, 1)], [(0, 1)]])
    sim.start()
    result = train_on_fleet(sim)
    assert result["hierarchical"] and result["edge_rounds"] == 2
    first = result["rounds"][0]
    # the cloud's clients are the two edges; 4 devices x 2 edge rounds trained under them
    assert first["clients"] == 2 and first["device_updates"] == 8
    assert first["bytes_up"] > 0 and first["device_edge_up"] > first["bytes_up"]
    # each edge: two edge rounds of two clients taking turns on their access point; the edges
    # run side by side, so the cloud round is one edge's time plus the WAN, not two edges'
    one_edge = 2 * 2 * 4.0
    assert one_edge * 0.9 < first["sim_round_s"] < one_edge * 1.5
