"""Experiment YAML: validation that names the file and field, the examples, and train.run."""

import json
from pathlib import Path

import pytest
import yaml

import edgeweave.train as train
from edgeweave.train.config import load_config, parse_config
from edgeweave.train.experiment import client_speeds
from edgeweave.train.types import TrainError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "fl"


def _write(tmp_path, doc) -> Path:
    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


@pytest.mark.parametrize("name", ["digits-fedavg.yaml", "digits-fedprox.yaml", "digits-dgc.yaml",
                                  "digits-dp.yaml", "digits-secagg.yaml",
                                  "digits-byzantine.yaml"])
def test_examples_validate(name):
    cfg = load_config(EXAMPLES / name)
    assert cfg.data.dataset == "digits" and cfg.rounds >= 1


def test_defaults_and_strategy_params():
    cfg = parse_config({"strategy": {"name": "fedprox", "params": {"mu": 0.3}}, "seed": 4})
    assert cfg.backend == "sequential" and cfg.model == "mlp:64,64,10"
    from edgeweave.train.config import build_strategy

    s = build_strategy(cfg)
    assert s.fit_config.prox_mu == 0.3 and s.fit_config.seed == 4


@pytest.mark.parametrize(("doc", "field", "why"), [
    ({"rounds": 0}, "rounds", "greater than or equal to 1"),
    ({"fit": {"lr": -1}}, "fit.lr", "greater than 0"),
    ({"fit": {"learning_rate": 0.1}}, "fit.learning_rate", "unexpected field"),
    ({"dropout": 1.5}, "dropout", "less than 1"),
    ({"backend": "gpu"}, "backend", "sequential"),
    ({"speeds": {"upload_s": [2, 1]}}, "speeds.upload_s", "low <= high"),
    ({"strategy": {"name": "fedbogus"}}, "strategy", "unknown; known"),
    ({"strategy": {"name": "fedavgm", "params": {"beta": 0.9}}}, "strategy", "accepted"),
    ({"model": "resnet9000"}, "model", "unknown kind"),
])
def test_errors_name_the_file_and_field(tmp_path, doc, field, why):
    path = _write(tmp_path, doc)
    with pytest.raises(TrainError) as e:
        load_config(path)
    msg = str(e.value)
    assert msg.startswith(str(path)) and f"{field}:" in msg and why in msg


