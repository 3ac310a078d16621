import pytest
import torch

from edgeweave.topology import load_fleet
from edgeweave.train.backends.sequential import SequentialBackend
from edgeweave.train.control import (
    HierarchicalTrainer,
    HierConfig,
    edge_uplink_s,
    fleet_clients,
)
from edgeweave.train.data import make_task
from edgeweave.train.server import Server, ServerConfig
from edgeweave.train.strategies import FedAvg, FedAvgM
from edgeweave.train.transfer import raw_nbytes
from edgeweave.train.types import FitConfig, TrainError

pytestmark = pytest.mark.usefixtures("one_thread")

FIT = FitConfig(lr=0.1, batch_size=16)


@pytest.fixture(scope="module")
def task():
    # small on purpose: 12 heterogeneous clients of 10-30 samples keep each test to seconds
    return make_task("synthetic:1,1", "natural", 12, "mlp:60,16,10", seed=0, size_mu=2.0,
                     size_sigma=0.5, min_samples=10, max_samples=30, test_size=400)


@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_one_edge_one_edge_round_equals_flat_fedavg(task, fraction):
    flat = Server(task, FedAvg(fraction=fraction, fit=FIT), SequentialBackend(task),
                  ServerConfig(rounds=3, seed=4))
    flat_recs = flat.run()
    hier = HierarchicalTrainer(task, SequentialBackend(task), {"edge": list(range(12))},
                               FedAvg(fraction=fraction, fit=FIT),
                               HierConfig(cloud_rounds=3, edge_rounds=1, seed=4))
    recs = hier.run()
    for k in flat.params:
        assert torch.allclose(hier.params[k], flat.params[k], atol=1e-6)
    assert recs[-1].test_acc == pytest.approx(flat_recs[-1].test_acc)
    assert [r.extra["device_updates"] for r in recs] == [r.clients for r in flat_recs]
    assert [r.clients for r in recs] == [1, 1, 1]  # the cloud's clients are the edges


def test_many_edges_with_one_edge_round_still_equal_flat_fedavg(task):
    # the weighted mean of per-edge weighted means is the flat weighted mean
    flat = Server(task, FedAvg(fit=FIT), SequentialBackend(task), ServerConfig(rounds=2))
    flat.run()
    groups = {"e0": [0, 1, 2, 3, 4], "e1": [5, 6, 7], "e2": [8, 9, 10, 11]}
    hier = HierarchicalTrainer(task, SequentialBackend(task), groups, FedAvg(fit=FIT),
                               HierConfig(cloud_rounds=2))
    hier.run()
    for k in flat.params:
        assert torch.allclose(hier.params[k], flat.params[k], atol=1e-6)


def test_more_edge_rounds_cut_cloud_traffic_by_that_factor(task):
    groups = {"e0": list(range(6)), "e1": list(range(6, 12))}
    nbytes = raw_nbytes(task.init_params())

    def run(edge_rounds, cloud_rounds):
        h = HierarchicalTrainer(task, SequentialBackend(task), groups, FedAvg(fit=FIT),
                                HierConfig(cloud_rounds=cloud_rounds, edge_rounds=edge_rounds))
        recs = h.run()
        return ({"edge_cloud_up": sum(r.bytes_up for r in recs),
                 "edge_cloud_down": sum(r.bytes_down for r in recs),
                 **{k: sum(r.extra[k] for r in recs) for k in
                    ("device_edge_up", "device_edge_down")}}, recs)

    every, recs1 = run(edge_rounds=1, cloud_rounds=6)
    batched, recs3 = run(edge_rounds=3, cloud_rounds=2)
    # the same 6 edge aggregations and device updates each way
    assert every["device_edge_up"] == batched["device_edge_up"] == 6 * 12 * nbytes
    assert every["device_edge_down"] == batched["device_edge_down"]
    assert every["edge_cloud_up"] == 3 * batched["edge_cloud_up"] == 6 * 2 * nbytes
    assert every["edge_cloud_down"] == 3 * batched["edge_cloud_down"]
    assert sum(r.extra["device_updates"] for r in recs1) == 72
    assert sum(r.extra["device_updates"] for r in recs3) == 72
    assert recs1[-1].test_acc > 0.2 and recs3[-1].test_acc > 0.2  # chance is about 0.1
    assert recs3[-1].test_loss < recs3[0].test_loss  # it learns


def test_groups_and_wan_times_from_a_fleet_and_stateful_edge_strategies(task):
    fleet = load_fleet("multi-device")
    fc = fleet_clients(fleet, task.data.sizes().tolist(), task.model_fn(), (60,))
    groups = fc.groups()
    assert groups == {"edge": list(range(12))}
    wan = edge_uplink_s(fleet, list(groups), fc.model_bytes)
    assert wan["edge"] > 0
    backend = SequentialBackend(task, compute_s_per_epoch=fc.compute_s_per_epoch,
                                upload_s=fc.upload_s)
    h = HierarchicalTrainer(task, backend, {"a": list(range(6)), "b": list(range(6, 12))},
                            FedAvgM(fit=FIT), HierConfig(cloud_rounds=1, edge_rounds=2),
                            edge_cloud_s={"a": wan["edge"], "b": wan["edge"]})
    rec = h.run()[0]
    assert h.edge["a"] is not h.edge["b"]
    slowest = max(c.compute_s_per_epoch + c.upload_s for c in fc.infos)
    assert wan["edge"] < rec.extra["sim_round_s"] <= 2 * slowest + wan["edge"]
    with pytest.raises(TrainError, match="more than one edge group"):
        HierarchicalTrainer(task, backend, {"a": [0, 1], "b": [1, 2]}, FedAvg(),
                            HierConfig(cloud_rounds=1))


def test_codec_compresses_both_tiers(task):
    groups = {"e0": list(range(6)), "e1": list(range(6, 12))}

    def totals(codec):
        h = HierarchicalTrainer(task, SequentialBackend(task), groups, FedAvg(fit=FIT),
                                HierConfig(cloud_rounds=2, edge_rounds=2, codec=codec))
        recs = h.run()
        return ({"device_edge_up": sum(r.extra["device_edge_up"] for r in recs),
                 "edge_cloud_up": sum(r.bytes_up for r in recs),
                 "edge_cloud_down": sum(r.bytes_down for r in recs)}, recs)

    raw, _ = totals(None)
    half, recs = totals("fp16")
    for k in raw:
        assert 0.45 * raw[k] < half[k] < 0.6 * raw[k]
    assert recs[-1].test_loss < recs[0].test_loss
