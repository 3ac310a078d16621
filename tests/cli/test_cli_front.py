"""`edgeweave front cache|filter`: bad settings are one line naming the flag, file and field
before anything trains; good ones reach the scenario; a small `front cache` runs for real."""

from __future__ import annotations

import json
import sys

import pytest
from rich.table import Table

from edgeweave.cli import app as cli_app
from edgeweave.cli.scenarios import filter_processes, input_filter, semantic_cache
from edgeweave.serve.cache.config import CacheConfig


def run_main(args, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["edgeweave", *args])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exit_:
        cli_app.main()
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


@pytest.fixture
def scenarios(monkeypatch):
    """The scenarios replaced by recorders (a bad input must never reach them)."""
    seen: list[object] = []

    def fake(opts, *_a):
        seen.append(opts)
        t = Table(title="fake scenario")
        t.add_column("config")
        t.add_row("row")
        return [t], {"rows": [{"config": "row"}], "note": "fake"}

    monkeypatch.setattr(semantic_cache, "run_scenario", fake)
    monkeypatch.setattr(input_filter, "run_scenario", fake)
    monkeypatch.setattr(filter_processes, "run_processes", fake)
    return seen


@pytest.mark.parametrize(("args", "names"), [
    (["front", "cache", "--cache", "threshold=1.5"],
     "--cache: cache.threshold must be in [0, 1], got 1.5"),
    (["front", "cache", "--cache", "k"], "--cache 'k': expected field=value pairs"),
    (["front", "cache", "--cache", "size=3"], "--cache: cache has unknown field(s) size"),
    (["front", "cache", "--front", "{d}/none.yaml"], "none.yaml: cannot read"),
    (["front", "cache", "--front", "{d}/bad.yaml"], "bad.yaml: cache.threshold must be in [0, 1]"),
    (["front", "cache", "--devices", "0"], "--devices"),
    (["front", "filter", "--occurrence", "1.5"], "--occurrence: expected a fraction in (0, 1)"),
    (["front", "filter", "--filter", "max_fn=2"], "--filter: filter.max_fn must be in [0, 1]"),
    (["front", "filter", "--front", "{d}/cache_only.yaml"], "has no filter section"),
    (["front", "filter", "--processes", "--front", "{d}/cache_only.yaml"],
     "has no filter section"),
    (["front", "filter", "--processes", "--streams", "0"], "--streams"),
    (["front", "filter", "--front", "{d}/bad.yaml"], "bad.yaml: cache.threshold"),
])
def test_bad_settings_are_one_line_naming_them(args, names, tmp_path, scenarios, monkeypatch,
                                               capsys):
    (tmp_path / "bad.yaml").write_text("cache:\n  threshold: 7\n")
    (tmp_path / "cache_only.yaml").write_text("cache: {}\n")
    code, out, err = run_main([a.format(d=tmp_path) for a in args], monkeypatch, capsys)
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err
    assert names in " ".join(err.split()), err
    assert scenarios == []


def test_settings_reach_the_scenarios(tmp_path, scenarios, monkeypatch, capsys):
    front = tmp_path / "front.yaml"
    front.write_text("cache:\n  k: 7\nfilter:\n  positive: [1]\n  max_fn: 0.03\n")
    out_json = tmp_path / "rows.json"
    code, out, _ = run_main(["front", "cache", "--front", str(front), "--cache", "threshold=0.6",
                             "--requests", "20", "--json", str(out_json)], monkeypatch, capsys)
    assert code in (0, None) and "row" in out and "wrote" in out
    assert scenarios[-1].user == CacheConfig(k=7, threshold=0.6)
    assert scenarios[-1].requests == 20
    doc = json.loads(out_json.read_text())
    assert doc["rows"] == [{"config": "row"}] and doc["benchmark"] == "semantic_cache"
    from edgeweave.report import build_report

    report = build_report([out_json])  # `edgeweave report` reads it as the benchmark's
    assert not report.problems and report.sections[0].kind == "benchmark"
    run_main(["front", "filter", "--front", str(front), "--filter", "max_fp=0.004",
              "--occurrence", "0.1", "--occurrence", "0.25"], monkeypatch, capsys)
    opts = scenarios[-1]
    assert (opts.max_fn, opts.max_fp, opts.occurrence) == (0.03, 0.004, (0.1, 0.25))
    assert (opts.frames, opts.streams, opts.epochs) == ((1200, 2400, 2400), 8, 6)
    run_main(["front", "filter", "--processes", "--front", str(front), "--filter",
              "max_fp=0.004", "--frames", "400", "--streams", "3"], monkeypatch, capsys)
    opts = scenarios[-1]  # the same targets; --frames: test frames, half each to learn from
    assert isinstance(opts, filter_processes.Options)
    assert (opts.max_fn, opts.max_fp, opts.learn, opts.test, opts.streams, opts.epochs) == \
        (0.03, 0.004, 200, 400, 3, 2)


@pytest.mark.slow
def test_cache_bench_runs_and_prints_its_rows(tmp_path, monkeypatch, capsys):
    out_json = tmp_path / "rows.json"
    code, out, _ = run_main(["front", "cache", "--devices", "2", "--requests", "30", "--epochs",
                             "1", "--cache", "k=1,radius=0.5", "--json", str(out_json)],
                            monkeypatch, capsys)
    assert code in (0, None) and "two-level" in out
    rows = json.loads(out_json.read_text())["rows"]
    keys = {"config", "hit_rate", "reuse_taken", "agreement", "p50_ms", "p95_ms",
            "p50_ms_no_cache"}
    assert all(keys <= set(r) for r in rows)
    assert rows[-1]["config"].startswith("two-level, your settings (k=1")
    assert all(0 <= r["hit_rate"] <= 1 for r in rows)


def test_the_process_rows_print_in_the_scenario_table_without_a_prediction():
    """A process row has no predicted speedup (it stays on the node): the shared table shows
    `-` there and says when the streams' filters became active; the goal is judged alike."""
    from rich.console import Console

    row = {"streams": 2, "occurrence": 0.1, "fps": 500.0, "fps_reference": 160.0,
           "speedup": 3.125, "accuracy_frame": 0.99, "accuracy_window": 0.95,
           "reach_specialised": 0.2, "reach_reference": 0.1,
           "detail": "learnt after 650-700 frames"}
    input_filter.judge(row)
    assert row["goal_met"] and "prediction_error" not in row
    console = Console(width=250, record=True)
    console.print(input_filter.table([row], "on processes"))
    text = console.export_text()
    assert "learnt after 650-700 frames" in text and "3.12x" in text and "met" in text
    assert " - " in text.splitlines()[-2]  # the predicted and error cells