def test_unreadable_and_non_mapping_files(tmp_path):
    with pytest.raises(TrainError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    p = tmp_path / "list.yaml"
    p.write_text("- 1\n- 2\n")
    with pytest.raises(TrainError, match="expected a mapping"):
        load_config(p)
    p.write_text("rounds: [1\n")
    with pytest.raises(TrainError, match="not valid YAML"):
        load_config(p)


def test_client_speeds_are_seeded_and_in_range():
    cfg = parse_config({"speeds": {"compute_s_per_epoch": [1, 3], "upload_s": [0.5, 0.5]}})
    compute, upload = client_speeds(cfg, 50)
    assert all(1 <= c <= 3 for c in compute) and upload == [0.5] * 50
    assert client_speeds(cfg, 50) == (compute, upload)
    assert client_speeds(parse_config({}), 5) is None


def test_run_writes_metrics_checkpoint_plot_and_resumes(tmp_path):
    out = tmp_path / "out"
    doc = {"name": "tiny", "model": "logreg:64,10",
           "data": {"dataset": "digits", "partition": "iid", "clients": 6},
           "strategy": {"name": "fedavg", "fraction": 0.5}, "fit": {"lr": 0.5},
           "rounds": 2, "dropout": 0.3, "out_dir": str(out)}
    seen = []
    records = train.run(_write(tmp_path, doc), progress=seen.append)
    assert [r.round for r in records] == [1, 2] and seen == records
    assert records[-1].test_acc > 0.2
    for name in ("metrics.jsonl", "checkpoint.pt", "accuracy.png", "run.json"):
        assert (out / name).stat().st_size > 0
    info = json.loads((out / "run.json").read_text())
    assert info["config"]["seed"] == 0 and info["backend"] == "sequential" and info["torch"]
    # the same experiment with more rounds continues from round 2
    more = train.run(dict(doc, rounds=3))
    assert [r.round for r in more] == [1, 2, 3]
    assert more[0].wall_s == pytest.approx(records[0].wall_s)


def test_data_errors_name_the_config_file(tmp_path):
    path = _write(tmp_path, {"data": {"dataset": "npz:" + str(tmp_path / "nope.npz")}})
    with pytest.raises(TrainError) as e:
        train.run(path)
    assert str(e.value).startswith(f"{path}: data: ") and "nope.npz" in str(e.value)


def test_ray_backend_gets_the_cluster_address_dropout_and_speeds(monkeypatch):
    """backend ray takes ray_address and simulates dropout and speeds like the other backends
    (the real cluster run is tests/train/test_ray_cluster.py); ray_address elsewhere is refused."""
    from edgeweave.train.backends import ray_backend
    from edgeweave.train.data import make_task
    from edgeweave.train.experiment import build_backend

    got = {}
    monkeypatch.setattr(ray_backend, "RayBackend", lambda task, **kw: got.update(kw) or "ray")
    task = make_task("digits", "iid", 4, "mlp:64,64,10", 0)
    doc = {"backend": "ray", "dropout": 0.3, "seed": 4, "ray_address": "head:6379",
           "speeds": {"compute_s_per_epoch": [1, 2]}}
    assert build_backend(parse_config(doc), task) == "ray"
    assert got["address"] == "head:6379" and got["drop_prob"] == 0.3 and got["seed"] == 4
    assert len(got["compute_s_per_epoch"]) == 4 and got["upload_s"] == [0.0] * 4
    with pytest.raises(TrainError, match="ray_address: only backend 'ray'"):
        build_backend(parse_config({"backend": "vectorized", "ray_address": "auto"}), task)
    with pytest.raises(TrainError, match="ray_address"):
        parse_config({"backend": "ray", "ray_address": ""})


# ---- issue 6: codecs, privacy, secure aggregation and attacks from the same YAML ----------

SMALL = {"model": "mlp:64,16,10", "data": {"clients": 10}, "rounds": 2}


@pytest.mark.parametrize(("doc", "field"), [
    ({"up_codec": "topk:2"}, "up_codec"),
    ({"down_codec": "nope"}, "down_codec"),
    ({"privacy": {"dp_fedavg": {"clip": 1.0}}}, "exactly one of noise_multiplier"),
    ({"privacy": {"dp_fedavg": {"noise_multiplier": 1, "target_epsilon": 2}}},
     "exactly one of noise_multiplier"),
    ({"secure_aggregation": {}, "strategy": {"name": "krum"}}, "secure_aggregation"),
    ({"secure_aggregation": {"active": "maybe"}}, "secure_aggregation.active"),
    ({"attack": {"kind": "bribe"}}, "attack.kind"),
])
def test_issue6_sections_are_checked_before_training(doc, field):
    with pytest.raises(TrainError, match=field):
        parse_config({**SMALL, **doc}, "exp.yaml")


def test_dp_fedavg_target_epsilon_is_spent_exactly_by_the_last_round():
    recs = train.run({**SMALL, "privacy": {"dp_fedavg": {"clip": 1.0, "target_epsilon": 4,
                                                         "sample_rate": 0.5}}})
    eps = [r.extra["dp_epsilon"] for r in recs]
    assert eps[0] < eps[1] and eps[1] == pytest.approx(4, rel=0.01)


def test_secure_aggregation_and_attacks_run_from_the_config():
    recs = train.run({**SMALL, "secure_aggregation": {"k": 4, "dropout": 0.2}})
    assert recs[-1].extra["secagg_dropped"] == 2 and recs[-1].clients == 10
    active = train.run({**SMALL, "secure_aggregation": {"active": True}})
    assert active[-1].extra["secagg_active"] is True and active[-1].clients == 10
    from edgeweave.train.byzantine import ByzantineBackend
    from edgeweave.train.experiment import build_backend, build_task

    cfg = parse_config({**SMALL, "attack": {"kind": "noise", "fraction": 0.3},
                        "strategy": {"name": "fedmedian"}})
    backend = build_backend(cfg, build_task(cfg))
    assert isinstance(backend, ByzantineBackend) and len(backend.attackers) == 3


def test_local_dp_needs_the_sequential_backend():
    cfg = parse_config({**SMALL, "backend": "vectorized", "privacy": {"local_dp": {}}})
    from edgeweave.train.experiment import build_backend, build_task

    with pytest.raises(TrainError, match="local_dp"):
        build_backend(cfg, build_task(cfg))


def test_local_dp_ledgers_survive_a_resume(tmp_path):
    """Each client's DP-SGD epsilon keeps growing across a checkpoint and resume, exactly as in
    the uninterrupted run (the backend's ledgers are checkpointed with the round)."""
    doc = {"model": "logreg:64,10", "data": {"clients": 3}, "fit": {"batch_size": 32},
           "privacy": {"local_dp": {"noise_multiplier": 1.0}}, "plot": False}
    straight = train.run({**doc, "rounds": 2})
    train.run({**doc, "rounds": 1, "out_dir": str(tmp_path)})
    resumed = train.run({**doc, "rounds": 2, "out_dir": str(tmp_path)})
    key = "client_dp_epsilon_max"
    assert resumed[-1].extra[key] == pytest.approx(straight[-1].extra[key])
    assert straight[-1].extra[key] > straight[0].extra[key] > 0


def test_validator_messages_say_what_they_got_once():
    # the validator's own sentence names the value; the shared describe_error adds nothing
    with pytest.raises(TrainError) as e:
        parse_config({"model": "mlp:8,10", "speeds": {"compute_s_per_epoch": [3, 1]}}, "x.yaml")
    assert str(e.value) == ("x.yaml: speeds.compute_s_per_epoch: must be [low, high] with "
                            "0 <= low <= high, got [3.0, 1.0]")
    with pytest.raises(TrainError) as e:  # a section-level check: not the whole section echoed
        parse_config({"model": "mlp:8,10",
                      "adaptive_frequency": {"tau_init": 9, "tau_max": 2, "budget": 5}}, "x.yaml")
    assert str(e.value) == "x.yaml: adaptive_frequency: tau_init (9) must be <= tau_max (2)"
