"""The grpc backend with real device processes: equality with the sequential reference, a device
killed mid-round, a device that comes back, a server restart, and bad updates refused."""

from __future__ import annotations

import io
import json
import math
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
import torch
from rich.console import Console

from edgeweave.cli import fl_cmds
from edgeweave.errors import EdgeWeaveError
from edgeweave.train.backends.grpc_backend import GrpcBackend
from edgeweave.train.backends.sequential import SequentialBackend
from edgeweave.train.checkpoint import load_checkpoint
from edgeweave.train.data import make_task
from edgeweave.train.grpc_client import FLClient
from edgeweave.train.local import train_client
from edgeweave.train.models import build_model
from edgeweave.train.server import Server, ServerConfig
from edgeweave.train.strategies import FedAvg
from edgeweave.train.task import FederatedData, Task
from edgeweave.train.types import FitConfig, TrainError
from edgeweave.train.wire import fl_pb2, fl_pb2_grpc
from edgeweave.train.wire.auth import auth_metadata, write_token
from edgeweave.train.wire.messages import params_to_msgs

SPEC = "mlp:64,64,10"
CLIENTS = 3


def _quiet() -> Console:
    return Console(file=io.StringIO())


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    d = tmp_path_factory.mktemp("fl")
    fl_cmds.fl_split(_quiet(), "digits", CLIENTS, "iid", SPEC, 0, d / "parts")
    token = write_token(d / "tok")
    return d, token, make_task("digits", "iid", CLIENTS, SPEC, seed=0)


class Fleet:
    """Device processes, always reaped (a test failing half-way leaves none behind)."""

    def __init__(self, root: Path) -> None:
        self.root, self.procs = root, []

    def spawn(self, args: list[str], name: str) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen([sys.executable, *args], stdout=log, stderr=subprocess.STDOUT)
        self.procs.append((p, log))
        return p

    def client(self, address: str, cid: int) -> subprocess.Popen:
        part = self.root / "parts" / f"client{cid}.npz"
        return self.spawn(["-m", "edgeweave.cli.app", "fl", "client", "--server", address,
                           "--data", str(part), "--token-file", str(self.root / "tok"),
                           "--client-id", str(cid), "--give-up", "300", "--retry-max", "1"],
                          f"client{cid}")

    def close(self) -> None:
        for p, log in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)
            log.close()


@pytest.fixture(scope="module")
def fleet(split):
    """Three device processes, plus two more (importing torch takes seconds) that wait for a
    go-file: a device that hangs in training, and a device 3 that comes back after the crash."""
    root, token, _ = split
    backend = GrpcBackend("127.0.0.1:0", token, min_clients=CLIENTS, round_timeout_s=60,
                          model_spec=SPEC, wait_clients_s=240, heartbeat_s=0.5)
    f = Fleet(root)
    for i in range(CLIENTS):
        f.client(backend.address, i)
    wait = "while not os.path.exists({go!r}): time.sleep(0.02)\n"
    f.victim = f.spawn(["-c", "import os, pathlib, sys, time\n"
                        "import torch\n"
                        "from edgeweave.train.grpc_client import FLClient\n"
                        "torch.set_num_threads(1)\n"
                        + wait.format(go=str(root / "go-victim"))
                        + "def fit(params, config, round_num):\n"
                        f"    pathlib.Path({str(root / 'training')!r}).write_text('now')\n"
                        "    time.sleep(600)\n"
                        f"FLClient({backend.address!r}, {token!r}, 3, fit=fit, num_examples=100)"
                        ".run()\n"], "victim")
    argv = ["edgeweave", "fl", "client", "--server", backend.address, "--data",
            str(root / "parts" / "client0.npz"), "--token-file", str(root / "tok"),
            "--client-id", "3", "--retry-max", "1"]
    f.spawn(["-c", "import os, sys, time\n"
             "from edgeweave.cli.app import main\n"
             "import edgeweave.train.grpc_client\n"
             + wait.format(go=str(root / "go-comeback"))
             + f"sys.argv = {argv!r}\nmain()\n"], "comeback")
    yield backend, f
    backend.close()
    f.close()


def _wait_for(pred, timeout: float = 240.0) -> None:
    """Generous: five interpreters importing torch at once on two busy cores take a while."""
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.05)


def _connected(backend: GrpcBackend) -> set[int]:
    return set(backend.connected())


