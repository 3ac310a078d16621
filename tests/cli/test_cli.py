"""The `edgeweave` command as a user runs it: real subprocesses, real exit codes (a command
that only lists or fails before any work runs in-process through the same entry point)."""

import json
import logging
import os
import subprocess
import sys

import pytest


def run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "edgeweave", *args],
        capture_output=True, text=True, timeout=300, cwd=cwd,
        # PYTHONPATH: a worktree's sources, when the tests run from one
        env={"COLUMNS": "140", "PATH": "/usr/bin:/bin",
             **{k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ}},
    )


def main_in_process(capsys, *args):
    """`edgeweave ARGS` through the real entry point (its error handling included), in this
    process: (exit code, stdout, stderr). For a command that fails before any work: a new
    process would spend seconds importing torch to print one line (test_python_dash_m_works
    and the commands that run keep the real entry point covered)."""
    from edgeweave.cli.app import main

    argv = sys.argv
    sys.argv = ["edgeweave", *args]
    logger = logging.getLogger("edgeweave")  # `serve` adds a handler on this test's stderr
    handlers, level = list(logger.handlers), logger.level
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = argv
        logger.handlers[:] = handlers
        logger.setLevel(level)
    out, err = capsys.readouterr()
    return code, out, err


def test_models_and_fleets_list_the_builtins(capsys):
    code, out, _ = main_in_process(capsys, "models")
    assert code == 0 and "resnet50" in out and "digits-cnn" in out
    code, out, _ = main_in_process(capsys, "fleets")
    assert code == 0 and "pi4-wifi-edge-cloud" in out


@pytest.mark.slow
def test_profile_then_plan_from_the_saved_profile(tmp_path):
    prof = tmp_path / "prof.json"
    res = run("profile", "digits-cnn", "--json", str(prof), "--repeats", "3")
    assert res.returncode == 0, res.stderr
    assert "latency regression" in res.stdout
    out, png = tmp_path / "plan.json", tmp_path / "plan.png"
    res = run("plan", "--profile", str(prof), "--fleet", "pi3-3g-edge-cloud",
              "--objective", "energy", "--slo-ms", "1000", "--json", str(out), "--plot", str(png))
    assert res.returncode == 0, res.stderr
    for mode in ("device-only", "edge-only", "cloud-only", "device-edge", "edge-cloud",
                 "device-edge-cloud", "chosen"):
        assert mode in res.stdout
    doc = json.loads(out.read_text())
    assert doc["fleet"] == "pi3-3g-edge-cloud" and doc["objective"] == "energy"
    assert doc["predicted"]["total_ms"] <= 1000
    assert png.stat().st_size > 1000


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["plan", "digits-cnn", "--fleet", "nope.yaml"], "nope.yaml"),
        (["plan", "no-such-model"], "no-such-model"),
        (["plan", "--profile", "missing.json"], "missing.json"),
        (["plan"], "--profile"),
    ],
)
def test_bad_input_gets_one_clear_line_not_a_traceback(args, expect, tmp_path, monkeypatch,
                                                      capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = main_in_process(capsys, *args)
    assert code == 2
    assert expect in err
    assert "Traceback" not in err + out


def test_bad_fleet_yaml_names_file_and_field(tmp_path, capsys):
    bad = tmp_path / "fleet.yaml"
    bad.write_text(
        "name: f\nnodes:\n  - {name: pi, tier: device, hardware: rpi4}\n"
        "  - {name: e, tier: edge, hardware: edge-server}\n"
        "links:\n  - {from: pi, to: e, mbps: -3, rtt_ms: 5}\n"
    )
    code, out, err = main_in_process(capsys, "plan", "digits-cnn", "--fleet", str(bad))
    assert code == 2
    assert "fleet.yaml" in err and "links[0].mbps" in err
    assert "Traceback" not in err + out


def test_unknown_objective_is_refused_by_the_option_parser(capsys):
    code, _, err = main_in_process(capsys, "plan", "digits-cnn", "--objective", "speed")
    assert code == 2
    assert "speed" in err
