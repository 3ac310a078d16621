"""`edgeweave fl run` as a user runs it."""

import json

import yaml
from test_cli import main_in_process, run


def test_train_runs_a_config_and_writes_its_outputs(tmp_path):
    cfg = tmp_path / "exp.yaml"
    out = tmp_path / "out"
    cfg.write_text(yaml.safe_dump({
        "name": "cli-tiny", "model": "logreg:64,10",
        "data": {"dataset": "digits", "partition": "iid", "clients": 4},
        "strategy": {"name": "fedavg"}, "fit": {"lr": 0.5}, "rounds": 5,
    }))
    report = tmp_path / "fl.html"
    res = run("fl", "run", "--config", str(cfg), "--rounds", "2", "--out", str(out),
              "--report", str(report))
    assert res.returncode == 0, res.stderr
    assert "cli-tiny" in res.stdout and "final test accuracy" in res.stdout
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["round"] for s in lines] == [1, 2]
    assert (out / "accuracy.png").exists() and (out / "checkpoint.pt").exists()
    page = report.read_text()  # --report: the page of the run's folder
    assert 'data-kind="federated run"' in page and "cli-tiny" in page


def test_train_names_the_bad_field(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("strategy:\n  name: fedavg\n  fraction: 2\n")
    code, _, err = main_in_process(capsys, "fl", "run", "--config", str(cfg))
    assert code == 2
    assert "bad.yaml" in err and "strategy.fraction" in err


def test_split_learn_device_trains_in_process_and_needs_a_token_for_an_edge(capsys):
    res = run("split-learn", "device", "--model", "mlp:64,16,10", "--cut", "2", "--clients", "3",
              "--epochs", "2", "--codec", "int8")
    assert res.returncode == 0, res.stderr
    lines = [json.loads(s) for s in res.stdout.splitlines() if s.startswith("{")]
    epochs = [x for x in lines if "epoch" in x]
    assert len(epochs) == 2 and epochs[-1]["test_acc"] > 0.3 and epochs[0]["activation_bytes"] > 0
    assert lines[-1]["done"] is True
    code, _, err = main_in_process(capsys, "split-learn", "device", "--edge", "127.0.0.1:1",
                                   "--model", "mlp:64,16,10")
    assert code == 2 and "--token-file" in err


def test_decentral_compares_methods_and_names_a_bad_one(tmp_path, capsys):
    report = tmp_path / "d.html"
    res = run("decentral", "--nodes", "4", "--rounds", "4", "-m", "gosgd", "-m", "param-server",
              "--report", str(report))
    assert res.returncode == 0, res.stderr
    assert "gosgd" in res.stdout and "param-server" in res.stdout and "time model" in res.stdout
    page = report.read_text()  # --report: the printed table, on the page
    assert 'data-kind="command"' in page and "param-server" in page and "time model" in page
    code, _, err = main_in_process(capsys, "decentral", "-m", "bogus", "--nodes", "4",
                                   "--rounds", "2")
    assert code == 2 and "bogus" in err and "gosgd" in err