@pytest.mark.slow
def test_three_device_processes_reproduce_the_sequential_backend(split, fleet):
    _, _, task = split
    backend, _ = fleet
    server_task = Task(task.model_fn, None, task.test_x, task.test_y, name="grpc", init_seed=0)
    grpc_server = Server(server_task, FedAvg(), backend, ServerConfig(rounds=3))
    records = grpc_server.run()
    ref_server = Server(task, FedAvg(), SequentialBackend(task), ServerConfig(rounds=3))
    ref = ref_server.run()
    assert [r.clients for r in records] == [CLIENTS] * 3
    assert records[-1].test_acc > 0.5  # chance is 0.1
    assert records[-1].test_acc == pytest.approx(ref[-1].test_acc)
    for k, v in ref_server.params.items():
        assert torch.allclose(grpc_server.params[k], v, atol=1e-6), k
    assert records[-1].bytes_up > 0


@pytest.mark.slow
def test_a_device_killed_mid_round_fails_alone_and_can_come_back(split, fleet):
    root, _, task = split
    backend, f = fleet
    (root / "go-victim").touch()
    _wait_for(lambda: {0, 1, 2, 3} <= _connected(backend))
    params = task.init_params()
    out = {}
    t = threading.Thread(target=lambda: out.update(u=backend.fit(1, params, [0, 1, 2, 3],
                                                                  FitConfig())))
    t0 = time.monotonic()
    t.start()
    _wait_for((root / "training").exists)
    f.victim.send_signal(signal.SIGKILL)
    t.join(60)
    updates = out["u"]
    assert updates.client_ids == [0, 1, 2]
    assert "client 3 disconnected during round 1" in updates.metrics["failed"][3]
    assert time.monotonic() - t0 < backend.round_timeout_s / 2  # noticed, not timed out
    # the device restarts under the same id (a normal process this time) and takes part again
    (root / "go-comeback").touch()
    _wait_for(lambda: 3 in _connected(backend))
    again = backend.fit(2, params, [0, 1, 2, 3], FitConfig())
    assert again.client_ids == [0, 1, 2, 3] and not again.metrics["failed"]
    # the new device 3 holds client 0's shard: its update is the reference training of that
    # shard with client id 3's batch order
    x, y = task.data.client(0)
    want, _ = train_client(build_model(SPEC), params, x, y, FitConfig(), 2, 3)
    assert torch.allclose(again.params["0.weight"][3], want["0.weight"], atol=1e-6)


@pytest.mark.slow
def test_devices_reconnect_after_the_server_restarts(split, fleet):
    _, token, task = split
    backend, _ = fleet
    port = backend.port
    before = set(_connected(backend))
    backend.close(farewell=False)  # what a crash looks like to the devices
    restarted = GrpcBackend(f"127.0.0.1:{port}", token, min_clients=len(before),
                            round_timeout_s=30, model_spec=SPEC, wait_clients_s=120)
    try:
        assert {c.client_id for c in restarted.available_clients()} == before
        u = restarted.fit(5, task.init_params(), sorted(before), FitConfig())
        assert u.client_ids == sorted(before) and not u.metrics["failed"]
    finally:
        restarted.close(farewell=False)  # the devices stay, for the next test's server


@pytest.mark.slow
def test_a_killed_fl_server_process_resumes_and_the_devices_follow(split, fleet):
    """SIGKILL `edgeweave fl server` after two rounds, run it again: it resumes from its
    checkpoint, the four devices reconnect by themselves, no round is lost or repeated, and the
    model equals an uninterrupted sequential run on the same four shards."""
    root, _, task = split
    backend, f = fleet
    out = root / "run"
    argv = ["-m", "edgeweave.cli.app", "fl", "server", "--listen", f"127.0.0.1:{backend.port}",
            "--token-file", str(root / "tok"), "--test-data", str(root / "parts" / "test.npz"),
            "--rounds", "4", "--min-clients", "4", "--out", str(out), "--wait-clients", "240"]
    metrics = out / "metrics.jsonl"
    first = f.spawn(argv, "server1")
    _wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 2)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    # the restart runs the same command in this process (one interpreter start fewer)
    fl_cmds.fl_server(_quiet(), config=None, listen=f"127.0.0.1:{backend.port}",
                      token_file=root / "tok", test_data=root / "parts" / "test.npz",
                      min_clients=4, round_timeout=60, wait_clients=240, rounds=4, out=out)
    assert [json.loads(line)["round"] for line in metrics.read_text().splitlines()] == [1, 2, 3, 4]
    shards = [task.data.client(i) for i in (0, 1, 2, 0)]  # device 3 holds client 0's file
    sizes = torch.tensor([0] + [len(y) for _, y in shards])
    data = FederatedData(torch.cat([x for x, _ in shards]), torch.cat([y for _, y in shards]),
                         sizes.cumsum(0))
    ref_task = Task(task.model_fn, data, task.test_x, task.test_y, name="ref", init_seed=0)
    ref = Server(ref_task, FedAvg(), SequentialBackend(ref_task), ServerConfig(rounds=4))
    ref.run()
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["round"] == 4
    for k, v in ref.params.items():
        assert torch.allclose(state["params"][k], v, atol=1e-6), k


