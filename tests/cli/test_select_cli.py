"""`edgeweave adapt select` through typer's CliRunner: the table, the JSON record and clear
errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edgeweave.cli import select_cmds
from edgeweave.cli.app import app
from edgeweave.cli.options import OptionError
from edgeweave.errors import PlanError
from edgeweave.plan import BigLittleCandidate, Candidate
from edgeweave.plan.select import SelectionError
from helpers import make_profile

runner = CliRunner()


def _toy(device_ms: float, params: int):
    return make_profile([(0.0, 0.0, 0.0), (device_ms, 0.1, 0.05)], [16_000, 40], [(0, 1)],
                        [(20.0, 8.0), (100.0, 30.0)], param_bytes=[0, params])


@pytest.fixture
def toy_candidates(monkeypatch):
    """Skip training and profiling: the command's wiring on hand-made candidates."""
    small, large = _toy(2.0, 10_000), _toy(30.0, 4_000_000)
    cands = [Candidate("small", 0.90, small, {"test_accuracy": 0.89, "weights": 2500}),
             Candidate("large", 0.97, large, {"test_accuracy": 0.96, "weights": 10**6}),
             BigLittleCandidate("big/little", 0.965, small, large, 0.2, 0.7, "confidence",
                                {"little": "small", "big": "large", "mode": "confidence",
                                 "calibrated_for": "test"})]
    monkeypatch.setattr(select_cmds, "build_candidates", lambda *a, **k: cands)
    return cands


def test_help_lists_the_constraints():
    res = runner.invoke(app, ["adapt", "select", "--help"])
    assert res.exit_code == 0
    for flag in ("--slo-ms", "--energy-mj", "--device-mem-mb", "--min-acc", "--objective"):
        assert flag in res.output


def test_table_and_json_on_toy_candidates(toy_candidates, tmp_path):
    out = tmp_path / "sel.json"
    res = runner.invoke(app, ["adapt", "select", "--slo-ms", "5", "--json", str(out)],
                        env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    assert "chosen: big/little" in res.output
    assert "latency SLO 5 ms: fastest" in res.output  # why "large" is out
    doc = json.loads(out.read_text())
    assert doc["chosen"] == "big/little" and len(doc["outcomes"]) == 3
    assert set(doc["plans"]) == {"little", "big"}


def test_infeasible_request_prints_the_table_then_names_the_constraint(toy_candidates):
    res = runner.invoke(app, ["adapt", "select", "--slo-ms", "0.5"], env={"COLUMNS": "160"})
    assert isinstance(res.exception, SelectionError)
    assert "tightest is the latency SLO 0.5 ms" in str(res.exception)
    assert "small" in res.output and "large" in res.output  # the table came first


def test_malformed_flags_fail_before_any_training(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("should not train")

    monkeypatch.setattr(select_cmds, "build_candidates", boom)
    res = runner.invoke(app, ["adapt", "select", "--objective", "throughput"])
    assert isinstance(res.exception, PlanError) and "latency or energy" in str(res.exception)
    res = runner.invoke(app, ["adapt", "select", "--slo-ms", "-1"])
    assert isinstance(res.exception, OptionError) and "--slo-ms" in str(res.exception)
    res = runner.invoke(app, ["adapt", "select", "--fleet", "no-such-fleet"])
    assert res.exception is not None and "no-such-fleet" in str(res.exception)


@pytest.mark.slow
def test_real_digits_variants_end_to_end(tmp_path):
    out = tmp_path / "sel.json"
    cmd = ["adapt", "select", "--epochs", "3", "--slo-ms", "100", "--cache",
           str(tmp_path / "cache"), "--json", str(out)]
    res = runner.invoke(app, cmd, env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    again = tmp_path / "again.json"
    res = runner.invoke(app, [*cmd[:-1], str(again)], env={"COLUMNS": "160"})
    assert res.exit_code == 0 and "using the variants and profiles cached" in res.output
    assert json.loads(again.read_text()) == doc  # same fleet: the same choice, nothing re-run
    names = [o["name"] for o in doc["outcomes"]]
    assert {"fp32", "int8-dynamic", "filters-50%", "svd-r16", "big/little"} <= set(names)
    assert any(n.startswith("distilled") for n in names)
    assert doc["chosen"] in names and all(o["feasible"] for o in doc["outcomes"])
    best = max(o["accuracy"] for o in doc["outcomes"])
    assert next(o for o in doc["outcomes"] if o["name"] == doc["chosen"])["accuracy"] == best
    pair = next(o for o in doc["outcomes"] if o["name"] == "big/little")
    assert 0.0 <= pair["escalation_rate"] <= 1.0 and pair["worst_ms"] >= pair["total_ms"]
