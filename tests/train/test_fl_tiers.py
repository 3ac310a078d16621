"""Hierarchical FL over the real wire, in one process (threads, loopback gRPC): `fl-server`, two
`fl-edge` and four devices give the in-process simulation's model; an edge takes only its fleet's
devices and keeps its own resumable state. The real-process version (killed and restarted edges)
is test_fl_edge_processes.py."""

from __future__ import annotations

import io
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from rich.console import Console

from edgeweave.cli import fl_cmds
from edgeweave.train import checkpoint as ckpt
from edgeweave.train.backends.grpc_backend import GrpcBackend
from edgeweave.train.backends.sequential import SequentialBackend
from edgeweave.train.config import parse_config
from edgeweave.train.control import from_config as control
from edgeweave.train.edge import EdgeAggregator
from edgeweave.train.experiment import build_task, run
from edgeweave.train.grpc_client import FLClient
from edgeweave.train.types import TrainError
from edgeweave.train.wire.auth import write_token

pytestmark = pytest.mark.usefixtures("one_thread")

TOKEN = "t" * 43
RAW = {"model": "mlp:64,64,10", "seed": 3, "rounds": 3,
       "data": {"dataset": "digits", "partition": "dirichlet:0.5", "clients": 4},
       "strategy": {"name": "fedavg", "fraction": 0.5},  # the edges sample: seeds matter
       "fit": {"lr": 0.1, "batch_size": 16, "epochs": 1},
       "fleet": "two-edges", "hierarchy": {"edge_rounds": 2}}


@pytest.fixture(scope="module")
def setup():
    cfg = parse_config(RAW)
    return cfg, build_task(cfg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiers(root: Path, task) -> None:
    """`fl-server`, two `fl-edge` (their command functions) and four devices, in threads, on
    RAW as an experiment file (the shape of examples/fl/digits-hier-grpc.yaml)."""
    (root / "exp.yaml").write_text(yaml.safe_dump(
        RAW | {"backend": "grpc", "out_dir": str(root / "run")}))
    token = write_token(root / "tok")
    np.savez(root / "test.npz", x=task.test_x.numpy(), y=task.test_y.numpy())
    cloud, ports = f"127.0.0.1:{_free_port()}", {"edge-a": _free_port(), "edge-b": _free_port()}
    common = {"config": root / "exp.yaml", "token_file": root / "tok", "min_clients": None,
              "round_timeout": 60, "wait_clients": 60}
    quiet = Console(file=io.StringIO())
    errors: list[BaseException] = []

    def guarded(command, **kw) -> threading.Thread:
        def go() -> None:
            try:
                command(quiet, **kw)
            except BaseException as e:  # the test thread reports it
                errors.append(e)
        return threading.Thread(target=go, daemon=True)

    threads = [guarded(fl_cmds.fl_server, listen=cloud, test_data=root / "test.npz", **common)]
    threads += [guarded(fl_cmds.fl_edge, edge=name, cloud=cloud, listen=f"127.0.0.1:{port}",
                        cloud_token_file=None, retry_max=0.5, **common)
                for name, port in ports.items()]
    for cid, name in enumerate(["edge-a", "edge-a", "edge-b", "edge-b"]):
        device = FLClient(f"127.0.0.1:{ports[name]}", token, cid, task.data.client(cid),
                          retry_max_s=0.5)
        threads.append(threading.Thread(target=device.run, daemon=True))
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)  # SHUTDOWN reached every tier


def test_fl_server_fl_edge_and_devices_give_the_simulated_model(setup, tmp_path):
    cfg, task = setup
    sim = run(cfg.model_copy(update={"out_dir": tmp_path / "sim", "plot": False}))
    _tiers(tmp_path, task)
    sim_state = ckpt.load_checkpoint(tmp_path / "sim" / ckpt.CHECKPOINT)
    real_state = ckpt.load_checkpoint(tmp_path / "run" / ckpt.CHECKPOINT)
    assert real_state["round"] == 3
    for k, v in sim_state["params"].items():
        assert torch.allclose(real_state["params"][k], v, atol=1e-6), k
    records = ckpt.read_metrics(tmp_path / "run" / ckpt.METRICS)
    assert [r["test_acc"] for r in records] == pytest.approx([r.test_acc for r in sim])
    # the WAN bytes are the simulation's, to the byte; so are the device tier's, per edge
    assert [(r["clients"], r["bytes_up"], r["bytes_down"]) for r in records] == \
        [(r.clients, r.bytes_up, r.bytes_down) for r in sim]
    assert [r["clients"] for r in records] == [2, 2, 2]  # both edges, every cloud round
    lines = [d for e in ("edge-a", "edge-b")
             for d in ckpt.read_metrics(tmp_path / "run" / f"edge-{e}" / ckpt.METRICS)]
    assert len(lines) == 2 * 3  # one per edge and cloud round
    assert sum(d["bytes_up"] for d in lines) == sum(r.extra["device_edge_up"] for r in sim)
    assert sum(d["clients"] for d in lines) == sum(r.extra["device_updates"] for r in sim)
    assert records[-1]["test_acc"] > 0.5  # it learns (chance is 0.1)


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