# ---------------------------------------------------------------------------------- bad input


@pytest.fixture
def lone(split):
    """A server and a hand-driven device on the raw stubs, to send what real clients never do."""
    _, token, task = split
    backend = GrpcBackend("127.0.0.1:0", token, round_timeout_s=20, model_spec=SPEC,
                          max_update_bytes=25_000, heartbeat_s=0.2)
    channel = grpc.insecure_channel(backend.address)
    stub = fl_pb2_grpc.FederatedLearningStub(channel)
    md = auth_metadata(token)
    reg = stub.Register(fl_pb2.RegisterRequest(client_id=7, num_examples=50), metadata=md)
    tasks = stub.Tasks(fl_pb2.TasksRequest(session=reg.session), metadata=md)
    _wait_for(lambda: 7 in _connected(backend))
    yield backend, stub, md, reg, tasks, task.init_params()
    tasks.cancel()
    channel.close()
    backend.close()


def _round(backend, tasks, params, round_num):
    """Start a round in the background; return its result holder and the device's task."""
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(u=backend.fit(round_num, params, [7],
                                                                 FitConfig())))
    t.start()
    task = next(m for m in tasks if m.kind == fl_pb2.Task.FIT)
    return t, out, task


def _bad(params, case):
    p = {k: v.clone() for k, v in params.items()}
    if case == "shape":
        p["0.weight"] = torch.zeros(64, 63)
    elif case == "nan":
        p["2.bias"][3] = math.nan
    elif case == "inf":
        p["0.bias"][0] = math.inf
    elif case == "dtype":
        p["0.bias"] = p["0.bias"].double()
    elif case == "missing":
        del p["2.bias"]
    elif case == "oversize":
        p["0.weight"] = torch.zeros(64, 200)
    return p


@pytest.mark.parametrize("case,code,words", [
    ("shape", grpc.StatusCode.INVALID_ARGUMENT, "'0.weight' has shape [64, 63], expected [64, 64]"),
    ("nan", grpc.StatusCode.INVALID_ARGUMENT, "'2.bias' has 1 NaN/Inf values"),
    ("inf", grpc.StatusCode.INVALID_ARGUMENT, "'0.bias' has 1 NaN/Inf values"),
    ("dtype", grpc.StatusCode.INVALID_ARGUMENT, "has dtype 'float64', expected 'float32'"),
    ("missing", grpc.StatusCode.INVALID_ARGUMENT, "missing ['2.bias']"),
    ("oversize", grpc.StatusCode.RESOURCE_EXHAUSTED, "exceeds max_update_bytes=25000"),
    # a few bytes declaring a 4 TiB tensor: refused on the declared shape, before decoding
    ("declared", grpc.StatusCode.INVALID_ARGUMENT,
     "'0.weight' has shape [1048576, 1048576], expected [64, 64]"),
])
def test_bad_updates_are_refused_with_the_reason_and_the_server_keeps_serving(
        lone, case, code, words):
    backend, stub, md, reg, tasks, params = lone
    t, out, task = _round(backend, tasks, params, 1)
    msgs = params_to_msgs(_bad(params, case))
    if case == "declared":
        msgs[0].shape[:] = [2**20, 2**20]
        msgs[0].data = b"\0" * 64
    bad = fl_pb2.Update(session=reg.session, task_id=task.task_id, round=1, num_examples=50,
                        train_loss=1.0, params=msgs)
    with pytest.raises(grpc.RpcError) as e:
        stub.SubmitUpdate(bad, metadata=md)
    assert e.value.code() == code and words in e.value.details()
    t.join(10)
    assert out["u"].client_ids == [] and words in out["u"].metrics["failed"][7]
    # same device, next round, a good update: accepted
    t, out, task = _round(backend, tasks, params, 2)
    good = fl_pb2.Update(session=reg.session, task_id=task.task_id, round=2, num_examples=50,
                         train_loss=1.0, params=params_to_msgs(params))
    assert stub.SubmitUpdate(good, metadata=md).accepted
    t.join(10)
    assert out["u"].client_ids == [7] and torch.equal(out["u"].params["2.bias"][0],
                                                      params["2.bias"])
    # a replay of the closed round's task is refused
    with pytest.raises(grpc.RpcError) as e:
        stub.SubmitUpdate(good, metadata=md)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_every_rpc_needs_the_token(lone):
    backend, stub, md, reg, _, _ = lone
    req = fl_pb2.RegisterRequest(client_id=8, num_examples=5)
    for metadata, words in ((None, "missing bearer token"),
                            ((("authorization", "Bearer " + "x" * 40),), "invalid bearer token")):
        for call, msg in ((stub.Register, req), (stub.SubmitUpdate, fl_pb2.Update()),
                          (stub.Tasks, fl_pb2.TasksRequest(session=reg.session))):
            with pytest.raises(grpc.RpcError) as e:
                res = call(msg, metadata=metadata, timeout=5)
                list(res) if call is stub.Tasks else None
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, call
            assert words in e.value.details()
    with pytest.raises(grpc.RpcError) as e:  # a forged session
        stub.SubmitUpdate(fl_pb2.Update(session="nope"), metadata=md)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:  # a device that cannot train this model
        stub.Register(fl_pb2.RegisterRequest(client_id=9, num_examples=5,
                                             model_specs=["logreg:64,10"]), metadata=md)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert SPEC in e.value.details()
    assert {c.client_id for c in backend.available_clients()} == {7}


