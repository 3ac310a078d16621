"""Hierarchical FL over real processes (examples/fl/digits-hier-grpc.yaml: digits, two edges x two
devices, two edge rounds per cloud round): `fl-edge` and `fl-client` processes under the cloud's
server loop. Rounds 1-2 give the in-process simulation's model; edge-b is SIGKILLed in the middle
of round 3, which then completes with edge-a alone; restarted, edge-b resumes its own checkpoint,
its devices reconnect, and round 4 starts both edges from the cloud's checkpointed model."""

from __future__ import annotations

import io
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import torch
import yaml
from rich.console import Console

from edgeweave.cli import fl_cmds
from edgeweave.train import checkpoint as ckpt
from edgeweave.train.backends.grpc_backend import GrpcBackend
from edgeweave.train.backends.sequential import SequentialBackend
from edgeweave.train.config import build_strategy
from edgeweave.train.control import from_config as control
from edgeweave.train.control.hierarchical import EdgesBackend
from edgeweave.train.experiment import build_task, run, server_config
from edgeweave.train.models import build_model
from edgeweave.train.server import Server
from edgeweave.train.task import Task
from edgeweave.train.wire.auth import write_token

EXAMPLE = Path(__file__).parents[2] / "examples" / "fl" / "digits-hier-grpc.yaml"
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(pred, timeout: float = 240.0) -> None:
    """Generous: seven interpreters importing torch at once on two busy cores take a while."""
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.05)


class Procs:
    def __init__(self, root: Path) -> None:
        self.root, self.procs = root, []

    def spawn(self, args: list[str], name: str) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen([sys.executable, *args], stdout=log, stderr=subprocess.STDOUT)
        self.procs.append((p, log))
        return p

    def close(self) -> None:
        for p, log in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)
            log.close()


