"""Every kind of EdgeWeave plan replayed from the JSON its command writes: an Edgent record
(`edgeweave adapt edgent --json`), a model selection record (`edgeweave adapt select --json`), a
multi-device partition (a Plan with ``partition``). On an unloaded fleet each takes exactly the
planner's predicted latency; on a bandwidth drop each re-plans or switches as the runtime's
client does; a file that is none of them fails naming the file and the field."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sim_helpers import CHAIN, toy_profile

from edgeweave.errors import SimError
from edgeweave.plan import BigLittleCandidate, Candidate, select
from edgeweave.plan.edgent import ExitBranch, plan_edgent
from edgeweave.plan.edgent_dynamic import bandwidth_states, build_config_map
from edgeweave.profile import retarget
from edgeweave.sim.cluster import frame_of
from edgeweave.sim.engine import OK, Simulation
from edgeweave.sim.scenario import load_scenario
from edgeweave.sim.summary import summarize
from edgeweave.topology import load_fleet

FLEET = "pi4-wifi-edge-cloud"
#: an early exit: the chain's first conv, then a small head
SHORT = [("input", 0.0, 150_000), ("conv1", 20.0, 400_000), ("pool", 2.0, 8_000),
         ("out0", 0.5, 40)]


def spaced(n, gap=5.0, start=1.0):
    return np.arange(n) * gap + start, np.zeros(n, dtype=int)


def write_scenario(tmp_path, record, mbps=None, trace=None, fleet=FLEET, rtt_ms=5,
                   hardware="rpi4", policy=None):
    (tmp_path / "record.json").write_text(json.dumps(record))
    ap = {"name": "ap", "edge": "edge", "rtt_ms": rtt_ms, "shared": False}
    if mbps is not None:
        ap["mbps"] = mbps
    if trace is not None:
        ap["trace"] = trace
    doc = {"name": "replay", "duration_s": 600, "fleet": fleet, "access_points": [ap],
           "places": [{"name": "lab", "access_point": "ap"}],
           "populations": [{"name": "d", "count": 1, "hardware": hardware,
                            "applications": "app"}],
           "applications": [{"name": "app", "plan": "record.json"}]}
    if policy is not None:
        doc["policy"] = policy
    (tmp_path / "s.yaml").write_text(json.dumps(doc))
    return load_scenario(tmp_path / "s.yaml")


def trace_csv(tmp_path, steps):
    path = tmp_path / "trace.csv"
    path.write_text("t_seconds,mbps\n" + "".join(f"{t},{m}\n" for t, m in steps))
    return path.name


def latency_ms(out):
    return (out.done - out.t) * 1000.0


# ---- Edgent -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def branches():
    fl = load_fleet(FLEET)
    return [ExitBranch(0, 0.8, retarget(toy_profile(SHORT), fl.tier_path(), fl.name)),
            ExitBranch(1, 0.9, retarget(toy_profile(CHAIN), fl.tier_path(), fl.name))]


def edgent_record(branches, slo_ms=150.0, mbps=20.0, samples=(1.0, 400.0)):
    """What `edgeweave adapt edgent --json --trace` writes: the choice and the configuration map,
    with a Plan per configuration. States: [0, 20) planned at 1, [20, inf) at 20 Mbit/s."""
    choice = plan_edgent(branches, slo_ms, mbps)
    cmap = build_config_map(branches, bandwidth_states(samples, 2), slo_ms)
    return {"fleet": FLEET, "net": {"accuracies": [0.8, 0.9]}, **choice.to_json(),
            "config_map": cmap.to_json()}, cmap


def test_edgent_record_replays_the_planners_prediction(tmp_path, branches):
    record, cmap = edgent_record(branches)
    top = cmap.entries[1]
    assert (top.option.exit, top.option.where) == (1, "edge-only")
    # inside the top state (planned at its lowest rate, 20): the record's plan priced at 25
    sim = Simulation(write_scenario(tmp_path, record, mbps=25), arrivals=spaced(4))
    out = sim.run()
    assert (out.status == OK).all()
    at25 = top.plan.priced(top.plan.with_link(top.plan.hop_names()[0], mbps=25))
    np.testing.assert_allclose(latency_ms(out), at25.predicted["total_ms"], rtol=1e-9)
    assert {sim.pricing.works[w].accuracy for w in out.work} == {0.9}
    assert sim.policy.switches == 0


def test_edgent_switches_exit_and_cut_on_a_bandwidth_drop_and_back(tmp_path, branches):
    record, cmap = edgent_record(branches)
    low = cmap.entries[0]
    assert (low.option.exit, low.option.where) == (0, "device-only")
    trace = trace_csv(tmp_path, [(0, 25), (40, 1), (120, 25), (10_000, 25)])
    sim = Simulation(write_scenario(tmp_path, record, trace=trace), arrivals=spaced(40))
    out = sim.run()
    assert (out.status == OK).all()
    works = [sim.pricing.works[w] for w in out.work]
    exits = [w.accuracy for w in works]
    assert exits[:8] == [0.9] * 8  # exit 1 on the edge while the link is fast
    dropped = [i for i, t in enumerate(out.t) if 40 < t < 120 and works[i].mode == "device-only"]
    assert dropped and exits[dropped[0]] == 0.8  # exit 0 on the device after the drop
    np.testing.assert_allclose(latency_ms(out)[dropped], low.plan.predicted["total_ms"],
                               rtol=1e-9)
    assert exits[-1] == 0.9 and works[-1].mode == "edge-only"  # back once probes see 25
    assert sim.policy.switches == 2
    assert 0.8 < summarize(sim, out)["accuracy"] < 0.9  # what the drop cost in accuracy


def test_a_static_edgent_record_replays_its_one_choice(tmp_path, branches):
    choice = plan_edgent(branches, 150.0, 18.88)
    record = {"fleet": FLEET, **choice.to_json()}
    sim = Simulation(write_scenario(tmp_path, record, mbps=18.88), arrivals=spaced(3))
    out = sim.run()
    np.testing.assert_allclose(latency_ms(out), choice.chosen.latency_ms, rtol=1e-9)


# ---- model selection ----------------------------------------------------------------------


def toy(chain, scale=1.0):
    fl = load_fleet(FLEET)
    scaled = [(n, ms * scale, b) for n, ms, b in chain]
    return retarget(toy_profile(scaled), fl.tier_path(), fl.name)


def test_a_selected_variant_replays_and_replans_on_a_bandwidth_drop(tmp_path):
    sel = select([Candidate("fp32", 0.9, toy(CHAIN)), Candidate("int8", 0.85,
                                                                  toy(CHAIN, 0.5))],
                 slo_ms=400.0)
    assert sel.chosen == "fp32"
    chosen = sel.plans["model"]
    assert chosen.mode == "edge-only"
    sim = Simulation(write_scenario(tmp_path, sel.to_json(), mbps=18.88), arrivals=spaced(3))
    out = sim.run()
    np.testing.assert_allclose(latency_ms(out), chosen.predicted["total_ms"], rtol=1e-9)
    assert {sim.pricing.works[w].accuracy for w in out.work} == {0.9}

    trace = trace_csv(tmp_path, [(0, 18.88), (30, 1), (10_000, 1)])
    sim = Simulation(write_scenario(tmp_path, sel.to_json(), mbps=18.88, trace=trace),
                     arrivals=spaced(14))
    out = sim.run()
    modes = [sim.pricing.works[w].mode for w in out.work]
    assert modes[:6] == ["edge-only"] * 6 and modes[-1] == "device-only"
    assert sim.policy.switches == 1


def test_a_big_little_pair_escalates_at_its_rate_to_the_big_models_plan(tmp_path):
    pair = BigLittleCandidate("big/little", 0.95, little=toy(SHORT, 0.2), big=toy(CHAIN),
                              escalation_rate=0.3)
    sel = select([Candidate("fp32", 0.9, toy(CHAIN)), pair], slo_ms=400.0)
    assert sel.chosen == "big/little"
    little_ms = sel.plans["little"].predicted["total_ms"]
    big_ms = sel.plans["big"].predicted["total_ms"]
    sim = Simulation(write_scenario(tmp_path, sel.to_json(), mbps=18.88),
                     arrivals=spaced(400, gap=1.0))
    out = sim.run()
    lat = latency_ms(out)
    escalated = ~np.isclose(lat, little_ms, rtol=1e-9)
    np.testing.assert_allclose(lat[escalated], little_ms + big_ms, rtol=1e-9)
    assert escalated.mean() == pytest.approx(0.3, abs=0.07)
    assert lat.mean() == pytest.approx(sel.outcome("big/little").total_ms, rel=0.1)


# ---- multi-device partitions --------------------------------------------------------------


def cluster_fleet():
    """A gateway Pi and three helpers on a fast shared medium, an edge behind the gateway."""
    return {"name": "quad", "nodes": [
        {"name": "g", "tier": "device", "hardware": "rpi4"},
        {"name": "h1", "tier": "device", "hardware": "rpi4"},
        {"name": "h2", "tier": "device", "hardware": "rpi3"},
        {"name": "h3", "tier": "device", "hardware": "rpi4"},
        {"name": "edge", "tier": "edge", "hardware": "edge-server"}],
        "links": [{"from": "g", "to": "edge", "mbps": 100, "rtt_ms": 5}],
        "clusters": [{"name": "c", "devices": ["g", "h1", "h2", "h3"], "gateway": "g",
                      "medium": {"mbps": 1000, "rtt_ms": 0.5}}]}


@pytest.fixture(scope="module")
def cluster_plans():
    """A conv prefix worth splitting across the cluster, then a heavy head worth sending to
    the edge at 100 Mbit/s (not at 5): planned as fused tiles and as a layer-wise split."""
    import torch
    from torch import nn

    from edgeweave.graph import capture
    from edgeweave.plan.multidevice import plan_cluster
    from edgeweave.profile import analytic_profile
    from edgeweave.topology import Fleet

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(4), nn.Flatten(), nn.Linear(32 * 16 * 16, 4096), nn.ReLU(),
        nn.Linear(4096, 1024), nn.ReLU(), nn.Linear(1024, 10)).eval()
    graph = capture(model, (1, 3, 64, 64), "cluster-cnn")
    fleet = Fleet.from_dict(cluster_fleet())
    prof = analytic_profile(graph, fleet)
    plans = {method: plan_cluster(graph, prof, fleet, methods=(method,), largest_grid=2,
                                  layer_split="biased")  # MoDNN's: the head goes to the edge
             for method in ("fused-tiles", "layer-wise")}
    # rows kept on the devices make the whole model cheaper on the cluster: with a barrier at
    # every split layer, and (the default) each part's interior computed while its halo
    # crosses
    plans["layer-wise-resident"] = plan_cluster(graph, prof, fleet, methods=("layer-wise",),
                                                layer_split="resident")
    plans["layer-wise-overlap"] = plan_cluster(graph, prof, fleet, methods=("layer-wise",))
    # DeeperThings: two fused blocks, one after the other (the second cut from the first's
    # stitched output)
    plans["fused-blocks"] = plan_cluster(graph, prof, fleet, methods=("fused-tiles",),
                                         blocks=[(1, (2, 2), False), (2, (2, 1), False)])
    return plans


@pytest.mark.parametrize("method", ["fused-tiles", "layer-wise", "fused-blocks",
                                    "layer-wise-resident", "layer-wise-overlap"])
def test_a_partition_replays_its_predicted_latency(tmp_path, cluster_plans, method):
    plan = cluster_plans[method]
    resident = method in ("layer-wise-resident", "layer-wise-overlap")
    overlap = method == "layer-wise-overlap"
    method = {"fused-blocks": "fused-tiles", "layer-wise-resident": "layer-wise",
              "layer-wise-overlap": "layer-wise"}.get(method, method)
    assert plan.partition.method == method
    if resident:  # halo rows only between its split layers; the head stays on the cluster
        assert any(la.resident for la in plan.partition.layers)
        assert plan.partition.rest_mode == "device-only"
    else:
        assert "edge" in plan.partition.rest_mode
    if overlap:  # its run of resident layers is one group of steps, edges after the halo
        part = plan.partition
        assert part.layer_split == "overlap"
        steps = [st for la in part.layers for st in la.steps]
        assert any(st.after for st in steps)
        frame = frame_of(part)
        assert len(frame.groups) < len(part.layers)
        assert sum(len(t.after) for g in frame.groups for t in g) == sum(
            len(st.after) for st in steps)
    scn = write_scenario(tmp_path, plan.to_json(), mbps=100, fleet=cluster_fleet())
    sim = Simulation(scn, arrivals=spaced(3))
    out = sim.run()
    assert (out.status == OK).all()
    np.testing.assert_allclose(latency_ms(out), plan.predicted["total_ms"], rtol=1e-9)
    rest = "device-only" if resident else "device-edge"
    assert {sim.pricing.works[w].mode for w in out.work} == {f"{method} + {rest}"}


def test_an_overlapped_step_waiting_outside_its_run_is_refused(cluster_plans):
    part = cluster_plans["layer-wise-overlap"].partition
    k = next(k for k, la in enumerate(part.layers) if any(st.after for st in la.steps))
    la = part.layers[k]
    steps = [st.model_copy(update={"after": [(len(part.layers), 0)]}) if st.after else st
             for st in la.steps]
    layers = [*part.layers[:k], la.model_copy(update={"steps": steps}), *part.layers[k + 1:]]
    with pytest.raises(SimError, match=rf"partition.layers\[{k}\].steps: a step waits for"):
        frame_of(part.model_copy(update={"layers": layers}))


def test_a_partition_replans_the_rest_on_a_bandwidth_drop(tmp_path, cluster_plans):
    plan = cluster_plans["fused-tiles"]
    trace = trace_csv(tmp_path, [(0, 100), (30, 5), (10_000, 5)])
    sim = Simulation(write_scenario(tmp_path, plan.to_json(), mbps=100, trace=trace,
                                    fleet=cluster_fleet()), arrivals=spaced(14))
    out = sim.run()
    modes = [sim.pricing.works[w].mode for w in out.work]
    assert modes[:6] == ["fused-tiles + device-edge"] * 6
    assert modes[-1] == "fused-tiles + device-only" and sim.policy.switches == 1
    # the frame is still the cluster's: the rest on the gateway is what moved
    frame_ms = plan.partition.predicted["cluster_ms"]
    assert latency_ms(out)[-1] > frame_ms


def test_frames_of_one_cluster_share_its_medium_and_devices(tmp_path, cluster_plans):
    plan = cluster_plans["fused-tiles"]
    scn = write_scenario(tmp_path, plan.to_json(), mbps=100, fleet=cluster_fleet())
    alone = Simulation(scn, arrivals=spaced(1)).run()
    both = Simulation(scn, arrivals=(np.array([1.0, 1.0]), np.array([0, 0]))).run()
    assert latency_ms(both).max() > latency_ms(alone).max() + 1.0


# ---- what a scenario refuses ---------------------------------------------------------------


def test_an_edgent_record_without_plans_names_the_field(tmp_path, branches):
    record, _ = edgent_record(branches)
    for state in record["config_map"]["states"]:
        del state["plan"]
    with pytest.raises(SimError, match=r"record\.json: .*config_map\.states\[0\]: missing plan "
                                       r"\(written by an older EdgeWeave"):
        write_scenario(tmp_path, record, mbps=20)


def test_a_selection_without_a_choice_and_a_stranger_file_are_refused(tmp_path):
    sel = select([Candidate("fp32", 0.9, toy(CHAIN))], slo_ms=400.0).to_json()
    sel["chosen"] = None
    with pytest.raises(SimError, match=r"s\.yaml: applications\[0\]\.plan: .*record\.json: "
                                       r"chosen: null"):
        write_scenario(tmp_path, sel, mbps=18.88)
    with pytest.raises(SimError, match=r"not a Plan JSON .* an Edgent record .* model selection"):
        write_scenario(tmp_path, {"hello": 1}, mbps=18.88)
