"""`edgeweave distribute`'s bad input: exit code 2, one line naming the flag, file, model or
device at fault, no traceback; when the input alone shows the problem, nothing is profiled or
started first (profiling is a tripwire there)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

from edgeweave.cli import app as cli_app
from edgeweave.profile import analytic_profile

TINY = """name: tiny
nodes:
  - {name: a, tier: device, hardware: rpi4}
  - {name: b, tier: device, hardware: rpi3}
clusters:
  - name: ab
    devices: [a, b]
    medium: {mbps: 100, rtt_ms: 1}
    memory_mb: {a: 0.01, b: 0.01}
"""
MLP = """import torch.nn as nn

def make():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), (1, 1, 8, 8)
"""

# (args, what the error names, whether the problem shows before profiling)
CASES: list[tuple[list[str], str, bool]] = [
    (["digits-cnn", "--devices", "pi4-0,zz"], "--devices: unknown device 'zz'", True),
    (["digits-cnn", "--sources", "nope"], "--sources: unknown device 'nope'", True),
    (["digits-cnn", "--devices", "pi4-0", "--sources", "pi3-0"], "unknown device 'pi3-0'",
     True),
    (["digits-cnn", "--cluster", "nope"], "no cluster named 'nope'", True),
    (["digits-cnn", "--fleet", "pi4-wifi-edge-cloud"], "has no clusters", True),
    (["digits-cnn", "--grid", "3"], "--grid: expected ROWSxCOLS", True),
    (["digits-cnn", "--grid", "0x2"], "--grid", True),
    (["digits-cnn", "--depth", "1", "--grid", "99x99"],
     "grid 99x99 is larger than the 8x8 output feature map", True),
    (["digits-cnn", "--depth", "99"], "fused depth 99 is not available", True),
    (["digits-cnn", "--method", "layer-wise", "--grid", "2x2"], "--method layer-wise", True),
    (["{d}/mlp.py:make", "--method", "fused-tiles"], "has no fusable prefix", True),
    (["no-such-model"], "no-such-model", True),
    (["digits-cnn", "--scheduler", "fifo"], "--scheduler", True),
    (["digits-cnn", "--input-codec", "zstd"], "--input-codec", True),
    (["digits-cnn", "--frames", "0"], "--frames", True),
    (["digits-cnn", "--mbps", "nan"], "--mbps", True),
    (["digits-cnn", "--json", "{d}/no/x.json"], "--json: cannot write", True),
    (["digits-cnn", "--layer-devices", "0"], "--layer-devices", True),
    (["digits-cnn", "--layer-devices", "9"], "--layer-devices 9: expected 1 to 6", True),
    (["digits-cnn", "--devices", "pi4-0,pi4-1", "--layer-devices", "3"],
     "--layer-devices 3: expected 1 to 2", True),
    (["digits-cnn", "--layer-devices", "2", "--method", "fused-tiles"],
     "--layer-devices 2 applies to layer-wise plans", True),
    (["digits-cnn", "--layer-split", "diagonal"], "--layer-split", True),
    (["digits-cnn", "--layer-split", "resident", "--method", "fused-tiles"],
     "--layer-split resident applies to layer-wise plans", True),
    (["digits-cnn", "--time-scale", "0.5"], "--time-scale: expected auto or a number", True),
    (["digits-cnn", "--time-scale", "fast"], "--time-scale: expected auto or a number", True),
    (["digits-cnn", "--time-scale", "inf"], "--time-scale", True),
    (["digits-cnn", "--gather-at-source", "--scheduler", "sharing"],
     "--gather-at-source applies to --scheduler stealing", True),
    (["digits-cnn", "--gather-at-source", "--method", "layer-wise"],
     "--gather-at-source applies to fused tiles", True),
    (["digits-cnn", "--calibrate", "-1"], "--calibrate", True),
    (["digits-cnn", "--in-flight", "0"], "--in-flight 0: expected a whole number of frames "
     "from 1 to 16", True),
    (["digits-cnn", "--in-flight", "17"], "--in-flight 17: expected", True),
    (["digits-cnn", "--max-blocks", "0"], "--max-blocks: expected an integer in [1, 8]", True),
    (["digits-cnn", "--max-blocks", "9"], "--max-blocks: expected an integer in [1, 8]", True),
    (["digits-cnn", "--no-gateway-tiles", "--method", "layer-wise"],
     "--no-gateway-tiles applies to fused tiles", True),
    (["digits-cnn", "--no-gateway-tiles", "--devices", "pi4-0"],
     "--no-gateway-tiles: cluster 'pis' has no device besides its gateway 'pi4-0'", True),
    (["digits-cnn", "--grid", "99x99"], "grid 99x99 is larger than", False),
    (["digits-cnn", "--fleet", "{d}/tiny.yaml", "--method", "fused-tiles"],
     "the gateway 'a' would exceed its memory limit 0.01 MiB", False),
    (["digits-cnn", "--fleet", "{d}/roomy-gateway.yaml", "--method", "fused-tiles"],
     "no device can hold tile", False),
    (["digits-cnn", "--fleet", "{d}/tiny.yaml"], "memory limit", False),
]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("distribute")
    (d / "tiny.yaml").write_text(TINY)
    (d / "roomy-gateway.yaml").write_text(TINY.replace("{a: 0.01, b: 0.01}",
                                                       "{a: 0.14, b: 0.01}"))
    (d / "mlp.py").write_text(MLP)
    return d


@pytest.fixture
def profiling(monkeypatch):
    """Profiling replaced: a tripwire, or the analytic profile (planning needs one)."""
    profile = importlib.import_module("edgeweave.profile")
    importlib.import_module("edgeweave.runtime.cluster.session")

    def tripwire(*a, **k):
        raise AssertionError("bad input reached profiling")

    def analytic(graph, fleet, device=None, *a, **k):
        return analytic_profile(graph, fleet, device)

    def use(allowed: bool) -> None:
        monkeypatch.setattr(profile, "profile_graph", analytic if allowed else tripwire)

    return use


@pytest.mark.parametrize(("args", "names", "early"), CASES,
                         ids=[" ".join(a) for a, _, _ in CASES])
def test_bad_input_is_one_line_naming_it(args, names, early, scratch, profiling, monkeypatch,
                                         capsys):
    profiling(not early)
    argv = ["edgeweave", "distribute", *(a.format(d=scratch) for a in args)]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exit_:
        cli_app.main()
    out, err = capsys.readouterr()
    assert exit_.value.code == 2, (out, err)
    assert "Traceback" not in out + err
    assert names in err, err
    if err.startswith("error:"):
        assert len(err.strip().splitlines()) == 1, err
    else:
        assert "Invalid value" in err, err


class _Stop(Exception):
    """Raised by the replaced run: the command planned and got as far as running."""


def _run_call(monkeypatch, args: list[str]) -> dict:
    """Run `edgeweave distribute ARGS` with the run itself replaced (no processes): the plan
    and the keyword arguments it would have run with."""
    session = importlib.import_module("edgeweave.runtime.cluster.session")
    seen: dict = {}

    def run_cluster(graph, plan, *a, **k):
        seen.update(k, plan=plan)
        raise _Stop

    monkeypatch.setattr(session, "run_cluster", run_cluster)
    monkeypatch.setattr(sys, "argv", ["edgeweave", "distribute", *args])
    with pytest.raises(_Stop):
        cli_app.main()
    return seen


def test_layer_devices_and_time_scale_reach_the_plan_and_the_run(profiling, monkeypatch,
                                                                capsys):
    """--layer-devices pins how many devices the layer-wise plan splits across; --time-scale
    is the slow-motion factor the run is played at (the run itself replaced: no processes)."""
    profiling(True)
    seen = _run_call(monkeypatch, ["digits-cnn", "--method", "layer-wise", "--layer-devices",
                                   "3", "--time-scale", "2.5", "--mbps", "1000"])
    part = seen["plan"].partition
    assert part.method == "layer-wise" and seen["time_scale"] == 2.5
    assert {len(layer.devices) for layer in part.layers} == {3}


@pytest.mark.parametrize("split", [None, "overlap", "resident"])
def test_layer_split_reaches_the_plan(profiling, monkeypatch, split):
    """--layer-split picks how layer-wise cuts its layers; by default rows kept on the
    devices, each part's interior computed while its halo crosses (``overlap``: the plan's
    layers carry their steps)."""
    profiling(True)
    flag = [] if split is None else ["--layer-split", split]
    seen = _run_call(monkeypatch, ["digits-cnn", "--method", "layer-wise", "--layer-devices",
                                   "3", "--mbps", "1000", *flag])
    part = seen["plan"].partition
    assert part.layer_split == (split or "overlap")
    assert any(la.steps for la in part.layers) == (part.layer_split == "overlap")


def test_gather_at_source_and_calibrate_reach_the_run(profiling, monkeypatch, capsys):
    """--gather-at-source, --calibrate and --in-flight are handed to the run (the run itself
    replaced: no processes); with the rest of the model on the edge or cloud,
    --gather-at-source is one clear error (only the gateway deploys the rest there)."""
    profiling(True)
    seen = _run_call(monkeypatch, ["digits-cnn", "--method", "fused-tiles", "--grid", "2x2",
                                   "--sources", "pi4-0,pi4-1", "--gather-at-source",
                                   "--calibrate", "2", "--in-flight", "3"])
    assert seen["gather_at_source"] is True and seen["calibrate"] == 2
    assert seen["in_flight"] == 3
    remote = seen["plan"].model_copy(update={"placement": {
        **seen["plan"].placement, next(iter(seen["plan"].placement)): "edge"}})
    session = importlib.import_module("edgeweave.runtime.cluster.session")
    monkeypatch.setattr(session, "plan_emulated", lambda *a, **k: remote)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        cli_app.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert "--gather-at-source: the plan runs the rest of the model on the edge" in err, err


def test_the_run_is_calibrated_unless_told_not_to(profiling, monkeypatch):
    """By default the workers compute three dummy frames and the plan is priced again from
    them (the profile alone misses how this host runs the emulated devices); --calibrate 0
    keeps the profile's prediction."""
    profiling(True)
    split = ["digits-cnn", "--method", "fused-tiles", "--grid", "2x2"]
    assert _run_call(monkeypatch, split)["calibrate"] == 3
    assert _run_call(monkeypatch, [*split, "--calibrate", "0"])["calibrate"] == 0


