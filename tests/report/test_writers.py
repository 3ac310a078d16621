"""What today's writers produce is what the report reads: each results file records its
format version, and a fresh plan, runtime run, federated run and benchmark JSON all report."""

import json
import sys
from pathlib import Path

import yaml
from rich.table import Table

from edgeweave import formats
from edgeweave.plan import plan
from edgeweave.report import build_report
from edgeweave.runtime.client import Result
from edgeweave.runtime.session import RunSummary
from helpers import make_profile

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


def _plan():
    # a cheap device, a dear edge: splitting after n1 pays at 100 Mbit/s
    prof = make_profile([(0, 0, 0), (1.0, 5.0, 5.0), (40.0, 1.0, 0.5), (5.0, 0.2, 0.1)],
                        [600_000, 2_000, 2_000, 40], [(0, 1), (1, 2), (2, 3)],
                        [(100.0, 1.0), (50.0, 20.0)])
    return plan(prof, "latency")


def _report_one(path):
    report = build_report([path])
    assert not report.problems, report.problems
    (section,) = report.sections
    return section


def test_a_fresh_plan_json_records_its_version_and_reports(tmp_path):
    chosen = _plan()
    doc = chosen.to_json()
    assert doc["format_version"] == formats.PLAN
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(doc))
    sec = _report_one(path)
    assert sec.kind == "plan" and dict(sec.numbers)["chosen mode"] == chosen.mode


def test_a_fresh_runtime_run_json_records_predictions_fallbacks_and_modes(tmp_path):
    chosen = _plan()
    predicted = {"total_ms": 9.0, "device_compute": 1.0, "device-edge_uplink": 6.0}
    results = [Result(None, 10.0, {"device_compute": 1.2, "device-edge_uplink": 7.0},
                      predicted, plan_mode=chosen.mode),
               Result(None, 50.0, {"device_compute": 1.1}, predicted, fallback=True,
                      note="edge in back-off; ran locally", plan_mode=chosen.mode)]
    switch = {"estimate_mbps": 2.0, "load_factors": {}, "old_mode": chosen.mode,
              "new_mode": "device-only", "predicted_old": 90.0, "predicted_new": 40.0,
              "switched": True}
    doc = RunSummary(chosen, results, dilation=3.0, switches=[switch]).to_json()
    assert doc["format_version"] == formats.RUNTIME_RUN
    assert doc["predicted_segments"] == {"device_compute": 1.0, "device-edge_uplink": 6.0}
    assert doc["fallback_notes"] == ["edge in back-off; ran locally"]
    assert doc["per_request_fallback"] == [False, True]
    path = tmp_path / "run.json"
    path.write_text(json.dumps(doc))
    sec = _report_one(path)
    nums = dict(sec.numbers)
    assert sec.kind == "runtime run" and nums["fallbacks"] == "1 of 2" and nums["re-plans"] == "1"
    assert "ran locally" in "".join(sec.html_blocks())


def test_a_fresh_federated_run_records_its_version_and_reports(tmp_path):
    from edgeweave import train

    out = tmp_path / "fl"
    config = {"name": "tiny", "model": "logreg:64,10", "rounds": 2, "dropout": 0.3,
              "data": {"dataset": "digits", "partition": "iid", "clients": 6},
              "strategy": {"name": "fedavg", "fraction": 0.5}, "fit": {"lr": 0.5},
              "plot": False, "out_dir": str(out)}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    records = train.run(path)
    assert json.loads((out / "run.json").read_text())["format_version"] == formats.FL_RUN
    sec = _report_one(out)
    assert sec.title == "Federated run: tiny" and dict(sec.numbers)["rounds"] == "2"
    assert dict(sec.numbers)["final test accuracy"] == f"{records[-1].test_acc:.3g}"


def test_a_benchmark_json_carries_its_printed_tables(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setattr(sys, "argv", ["benchmarks/early_exit.py"])
    from rich.console import Console

    from _zoo import emit

    table = Table(title="exits [dim](this host)[/]")
    for col in ("exit", "accuracy"):
        table.add_column(col)
    table.add_row("[bold]1[/]", "0.912")
    table.add_row("2", "[64,64]")
    emit(Console(), [table], {"epochs": 3}, tmp_path / "b.json")
    doc = json.loads((tmp_path / "b.json").read_text())
    assert doc["format_version"] == formats.BENCHMARK and doc["benchmark"] == "early_exit"
    assert doc["tables"] == [{"title": "exits (this host)", "columns": ["exit", "accuracy"],
                              "rows": [["1", "0.912"], ["2", "[64,64]"]]}]
    sec = _report_one(tmp_path / "b.json")
    assert sec.title == "Benchmark: early_exit" and dict(sec.numbers) == {"epochs": "3"}
