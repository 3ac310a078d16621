import numpy as np
import pytest

from edgeweave.topology import load_fleet
from edgeweave.train.control import (
    FedCS,
    fleet_clients,
    greedy_select,
    random_fill,
    upload_schedule,
)
from edgeweave.train.data import make_task
from edgeweave.train.strategies import FedAvg
from edgeweave.train.types import ClientInfo, FitConfig, TrainError

pytestmark = pytest.mark.usefixtures("one_thread")


def hetero_clients(n=60, seed=0):
    rng = np.random.default_rng(seed)
    return [ClientInfo(i, 20, compute_s_per_epoch=float(rng.lognormal(0, 1)),
                       upload_s=float(rng.lognormal(-1, 0.8))) for i in range(n)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fedcs_selection_meets_deadline_and_beats_random(seed):
    clients = hetero_clients(seed=seed)
    config, budget = FitConfig(), 6.0
    sched = greedy_select(clients, config, budget)
    by_id = {c.client_id: c for c in clients}
    replay = upload_schedule([by_id[i] for i in sched.client_ids], config)
    assert replay.finish_s == pytest.approx(sched.finish_s)
    assert replay.elapsed_s <= budget
    # each client also meets the deadline on its own (the server's check)
    assert all(by_id[i].compute_s_per_epoch + by_id[i].upload_s <= budget
               for i in sched.client_ids)
    rng = np.random.default_rng(seed)
    randoms = [random_fill(clients, config, budget, rng) for _ in range(20)]
    for r in randoms:
        assert upload_schedule([by_id[i] for i in r.client_ids], config).elapsed_s <= budget
    assert len(sched.client_ids) > max(len(r.client_ids) for r in randoms)


def test_fedcs_wrapper_in_server_loop_has_no_late_clients():
    from edgeweave.train.backends.sequential import SequentialBackend
    from edgeweave.train.server import Server, ServerConfig

    task = make_task("digits", "iid", 30, "mlp:64,16,10", seed=0)
    fleet = load_fleet("multi-device")
    fc = fleet_clients(fleet, task.data.sizes().tolist(), task.model_fn(), (64,), jitter=1.0)
    deadline = float(np.median([c.compute_s_per_epoch + c.upload_s for c in fc.infos])) * 3
    backend = SequentialBackend(task, compute_s_per_epoch=fc.compute_s_per_epoch,
                                upload_s=fc.upload_s)
    strategy = FedCS(FedAvg(fit=FitConfig(lr=0.1)), deadline_s=deadline)
    records = Server(task, strategy, backend, ServerConfig(rounds=3, deadline_s=deadline)).run()
    assert strategy.name == "fedcs+fedavg"
    for rec in records:
        assert rec.clients >= 1 and rec.extra["late"] == 0
        assert rec.extra["sim_round_s"] <= deadline
    assert strategy.last is not None and strategy.last.elapsed_s <= deadline


def test_fedcs_rejects_bad_parameters_and_selects_nobody_when_impossible():
    with pytest.raises(TrainError, match="policy must be"):
        FedCS(FedAvg(), deadline_s=1.0, policy="fastest")
    with pytest.raises(TrainError, match="deadline_s must be > 0"):
        FedCS(FedAvg(), deadline_s=0)
    slow = [ClientInfo(i, 10, compute_s_per_epoch=5.0, upload_s=1.0) for i in range(5)]
    ids, _ = FedCS(FedAvg(), deadline_s=2.0).configure_fit(1, slow, np.random.default_rng(0))
    assert ids == []
    ids, _ = FedCS(FedAvg(), deadline_s=100.0, max_clients=3).configure_fit(
        1, slow, np.random.default_rng(0))
    assert len(ids) == 3
