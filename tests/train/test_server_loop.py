"""The server loop: deadlines, over-selection, byte accounting, dropouts, FedAsync staleness."""

import json
import math

import pytest
import torch

from edgeweave.codec import get_codec
from edgeweave.train.backends.sequential import SequentialBackend
from edgeweave.train.models import build_model
from edgeweave.train.server import Server, ServerConfig
from edgeweave.train.strategies import FedAsync, FedAvg
from edgeweave.train.task import FederatedData, Task
from edgeweave.train.types import FitConfig, TrainError

N_PARAMS = 4 * 3 + 3  # logreg:4,3


def tiny_task(clients=6, per_client=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = clients * per_client
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    offsets = torch.arange(0, n + 1, per_client)
    return Task(lambda: build_model("logreg:4,3"), FederatedData(x, y, offsets), x[:12], y[:12],
                name="tiny")


class Spy(FedAvg):
    """FedAvg that remembers which clients each round aggregated."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.kept: list[list[int]] = []

    def aggregate(self, round_num, global_params, updates):
        self.kept.append(list(updates.client_ids))
        return super().aggregate(round_num, global_params, updates)


def test_bytes_are_exact_float32_payloads():
    task = tiny_task()
    recs = Server(task, FedAvg(fraction=0.5), SequentialBackend(task),
                  ServerConfig(rounds=2)).run()
    for r in recs:
        assert r.clients == 3
        assert r.bytes_down == 3 * N_PARAMS * 4
        assert r.bytes_up == 3 * N_PARAMS * 4
        assert 0 <= r.test_acc <= 1 and r.wall_s > 0


def test_codec_bytes_come_from_the_codec():
    task = tiny_task()
    recs = Server(task, FedAvg(fraction=0.5), SequentialBackend(task),
                  ServerConfig(rounds=1, codec="fp16")).run()
    codec = get_codec("fp16")
    per_model = sum(codec.encode(v).nbytes for v in task.init_params().values())
    assert per_model == N_PARAMS * 2
    assert recs[0].bytes_down == 3 * per_model and recs[0].bytes_up == 3 * per_model
    with pytest.raises(TrainError, match="codec"):
        Server(task, FedAvg(), SequentialBackend(task), ServerConfig(rounds=1, codec="nope"))


def test_deadline_drops_slow_clients_and_the_round_goes_on():
    task = tiny_task()
    # clients 4 and 5 need 10 s of compute per epoch; the deadline is 5 s
    backend = SequentialBackend(task, compute_s_per_epoch=[1, 1, 1, 1, 10, 10],
                                upload_s=[0.5] * 6)
    spy = Spy(fraction=1.0)
    recs = Server(task, spy, backend, ServerConfig(rounds=2, deadline_s=5.0)).run()
    assert spy.kept == [[0, 1, 2, 3]] * 2
    assert all(r.extra["late"] == 2 and r.clients == 4 for r in recs)
    assert recs[0].bytes_down == 6 * N_PARAMS * 4  # the model went to all six
    assert recs[0].bytes_up == 4 * N_PARAMS * 4    # four arrived
    assert recs[0].extra["sim_round_s"] == pytest.approx(1.5)


def test_local_steps_shorten_the_simulated_round():
    task = tiny_task()
    backend = SequentialBackend(task, compute_s_per_epoch=[8.0] * 6)
    # 1 step of batch 2 on 8 samples = a quarter epoch = 2 s, inside a 3 s deadline
    spy = Spy(fraction=1.0, fit=FitConfig(local_steps=1, batch_size=2))
    Server(task, spy, backend, ServerConfig(rounds=1, deadline_s=3.0)).run()
    assert spy.kept == [[0, 1, 2, 3, 4, 5]]


class SpyBackend(SequentialBackend):
    """Remembers which clients were asked to train each round."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.trained: list[list[int]] = []

    def fit(self, round_num, global_params, client_ids, config):
        self.trained.append(list(client_ids))
        return super().fit(round_num, global_params, client_ids, config)


def test_over_selection_keeps_the_first_k_to_arrive():
    task = tiny_task()
    speeds = [6.0, 5.0, 4.0, 3.0, 2.0, 1.0]  # client 5 is the fastest
    backend = SpyBackend(task, compute_s_per_epoch=speeds)
    spy = Spy(fraction=2 / 6)
    recs = Server(task, spy, backend, ServerConfig(rounds=3, over_select=2.0)).run()
    for r, trained, kept in zip(recs, backend.trained, spy.kept, strict=True):
        assert r.extra["selected"] == 4 and r.clients == 2 and r.extra["arrived"] == 4
        assert r.bytes_up == 4 * N_PARAMS * 4  # all four uploaded; two were not needed
        assert len(set(trained)) == 4
        assert sorted(kept) == sorted(sorted(trained, key=lambda c: speeds[c])[:2])
    without = SpyBackend(task, compute_s_per_epoch=speeds)
    Server(task, Spy(fraction=2 / 6), without, ServerConfig(rounds=3)).run()
    assert all(len(t) == 2 for t in without.trained)


def test_over_selection_with_deadline_and_dropouts_still_aggregates_at_most_k():
    task = tiny_task(clients=20)
    backend = SequentialBackend(task, drop_prob=0.3, seed=1,
                                compute_s_per_epoch=[float(i % 5) for i in range(20)])
    spy = Spy(fraction=0.25)
    recs = Server(task, spy, backend,
                  ServerConfig(rounds=4, deadline_s=3.5, over_select=1.6)).run()
    for r in recs:
        assert r.clients <= 5 and r.extra["selected"] == 8
        assert r.clients == min(5, r.extra["arrived"])
        assert r.extra["arrived"] + r.extra["failed"] + r.extra["late"] == 8


def test_round_with_every_client_failed_keeps_the_model():
    task = tiny_task()
    backend = SequentialBackend(task, drop_prob=0.999)
    server = Server(task, FedAvg(), backend, ServerConfig(rounds=2))
    recs = server.run()
    assert all(r.clients == 0 and r.extra["failed"] == 6 for r in recs)
    assert all(torch.equal(server.params[k], v) for k, v in task.init_params().items())
    assert math.isnan(recs[0].train_loss)


def test_eval_every_skips_evaluation_and_writes_null(tmp_path):
    task = tiny_task()
    recs = Server(task, FedAvg(), SequentialBackend(task),
                  ServerConfig(rounds=3, eval_every=2, out_dir=tmp_path)).run()
    assert math.isnan(recs[0].test_acc) and not math.isnan(recs[1].test_acc)
    assert not math.isnan(recs[2].test_acc)  # the last round is always evaluated
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [d["round"] for d in lines] == [1, 2, 3] and lines[0]["test_acc"] is None


def test_fedasync_staleness_follows_simulated_time():
    task = tiny_task(clients=2)
    # client 0 takes 1 s per round trip, client 1 takes 3 s; both always in flight
    backend = SequentialBackend(task, compute_s_per_epoch=[1.0, 3.0])
    strategy = FedAsync(alpha=0.5, staleness_fn="constant", fraction=1.0)
    recs = Server(task, strategy, backend, ServerConfig(rounds=2)).run()
    # t=1: c0 (from v0) -> v1; t=2: c0 (from v1) -> v2;
    # t=3: c1 (from v0) is 2 versions stale -> v3; then c0 (from v2, finishing t=3) 1 stale
    assert recs[0].extra["applied"] == [[0, 0], [0, 0]]
    assert recs[1].extra["applied"] == [[1, 2], [0, 1]]
    assert recs[1].extra["version"] == 4 and recs[1].extra["sim_clock_s"] == 3.0
    assert recs[0].bytes_up == 2 * N_PARAMS * 4


def test_fedasync_stale_updates_move_the_model_less():
    task = tiny_task(clients=2)
    strategy = FedAsync(alpha=0.5, staleness_fn="polynomial", a=1.0, fraction=1.0)
    server = Server(task, strategy, SequentialBackend(task, compute_s_per_epoch=[1.0, 3.0]),
                    ServerConfig(rounds=2))
    server.run()
    assert server.version == 4 and len(server.inflight) == 2
    assert all(torch.isfinite(v).all() for v in server.params.values())


def test_fedasync_keeps_training_through_dropouts():
    task = tiny_task(clients=10)
    strategy = FedAsync(alpha=0.6, fraction=0.3)
    recs = Server(task, strategy, SequentialBackend(task, drop_prob=0.3, seed=2),
                  ServerConfig(rounds=4)).run()
    assert sum(r.extra["failed"] for r in recs) > 0
    assert all(r.clients == 3 for r in recs)


def test_server_config_validates():
    with pytest.raises(TrainError, match="over_select"):
        ServerConfig(rounds=1, over_select=0.5)
    with pytest.raises(TrainError, match="rounds"):
        ServerConfig(rounds=0)
    with pytest.raises(TrainError, match="deadline_s"):
        ServerConfig(rounds=1, deadline_s=0)


class Reporting(FedAvg):
    """FedAvg that reports how many clients it aggregated, as a privacy wrapper reports epsilon."""

    def aggregate(self, round_num, global_params, updates):
        self.last = len(updates)
        return super().aggregate(round_num, global_params, updates)

    def round_metrics(self):
        return {"aggregated": self.last}


def test_strategy_round_metrics_reach_the_metrics_line(tmp_path):
    task = tiny_task()
    recs = Server(task, Reporting(fraction=0.5), SequentialBackend(task),
                  ServerConfig(rounds=2, out_dir=tmp_path)).run()
    assert [r.extra["aggregated"] for r in recs] == [3, 3]
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["aggregated"] for x in lines] == [3, 3]