def test_fl_client_names_a_missing_file_or_key(split, tmp_path):
    root, _, _ = split
    with pytest.raises(TrainError, match="no such file"):
        fl_cmds.fl_client(_quiet(), server="127.0.0.1:1", data=tmp_path / "client1.npz",
                          token_file=root / "tok", client_id=None, give_up=1)
    import numpy as np

    np.savez(tmp_path / "client2.npz", x=np.zeros((3, 64), np.float32))
    with pytest.raises(TrainError, match="missing key 'y'"):
        fl_cmds.fl_client(_quiet(), server="127.0.0.1:1", data=tmp_path / "client2.npz",
                          token_file=root / "tok", client_id=None, give_up=1)
    with pytest.raises(EdgeWeaveError, match=r"token file .* does not exist"):
        fl_cmds.fl_client(_quiet(), server="127.0.0.1:1", data=tmp_path / "client2.npz",
                          token_file=tmp_path / "nope", client_id=None, give_up=1)
    assert fl_cmds.client_id_from(Path("client3.npz"), None) == 3



def test_a_device_with_the_wrong_token_stops_with_the_reason(lone, split):
    backend, *_ = lone
    _, _, task = split
    x, y = task.data.client(0)
    client = FLClient(backend.address, "w" * 40, 1, (x, y), give_up_s=10)
    with pytest.raises(TrainError, match="refused: UNAUTHENTICATED: invalid bearer token"):
        client.run()


def test_fl_server_reads_the_train_yaml_and_refuses_other_backends(tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("model: mlp:64,32,10\nrounds: 2\ndata: {clients: 4}\nbackend: grpc\n")
    exp = fl_cmds._experiment(cfg, {"model": None})
    assert (exp.model, exp.rounds, exp.data.clients) == ("mlp:64,32,10", 2, 4)
    with pytest.raises(EdgeWeaveError, match="drop --rounds"):
        fl_cmds._experiment(cfg, {"rounds": 3})
    cfg.write_text("rounds: 2\nbackend: vectorized\n")
    with pytest.raises(EdgeWeaveError, match="fl server` runs the grpc backend"):
        fl_cmds._experiment(cfg, {})
    assert fl_cmds._experiment(None, {"rounds": 3, "lr": 0.05}).fit.lr == 0.05


def test_tls_carries_the_rounds_and_a_plaintext_device_gets_nowhere(split, tmp_path):
    from edgeweave.security import make_fleet_certs  # test side only: train never does

    _, token, task = split
    pki = make_fleet_certs(tmp_path, ["fl-server"])
    backend = GrpcBackend("127.0.0.1:0", token, round_timeout_s=20, model_spec=SPEC,
                          wait_clients_s=20, tls_cert=pki["fl-server"].cert,
                          tls_key=pki["fl-server"].key)
    x, y = task.data.client(0)
    device = FLClient(backend.address, token, 0, (x, y), tls_ca=pki["ca"].cert)
    t = threading.Thread(target=device.run)
    t.start()
    try:
        params = task.init_params()
        u = backend.fit(1, params, [c.client_id for c in backend.available_clients()],
                        FitConfig())
        want, _ = train_client(build_model(SPEC), params, x, y, FitConfig(), 1, 0)
        assert u.client_ids == [0]
        assert torch.allclose(u.params["0.weight"][0], want["0.weight"], atol=1e-6)
        plain = FLClient(backend.address, token, 1, (x, y), give_up_s=0.5, retry_max_s=0.2)
        with pytest.raises(TrainError, match="unreachable"):
            plain.run()
        assert backend.connected() == [0]
    finally:
        backend.close()
        t.join(10)
    assert device.stats.rounds == 1
    with pytest.raises(TrainError, match="both tls_cert and tls_key"):
        GrpcBackend("127.0.0.1:0", token, model_spec=SPEC, tls_cert=pki["ca"].cert)
