"""`--report PATH` on the commands that write results: the page `edgeweave report` would make of
them, written once the results are on disk (in process, typer's CliRunner)."""

from __future__ import annotations

import json

import pytest
import yaml
from test_select_cli import toy_candidates  # noqa: F401 (a fixture)
from typer.testing import CliRunner

from edgeweave.cli import train_cmds
from edgeweave.cli.app import app
from edgeweave.cli.options import OptionError
from helpers import make_profile

runner = CliRunner()


def _kinds(page: str) -> list[str]:
    return [part.split('"', 1)[0] for part in page.split('class="result" data-kind="')[1:]]


@pytest.fixture
def profile_file(tmp_path):
    path = tmp_path / "p.json"
    make_profile([(0.0, 0.0, 0.0), (2.0, 0.1, 0.05)], [16_000, 40], [(0, 1)],
                 [(20.0, 8.0), (100.0, 30.0)]).save(path)
    return path


def test_plan_report_keeps_its_source_beside_it_without_json(tmp_path, profile_file):
    report = tmp_path / "r.html"
    res = runner.invoke(app, ["plan", "--profile", str(profile_file), "--report", str(report)])
    assert res.exit_code == 0, res.output
    source = tmp_path / "r.plan.json"
    assert json.loads(source.read_text())["placement"]  # the page's source, on disk
    assert _kinds(report.read_text()) == ["plan"]
    assert f"report written to {report}" in " ".join(res.output.split())


def test_plan_report_is_made_of_the_json_asked_for(tmp_path, profile_file):
    report, out = tmp_path / "r.html", tmp_path / "mine.json"
    res = runner.invoke(app, ["plan", "--profile", str(profile_file), "--json", str(out),
                              "--report", str(report)])
    assert res.exit_code == 0, res.output
    assert out.exists() and not (tmp_path / "r.plan.json").exists()
    assert str(out) in report.read_text()


def test_report_path_is_checked_before_any_work(tmp_path, profile_file):
    res = runner.invoke(app, ["plan", "--profile", str(profile_file), "--report",
                              str(tmp_path / "no" / "r.html")])
    assert isinstance(res.exception, OptionError)
    assert str(res.exception).startswith("--report: cannot write")


def test_select_report_shows_the_printed_table(tmp_path, toy_candidates):  # noqa: F811
    report = tmp_path / "sel.html"
    res = runner.invoke(app, ["adapt", "select", "--slo-ms", "5", "--report", str(report)],
                        env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "sel.adapt-select.json").read_text())
    assert doc["command"] == "edgeweave adapt select" and doc["chosen"] == "big/little"
    assert [r[0] for r in doc["tables"][0]["rows"]] == ["small", "large", "big/little"]
    page = report.read_text()
    assert _kinds(page) == ["command"] and "edgeweave adapt select" in page


def _experiment(tmp_path, out_dir: bool) -> str:
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "tiny", "model": "logreg:64,10", "rounds": 2, "plot": False,
        "data": {"dataset": "digits", "partition": "iid", "clients": 3},
        "fit": {"lr": 0.5}, **({"out_dir": str(tmp_path / "run")} if out_dir else {})}))
    return str(cfg)


def test_fl_report_without_a_run_folder_is_refused_before_training(tmp_path, monkeypatch):
    def trained(*a, **k):
        raise AssertionError("trained before refusing --report")

    monkeypatch.setattr("edgeweave.train.experiment.run", trained)
    res = runner.invoke(app, ["fl", "run", "--config", _experiment(tmp_path, False),
                              "--report", str(tmp_path / "r.html")])
    assert isinstance(res.exception, OptionError)
    assert "give --out DIR or out_dir in" in str(res.exception)
    token = tmp_path / "tok"
    token.write_text("t" * 32)
    res = runner.invoke(app, ["fl", "server", "--token-file", str(token), "--listen",
                              "127.0.0.1:1", "--report", str(tmp_path / "r.html")])
    assert isinstance(res.exception, OptionError)  # before the port or the folder is taken
    assert str(res.exception).endswith("give --out DIR")
    assert train_cmds.reporting.check_run_folder(None, None, None) is None



#: Commands that write results but no page of them, and why.
NO_PAGE = {"report": "it is the page (--out)", "fl split": "writes the devices' data, not results"}
NOT_YET: set[str] = set()  # commands still to wire (none now)


def _commands(group, prefix=()):
    for name, cmd in group.commands.items():
        if getattr(cmd, "hidden", False):
            continue
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*prefix, name))
        else:
            yield " ".join((*prefix, name)), {o for p in cmd.params for o in p.opts}


def test_every_command_that_writes_results_takes_report():
    from typer.main import get_command

    writers = {name: opts for name, opts in _commands(get_command(app))
               if opts & {"--json", "--out", "--records"} or name == "decentral"}
    assert {"plan", "profile", "infer", "lab", "netlab", "adapt exits", "adapt select",
            "fl run", "fl server", "fl edge", "decentral", "simulate"} <= set(writers)
    missing = sorted(n for n, opts in writers.items() if "--report" not in opts
                     and n not in NO_PAGE and n not in NOT_YET)
    assert missing == []


@pytest.mark.slow  # measures every layer of a model (seconds; tens on a busy host)
def test_profile_report_shows_the_slowest_layers(tmp_path):
    report = tmp_path / "prof.html"
    res = runner.invoke(app, ["profile", "digits-cnn", "--warmup", "0", "--repeats", "1",
                              "--top", "3", "--report", str(report)], env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "prof.profile.json").read_text())
    assert doc["command"] == "edgeweave profile" and doc["model"] == "digits-cnn"
    assert len(doc["tables"][0]["rows"]) == 3 and set(doc["whole_model_ms"]) == {
        "device", "edge", "cloud"}
    assert _kinds(report.read_text()) == ["command"]


def test_split_learning_takes_report_besides_its_own_options(tmp_path):
    """split-learn parses its own options (argparse); the CLI takes --report out of them and
    makes the page of the JSON records the device printed."""
    page = tmp_path / "split.html"
    res = runner.invoke(app, ["split-learn", "device", "--model", "mlp:64,32,32,10", "--cut",
                              "2", "--clients", "2", "--epochs", "1", "--report", str(page)])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "split.split-learn.json").read_text())
    (table,) = doc["tables"]
    assert "test_acc" in table["columns"] and len(table["rows"]) >= 1
    assert "edgeweave split-learn" in page.read_text()
    res = runner.invoke(app, ["split-learn", "device", "--report"])
    assert isinstance(res.exception, OptionError) and "--report" in str(res.exception)