def test_a_throughput_plan_is_priced_for_every_source_frames_in_flight(profiling, monkeypatch):
    """Two sources with two frames in flight each keep four in the system: with --objective
    throughput the plan is priced as work stealing across four frames from those two sources,
    and a calibrated plan would be priced again from the same (Partition.sources)."""
    profiling(True)
    seen = _run_call(monkeypatch, ["digits-cnn", "--method", "fused-tiles", "--objective",
                                   "throughput", "--sources", "pi4-0,pi4-1", "--in-flight",
                                   "2", "--mbps", "1000"])
    part = seen["plan"].partition
    assert seen["in_flight"] == 2 and seen["sources"] == ["pi4-0", "pi4-1"]
    assert part.scheduler == "stealing" and part.in_flight == 4
    assert part.sources == ["pi4-0", "pi4-1"] and part.stealers
    assert any("the frames from pi4-0, pi4-1" in n for n in part.search["notes"])
    latency = _run_call(monkeypatch, ["digits-cnn", "--method", "fused-tiles", "--sources",
                                      "pi4-0,pi4-1", "--mbps", "1000"])["plan"].partition
    assert latency.in_flight == 1 and latency.sources == []


@pytest.mark.slow
def test_distribute_runs_the_plan_on_worker_processes(tmp_path, monkeypatch, capsys):
    """digits-cnn across three devices of the pi-cluster: the partition, each device's work
    with its dilation, predicted and measured latency; every frame answered, with two in
    flight (the next sent once the last's tiles were taken)."""
    out = tmp_path / "run.json"
    argv = ["edgeweave", "distribute", "digits-cnn", "--devices", "pi4-0,pi4-1,pi3-0",
            "--method", "fused-tiles", "--grid", "2x2", "--frames", "2", "--repeats", "1",
            "--calibrate", "1", "--in-flight", "2", "--json", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exit_:
        cli_app.main()
    text = capsys.readouterr().out
    assert exit_.value.code in (0, None), text
    assert "fused-tiles fused depth" in text and "grid 2x2" in text
    assert "dilation" in text and "rpi3" in text
    assert "latency: predicted" in text and "measured" in text
    doc = json.loads(out.read_text())
    run = doc["run"]
    assert run["frames"] == 2 and run["method"] == "fused-tiles" and run["devices"] == 3
    assert run["in_flight"] == 2 and "(2 frames in flight per source)" in text
    assert run["prefetch"] == 0 and run["gather_at_source"] is False  # what the forecast took
    # two frames in the system: the run forecast by its own scheduler, every tile placed
    loaded = doc["loaded_prediction"]
    assert loaded["frames_in_system"] == 2 and "simulated clock" in loaded["predicted_basis"]
    assert sum(loaded["predicted_tasks_per_frame"].values()) == pytest.approx(4)
    assert "forecast with them by the run's own scheduler" in text
    # a worker for each device the plan gives tiles (and the gateway), dilated to its hardware
    dilations = run["dilations"]
    assert set(run["workers"]) == set(dilations) and dilations["pi4-0"] >= 1.0
    assert all(dilations[n] > dilations["pi4-0"] for n in dilations if n.startswith("pi3"))
    # priced again from one dummy frame on the same workers before the measured ones
    assert "calibrated on 1 dummy frame" in text
    calibration = run["calibration"]
    assert calibration["frames"] == 1 and calibration["tasks"] >= 4
    assert set(calibration["compute_scale"]) == {"pi4-0", "pi4-1", "pi3-0"}
    assert all(k > 0 for k in calibration["compute_scale"].values())
    assert run["uncalibrated_predicted_ms"] > 0 and run["predicted_ms"] > 0


def test_max_blocks_reaches_the_plan(profiling, monkeypatch):
    """--max-blocks bounds DeeperThings' consecutive fused blocks."""
    profiling(True)
    seen = _run_call(monkeypatch, ["digits-cnn", "--method", "fused-tiles", "--max-blocks",
                                   "2", "--mbps", "1000"])
    part = seen["plan"].partition
    assert len(part.stages()) <= 2 and part.search["blocks"]["max_blocks"] == 2


def test_no_gateway_tiles_reaches_the_plan(profiling, monkeypatch):
    """--no-gateway-tiles (DeepThings' gateway role) plans fused tiles with none on the
    gateway."""
    profiling(True)
    seen = _run_call(monkeypatch, ["digits-cnn", "--no-gateway-tiles", "--objective",
                                   "throughput", "--mbps", "1000"])
    part = seen["plan"].partition
    assert part.method == "fused-tiles" and not part.gateway_tiles
    assert part.gateway not in {t.device for t in part.all_tiles()}
