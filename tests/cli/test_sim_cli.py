"""`edgeweave simulate` as a user runs it: a scenario file in, the summary table, JSON with its
format version and per-request records out; a bad file is one clear error, no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "sim"))
from sim_helpers import toy_plan


def run(*args, cwd=None):
    env = {"COLUMNS": "140", "PATH": "/usr/bin:/bin"}
    if "PYTHONPATH" in os.environ:  # run this checkout's code, as the other tests do
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return subprocess.run([sys.executable, "-m", "edgeweave", "simulate", *args],
                          capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


@pytest.fixture
def scenario_file(tmp_path):
    (tmp_path / "plan.json").write_text(json.dumps(toy_plan().to_json()))
    doc = {"name": "tiny", "seed": 2, "duration_s": 60, "fleet": "pi4-wifi-edge-cloud",
           "access_points": [{"name": "ap", "edge": "edge", "mbps": 18.88, "rtt_ms": 5}],
           "places": [{"name": "lab", "access_point": "ap", "dwell_s": 30},
                      {"name": "hall"}],
           "populations": [{"name": "pis", "count": 8, "hardware": "rpi4",
                            "applications": "toy"}],
           "applications": [{"name": "toy", "plan": "plan.json", "interval_s": 2,
                             "deadline_ms": 300}]}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_simulate_prints_the_summary_and_writes_json_and_records(tmp_path, scenario_file):
    out, recs = tmp_path / "run.json", tmp_path / "requests.jsonl"
    page = tmp_path / "sim.html"
    res = run(str(scenario_file), "--devices", "12", "--json", str(out), "--records", str(recs),
              "--report", str(page))
    assert res.returncode == 0, res.stderr
    assert "service time ms" in res.stdout and "12 devices" in res.stdout
    tables = json.loads((tmp_path / "sim.simulate.json").read_text())["tables"]  # --report's
    assert tables[0]["rows"][0][0] == "service time ms"  # the printed summary, on the page
    assert 'data-kind="command"' in page.read_text()
    doc = json.loads(out.read_text())
    assert doc["format_version"] == 1 and doc["kind"] == "edgeweave.sim.run"
    s = doc["summary"]
    assert s["devices"] == 12 and s["policy"] == "edgeweave"
    assert s["served"] + s["failures"]["total"] - s["failures"]["deadline"] == s["requests"]
    lines = recs.read_text().splitlines()
    assert json.loads(lines[0])["format_version"] == 1
    assert len(lines) == s["requests"] + 1
    row = json.loads(lines[1])
    assert {"total_ms", "mode", "status", "network_ms", "server_ms"} <= set(row)


def in_process(monkeypatch, capsys, *args):
    """The command's error path in this process (main() turns EdgeWeaveError into exit 2)."""
    from edgeweave.cli.app import main

    monkeypatch.setattr(sys, "argv", ["edgeweave", "simulate", *args])
    with pytest.raises(SystemExit) as e:
        main()
    return e.value.code, capsys.readouterr().err


def test_a_bad_scenario_is_one_error_naming_the_file_and_field(monkeypatch, capsys,
                                                               scenario_file):
    doc = yaml.safe_load(scenario_file.read_text())
    doc["places"][0]["access_point"] = "ap-nope"
    scenario_file.write_text(yaml.safe_dump(doc))
    code, err = in_process(monkeypatch, capsys, str(scenario_file))
    assert code == 2
    assert "places[0].access_point: unknown access point 'ap-nope'" in " ".join(err.split())


@pytest.mark.parametrize("args,expect", [
    (["--devices", "10,20"], "need --sweep"),
    (["--devices", "ten"], "--devices: expected comma-separated integers"),
    (["--policy", "teleport"], "policy 'teleport' is unknown"),
    (["--duration-s", "-5"], "--duration-s: must be > 0"),
    (["--serial"], "go with --sweep"),
])
def test_flag_errors_name_the_flag(monkeypatch, capsys, scenario_file, args, expect):
    code, err = in_process(monkeypatch, capsys, str(scenario_file), *args)
    assert code == 2 and expect in " ".join(err.split())


@pytest.mark.slow
def test_a_serial_sweep_prints_a_row_per_point_and_plots(tmp_path, scenario_file):
    out, plots = tmp_path / "sweep.json", tmp_path / "plots"
    res = run(str(scenario_file), "--sweep", "--serial", "--devices", "4,8",
              "--policies", "device-only,edge-only", "--json", str(out), "--plots", str(plots))
    assert res.returncode == 0, res.stderr
    doc = json.loads(out.read_text())
    assert doc["kind"] == "edgeweave.sim.sweep" and len(doc["rows"]) == 4
    assert (plots / "sweep.png").stat().st_size > 10_000


def test_plots_on_a_single_run_without_training_says_where_the_figures_come_from(
        monkeypatch, capsys, tmp_path, scenario_file):
    """A single run's only figure is its training's accuracy: asked for plots of a run that
    trains nothing, the command says so (and names --sweep) rather than writing nothing."""
    from edgeweave.cli.app import main

    plots = tmp_path / "plots"
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(sys, "argv", ["edgeweave", "simulate", str(scenario_file),
                                      "--duration-s", "10", "--plots", str(plots)])
    try:
        main()
    except SystemExit as e:
        assert e.code in (0, None)
    out = capsys.readouterr().out
    assert "service time ms" in out
    assert "--plots" in out and "--sweep" in out
    assert not plots.exists() or not any(plots.iterdir())
