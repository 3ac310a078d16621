"""Profiler: measurement, Neurosurgeon regression, scaling to tiers, JSON round trip."""

import json

import numpy as np
import pytest

from edgeweave.errors import ProfileError
from edgeweave.graph import capture_spec
from edgeweave.profile import (
    LatencyModel,
    load_profile,
    measure_nodes,
    profile_graph,
    retarget,
)
from edgeweave.profile.regression import Sample, mape
from edgeweave.topology import load_fleet
from helpers import calibration


@pytest.fixture(scope="module")
def digits_profile():
    graph = capture_spec("digits-cnn")
    return profile_graph(graph, load_fleet("pi4-wifi-edge-cloud"), warmup=1, repeats=3,
                         calibration=calibration())


def test_measure_nodes_times_every_node():
    graph = capture_spec("digits-cnn")
    times = measure_nodes(graph, warmup=1, repeats=3)
    assert set(times) == {n.name for n in graph.nodes}
    assert all(t > 0 for name, t in times.items() if name not in graph.placeholders)


def test_regression_recovers_a_linear_law():
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(40):
        flops, inb, outb = rng.uniform(1e6, 1e9), rng.uniform(1e3, 1e6), rng.uniform(1e3, 1e6)
        samples.append(Sample("conv2d", flops, inb, outb, 0.05 + 2e-8 * flops + 1e-7 * outb))
    model = LatencyModel.fit(samples)
    assert mape(model, samples) < 1.0
    assert model.predict("conv2d", 5e8, 1e4, 1e4) == pytest.approx(0.05 + 10 + 1e-3, rel=0.02)


def test_unseen_layer_type_falls_back_to_pooled_fit():
    samples = [Sample("conv2d", f, 1e4, 1e4, 1e-8 * f) for f in (1e6, 1e7, 1e8)]
    model = LatencyModel.fit(samples)
    assert model.predict("gelu", 1e7, 1e4, 1e4) > 0


def test_profile_has_every_tier_and_scales_by_hardware(digits_profile):
    prof = digits_profile
    fleet = load_fleet("pi4-wifi-edge-cloud")
    path = fleet.tier_path()
    assert prof.tiers == ["device", "edge", "cloud"]
    assert set(prof.links) == {"device-edge", "edge-cloud"}
    dev, edge = path.nodes[0].hardware, path.nodes[1].hardware
    for n in prof.nodes:
        if n.op == "placeholder":
            assert n.latency_ms == {"device": 0.0, "edge": 0.0, "cloud": 0.0}
            continue
        overhead_dev = dev.op_overhead_ms if n.flops > 0 else 0.0
        overhead_edge = edge.op_overhead_ms if n.flops > 0 else 0.0
        ratio = (n.latency_ms["device"] - overhead_dev) / (n.latency_ms["edge"] - overhead_edge)
        assert ratio == pytest.approx(edge.gflops / dev.gflops, rel=1e-6)
        assert n.energy_j["device"] == pytest.approx(
            n.latency_ms["device"] * dev.power_compute_w / 1000
        )
    assert prof.device_power.compute_w == dev.power_compute_w
    reg = prof.model_extra["regression"]
    assert reg["heldout_layers"] > 0 and reg["calibration_layers"] > 10


def test_profile_json_round_trip(digits_profile, tmp_path):
    path = tmp_path / "p.json"
    digits_profile.save(path)
    loaded = load_profile(path)
    assert loaded.digest() == digits_profile.digest()
    assert json.loads(path.read_text())["nodes"][1]["latency_ms"]["device"] > 0


def test_retarget_moves_the_profile_to_another_fleet(digits_profile):
    slow = load_fleet("pi3-3g-edge-cloud")
    moved = retarget(digits_profile, slow.tier_path(), slow.name)
    assert moved.fleet == slow.name
    assert moved.links["device-edge"].mbps == pytest.approx(1.1)
    conv = next(n for n in digits_profile.nodes if n.op == "conv2d")
    conv_moved = next(n for n in moved.nodes if n.name == conv.name)
    assert conv_moved.latency_ms["device"] > conv.latency_ms["device"]  # a Pi 3 is slower


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"model": "m"}', "fleet"),
    ],
)
def test_bad_profile_files_name_the_problem(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ProfileError, match=match) as err:
        load_profile(path)
    assert "bad.json" in str(err.value)


def test_profile_with_edge_to_unknown_node_is_rejected(digits_profile, tmp_path):
    doc = digits_profile.to_json()
    doc["edges"].append(["ghost", doc["nodes"][1]["name"]])
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ProfileError, match=r"edges.*ghost"):
        load_profile(path)


def test_missing_profile_file():
    with pytest.raises(ProfileError, match="no such profile"):
        load_profile("/nonexistent/p.json")


def test_bad_measurement_settings_are_rejected():
    graph = capture_spec("digits-cnn")
    with pytest.raises(ProfileError, match="repeats"):
        profile_graph(graph, load_fleet("pi4-wifi-edge-cloud"), repeats=0)
    with pytest.raises(ProfileError, match="latency source"):
        profile_graph(graph, load_fleet("pi4-wifi-edge-cloud"), latency_source="guess")
    with pytest.raises(ProfileError, match="idle_s"):
        profile_graph(graph, load_fleet("pi4-wifi-edge-cloud"), idle_s=-1)


def test_timed_runs_start_after_the_idle_gap(monkeypatch):
    """Each timed run (node pass and whole program) is preceded by the gap; warm-up runs not."""
    from edgeweave.profile import measure as m

    slept = []
    monkeypatch.setattr(m.time, "sleep", slept.append)
    graph = capture_spec("digits-cnn")
    prof = profile_graph(graph, load_fleet("pi4-wifi-edge-cloud"), warmup=2, repeats=3,
                         idle_s=0.04, calibration=calibration())
    assert prof.model_extra["measurement"]["idle_s"] == 0.04
    assert slept.count(0.04) == 2 * 3 and set(slept) == {0.0, 0.04}
