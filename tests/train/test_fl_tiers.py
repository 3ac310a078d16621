"""Hierarchical FL over the real wire, in one process (threads, loopback gRPC): the cloud's server
loop, two edge aggregators and four devices give the in-process simulation's model; an edge takes
only its fleet's devices and keeps its own resumable state. The real-process version (killed and
restarted edges) is test_fl_edge_processes.py."""

from __future__ import annotations

import threading

import pytest
import torch

from edgeweave.train import checkpoint as ckpt
from edgeweave.train.backends.grpc_backend import GrpcBackend
from edgeweave.train.backends.sequential import SequentialBackend
from edgeweave.train.config import parse_config
from edgeweave.train.control import from_config as control
from edgeweave.train.edge import EdgeAggregator
from edgeweave.train.experiment import build_task, run, server_config
from edgeweave.train.grpc_client import FLClient
from edgeweave.train.models import build_model
from edgeweave.train.server import Server
from edgeweave.train.task import Task
from edgeweave.train.types import TrainError

pytestmark = pytest.mark.usefixtures("one_thread")

TOKEN = "t" * 43
RAW = {"model": "mlp:64,64,10", "seed": 3, "rounds": 3,
       "data": {"dataset": "digits", "partition": "dirichlet:0.5", "clients": 4},
       "strategy": {"name": "fedavg", "fraction": 0.5},  # the edges sample: seeds matter
       "fit": {"lr": 0.1, "batch_size": 16, "epochs": 1},
       "fleet": "two-edges", "hierarchy": {"edge_rounds": 2}}


def _tiers(cfg, task, out=None):
    """The cloud's server loop over gRPC, two EdgeAggregators and their devices in threads."""
    groups = control.hierarchy_groups(cfg)
    cloud = GrpcBackend("127.0.0.1:0", TOKEN, len(groups), 60, model_spec=cfg.model,
                        allowed_clients=range(len(groups)), wait_clients_s=60, heartbeat_s=0.5)
    threads, edges = [], []
    for e in control.edges_for(cfg):
        dev = GrpcBackend("127.0.0.1:0", TOKEN, len(e.members), 60, model_spec=cfg.model,
                          allowed_clients=e.members, wait_clients_s=60, heartbeat_s=0.5)
        agg = EdgeAggregator(e, dev, cfg.model, out_dir=None if out is None else out / e.name)
        edges.append((agg, dev))

        def serve(agg=agg, dev=dev):
            agg.serve(cloud.address, TOKEN)
            dev.close()

        threads.append(threading.Thread(target=serve, daemon=True))
        for m in e.members:
            device = FLClient(dev.address, TOKEN, m, task.data.client(m))
            threads.append(threading.Thread(target=device.run, daemon=True))
    for t in threads:
        t.start()
    server_task = Task(lambda: build_model(cfg.model), None, task.test_x, task.test_y,
                       name="grpc", init_seed=cfg.seed)
    server = Server(server_task, control.cloud_strategy(cfg), cloud,
                    control.cloud_server_config(cfg, server_config(cfg)))
    try:
        records = server.run()
    finally:
        cloud.close()
        for t in threads:
            t.join(20)
    return server, records, edges


@pytest.fixture(scope="module")
def setup():
    cfg = parse_config(RAW)
    return cfg, build_task(cfg)


def test_cloud_edges_and_devices_over_grpc_give_the_simulated_model(setup, tmp_path):
    cfg, task = setup
    sim_records = []
    sim = run(cfg.model_copy(update={"out_dir": tmp_path / "sim", "plot": False}),
              sim_records.append)
    server, records, edges = _tiers(cfg, task, tmp_path / "edges")
    sim_state = ckpt.load_checkpoint(tmp_path / "sim" / ckpt.CHECKPOINT)
    for k, v in sim_state["params"].items():
        assert torch.allclose(server.params[k], v, atol=1e-6), k
    assert [r.test_acc for r in records] == pytest.approx([r.test_acc for r in sim])
    # the WAN bytes are the simulation's, to the byte; so are the device tier's, per edge
    assert [(r.clients, r.bytes_up, r.bytes_down) for r in records] == \
        [(r.clients, r.bytes_up, r.bytes_down) for r in sim]
    assert [r.clients for r in records] == [2, 2, 2]  # both edges, every cloud round
    lines = [d for agg, _ in edges for d in ckpt.read_metrics(agg.out_dir / ckpt.METRICS)]
    assert len(lines) == 2 * 3  # one per edge and cloud round
    assert sum(d["bytes_up"] for d in lines) == sum(r.extra["device_edge_up"] for r in sim)
    assert sum(d["clients"] for d in lines) == sum(r.extra["device_updates"] for r in sim)
    assert records[-1].test_acc > 0.5  # it learns (chance is 0.1)


def test_an_edge_takes_only_the_devices_its_fleet_puts_under_it(setup):
    cfg, task = setup
    edge_a = control.edges_for(cfg)[0]
    assert (edge_a.name, edge_a.members) == ("edge-a", [0, 1])
    dev = GrpcBackend("127.0.0.1:0", TOKEN, 2, 10, model_spec=cfg.model,
                      allowed_clients=edge_a.members)
    try:
        stranger = FLClient(dev.address, TOKEN, 2, task.data.client(2), give_up_s=5)
        with pytest.raises(TrainError, match="PERMISSION_DENIED: register: client 2 does not "
                                             r"train under this server \(it takes clients 0, 1"):
            stranger.run()
    finally:
        dev.close()


def test_an_edge_keeps_its_state_in_its_own_folder_and_resumes_it(tmp_path):
    cfg = parse_config({**RAW, "strategy": {"name": "fedavgm", "params": {"momentum": 0.9}}})
    task = build_task(cfg)
    devices = SequentialBackend(task)
    params = task.init_params()
    first = EdgeAggregator(control.edges_for(cfg)[1], devices, cfg.model, out_dir=tmp_path)
    first._resume()
    new, examples, _ = first.fit(params, cfg.fit.to_fit_config(cfg.seed), 1)
    # every device of edge-b (clients 2 and 3) in both edge rounds
    assert examples == 2 * sum(len(task.data.client(m)[1]) for m in (2, 3))
    assert ckpt.read_metrics(tmp_path / ckpt.METRICS)[0]["edge"] == "edge-b"
    # a restarted edge resumes the strategy's momentum, so its next round is the one the
    # uninterrupted edge would have run
    again = EdgeAggregator(control.edges_for(cfg)[1], devices, cfg.model, out_dir=tmp_path)
    again._resume()
    assert again.served == 1
    straight = EdgeAggregator(control.edges_for(cfg)[1], devices, cfg.model)
    straight.fit(params, cfg.fit.to_fit_config(cfg.seed), 1)
    a, _, _ = again.fit(new, cfg.fit.to_fit_config(cfg.seed), 2)
    b, _, _ = straight.fit(new, cfg.fit.to_fit_config(cfg.seed), 2)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    other = EdgeAggregator(control.edges_for(cfg)[0], devices, cfg.model, out_dir=tmp_path)
    with pytest.raises(TrainError, match="made by another edge or experiment"):
        other._resume()