def test_edges_as_processes_reproduce_the_simulation_and_survive_a_killed_edge(tmp_path):
    root = tmp_path
    raw = yaml.safe_load(EXAMPLE.read_text()) | {"rounds": 4, "out_dir": str(root / "run")}
    (root / "exp.yaml").write_text(yaml.safe_dump(raw))
    cfg = fl_cmds._experiment(root / "exp.yaml", {})
    fl_cmds.fl_split(Console(file=io.StringIO()), "digits", 0, "iid", cfg.model, 0,
                     root / "parts", root / "exp.yaml")
    token = write_token(root / "tok")
    task = build_task(cfg)
    groups = control.hierarchy_groups(cfg)
    assert groups == {"edge-a": [0, 1], "edge-b": [2, 3]}
    cloud = GrpcBackend("127.0.0.1:0", token, 2, round_timeout_s=180, model_spec=cfg.model,
                        wait_clients_s=300, heartbeat_s=0.5, allowed_clients=range(2), quorum=1)
    ports = {e: _free_port() for e in groups}
    metrics_a = _free_port()
    procs = Procs(root)

    def edge(name: str) -> subprocess.Popen:
        extra = ["--metrics-port", str(metrics_a)] if name == "edge-a" else []
        return procs.spawn(["-m", "edgeweave.cli.app", "fl", "edge", "--config",
                            str(root / "exp.yaml"), "--edge", name, "--cloud", cloud.address,
                            "--listen", f"127.0.0.1:{ports[name]}", "--token-file",
                            str(root / "tok"), "--retry-max", "1", "--give-up", "300",
                            "--round-timeout", "120", *extra], name)

    def device(cid: int, at: str) -> None:
        procs.spawn(["-m", "edgeweave.cli.app", "fl", "client", "--server", at, "--data",
                     str(root / "parts" / f"client{cid}.npz"), "--token-file",
                     str(root / "tok"), "--client-id", str(cid), "--give-up", "300",
                     "--retry-max", "1"], f"client{cid}")

    try:
        edges = {name: edge(name) for name in groups}
        for cid in (0, 1, 2):
            device(cid, f"127.0.0.1:{ports['edge-a' if cid < 2 else 'edge-b']}")
        # device 3 (edge-b) says when it trains edge step 5 (cloud round 3's first edge round)
        # and waits for a go-file, so the test kills edge-b in the middle of that round
        procs.spawn(["-c", "import pathlib, time, torch\n"
                     "from edgeweave.train.client import TorchClient\n"
                     "from edgeweave.train.data import load_npz\n"
                     "from edgeweave.train.grpc_client import FLClient\n"
                     "torch.set_num_threads(1)\n"
                     f"x, y = load_npz({str(root / 'parts' / 'client3.npz')!r})\n"
                     f"base = TorchClient({cfg.model!r}, x, y, 3).as_fit_fn()\n"
                     f"root = pathlib.Path({str(root)!r})\n"
                     "def fit(params, config, round_num):\n"
                     "    if round_num == 5 and not (root / 'go').exists():\n"
                     "        (root / 'training').write_text('now')\n"
                     "        while not (root / 'go').exists(): time.sleep(0.02)\n"
                     "    return base(params, config, round_num)\n"
                     f"FLClient('127.0.0.1:{ports['edge-b']}', {token!r}, 3, fit=fit, "
                     f"num_examples=len(y), model_spec={cfg.model!r}, retry_max_s=1.0).run()\n"],
                    "client3")

        snapshots: dict[int, dict[str, torch.Tensor]] = {}
        checkpointed: dict[int, dict[str, torch.Tensor]] = {}
        scraped: dict[str, str] = {}
        server_task = Task(lambda: build_model(cfg.model), None, task.test_x, task.test_y,
                           name="grpc", init_seed=cfg.seed)
        server = Server(server_task, control.cloud_strategy(cfg), cloud,
                        control.cloud_server_config(cfg, server_config(cfg)))

        def progress(rec) -> None:
            snapshots[rec.round] = {k: v.clone() for k, v in server.params.items()}
            state = ckpt.load_checkpoint(Path(cfg.out_dir) / ckpt.CHECKPOINT)
            checkpointed[rec.round] = state["params"]
            if rec.round == 2:  # edge-a's Prometheus endpoint, while the run goes on
                scraped["a"] = urllib.request.urlopen(
                    f"http://127.0.0.1:{metrics_a}/metrics", timeout=10).read().decode()

        out: dict = {}
        t = threading.Thread(target=lambda: out.update(records=server.run(progress)))
        t.start()
        _wait_for((root / "training").exists, 400)
        killed = edges["edge-b"]
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)
        (root / "go").touch()
        _wait_for(lambda: 3 in snapshots, 200)
        edges["edge-b"] = edge("edge-b")  # the same command: resumes its own folder
        t.join(400)
        assert not t.is_alive()
        records = out["records"]
        # the cloud says SHUTDOWN; the edges pass it on to their devices; everyone exits cleanly
        cloud.close()
        rest = [p for p, _ in procs.procs if p is not killed]
        _wait_for(lambda: all(p.poll() is not None for p in rest), 120)
        assert [p.returncode for p in rest] == [0] * len(rest)
    finally:
        cloud.close()
        procs.close()

    # rounds 1-2: the simulation's model
    sim = run(cfg.model_copy(update={"rounds": 2, "out_dir": root / "sim", "plot": False}))
    sim_state = ckpt.load_checkpoint(root / "sim" / ckpt.CHECKPOINT)
    for k, v in sim_state["params"].items():
        assert torch.allclose(snapshots[2][k], v, atol=1e-6), k
    assert [r.clients for r in records[:2]] == [2, 2] and sim[-1].test_acc == pytest.approx(
        records[1].test_acc)
    # round 3: edge-b's round is lost for edge-b only; the cloud completes it with edge-a
    assert (records[2].clients, records[2].extra["failed"]) == (1, 1)
    devices = SequentialBackend(task)
    edges_sim = EdgesBackend(devices, groups, lambda _n: build_strategy(cfg),
                             cfg.hierarchy.edge_rounds, cfg.seed)
    only_a = edges_sim.fit(3, snapshots[2], [0], cfg.fit.to_fit_config(cfg.seed))
    for k, v in only_a.params.items():
        assert torch.allclose(snapshots[3][k], v[0], atol=1e-6), k
    # round 4: both edges again, both from the cloud's checkpointed round-3 model
    assert records[3].clients == 2 and records[3].extra["failed"] == 0
    for k in snapshots[3]:
        assert torch.equal(checkpointed[3][k], snapshots[3][k]), k
    both = edges_sim.fit(4, checkpointed[3], [0, 1], cfg.fit.to_fit_config(cfg.seed))
    want = control.cloud_strategy(cfg).aggregate(4, checkpointed[3], both)
    for k, v in want.items():
        assert torch.allclose(snapshots[4][k], v, atol=1e-6), k
    # each edge's own record of the rounds it served
    lines = {e: [d["round"] for d in ckpt.read_metrics(Path(cfg.out_dir) / f"edge-{e}" /
                                                       ckpt.METRICS)] for e in groups}
    assert lines == {"edge-a": [1, 2, 3, 4], "edge-b": [1, 2, 4]}
    assert "edgeweave_fl_round 2.0" in scraped["a"]
    assert 'edgeweave_fl_clients_total{outcome="reported"} 8.0' in scraped["a"]  # 2 x 2 x 2
    assert records[-1].test_acc > 0.5
