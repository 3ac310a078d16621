"""Secure aggregation: Shamir thresholds, exact mask cancellation, dropout recovery at 0/10/30%,
what the server sees, bad shares, aborts below the threshold, and the strategy in the loop."""

from __future__ import annotations

import io
import os
import threading
import time
from collections import OrderedDict

import grpc
import numpy as np
import pytest
import torch
from rich.console import Console
from secagg_helpers import ring_inputs, ring_sum

from edgeweave.train.backends.grpc_backend import GrpcBackend
from edgeweave.train.backends.sequential import SequentialBackend
from edgeweave.train.data import make_task
from edgeweave.train.grpc_client import FLClient
from edgeweave.train.models import build_model
from edgeweave.train.secagg import graph as graphs
from edgeweave.train.secagg import shamir
from edgeweave.train.secagg.aggregate import SecAggFedAvg
from edgeweave.train.secagg.backend import SecAggGrpcBackend
from edgeweave.train.secagg.client import SecAggClient
from edgeweave.train.secagg.messages import Params, Unmask
from edgeweave.train.secagg.quantize import FixedPoint, frac_bits_for
from edgeweave.train.secagg.server import SecAggServer
from edgeweave.train.secagg.simulate import make_graph, secure_sum
from edgeweave.train.secagg.vector import UpdateVector
from edgeweave.train.server import Server, ServerConfig
from edgeweave.train.strategies import FedAvg
from edgeweave.train.task import Task
from edgeweave.train.types import FitConfig, TrainError, Updates
from edgeweave.train.wire import fl_pb2, fl_pb2_grpc
from edgeweave.train.wire.auth import auth_metadata

pytestmark = pytest.mark.usefixtures("one_thread")


def test_shamir_any_t_shares_rebuild_and_t_minus_1_do_not():
    secret = os.urandom(32)
    points = list(range(1, 11))
    shares = shamir.split(secret, points, t=6)
    rng = np.random.default_rng(0)
    for _ in range(5):
        pick = sorted(rng.choice(10, size=6, replace=False))
        assert shamir.combine([points[i] for i in pick], shares[pick], 6) == secret
    more = shamir.combine(points, shares, 6)  # extra shares are fine
    assert more == secret
    # t-1 shares padded with a wrong share: an unrelated value, not the secret
    fake = shares[:6].copy()
    fake[5] = (fake[5].astype(np.int64) + 1) % shamir.P
    assert shamir.combine(points[:6], fake, 6) != secret
    with pytest.raises(TrainError, match="need t=6 shares"):
        shamir.combine(points[:5], shares[:5], 6)
    ok = shamir.consistent(points, np.concatenate([shares[:9], fake[5:6]]), 6)
    assert ok[:9].all()


def test_shamir_t_minus_1_shares_are_uniform():
    """Every secret is consistent with t-1 shares: rebuilding with any guessed t-th share gives
    outputs spread over the whole space (first chunk close to uniform over 2^24)."""
    secret = bytes(32)
    firsts = []
    for _ in range(300):
        sh = shamir.split(secret, [1, 2, 3], t=3)
        guess = np.zeros((1, shamir.CHUNKS), np.uint32)  # the attacker's guess for point 3
        out = shamir.combine([1, 2, 3], np.concatenate([sh[:2], guess]), 3)
        firsts.append(int.from_bytes(out[:3], "big"))
    assert np.mean(firsts) / 2**24 == pytest.approx(0.5, abs=0.06)


def test_fixed_point_round_trip_and_headroom():
    fp = FixedPoint(32, frac_bits_for(1000, 1.0, 32), 1.0)
    x = np.random.default_rng(0).uniform(-1.5, 1.5, 1000)
    back = fp.decode(fp.to_ring(fp.to_int(x)))
    assert np.abs(back - np.clip(x, -1, 1)).max() <= fp.step / 2 + 1e-12
    ints = fp.to_int(np.ones(1000))  # worst case: 1000 clients at +clip
    total = np.sum(fp.to_ring(ints) * np.uint32(1), dtype=np.uint32)
    assert fp.from_ring(np.array([total]))[0] == ints.sum()
    with pytest.raises(TrainError, match="does not fit"):
        frac_bits_for(2**40, 1.0, 32)


def test_masks_cancel_exactly_and_the_masked_input_hides_the_input():
    n, length = 8, 500
    x = {u: np.zeros(length, np.uint32) for u in range(n)}  # all-zero inputs: y IS the mask
    x[3][:] = 7
    p = Params(32, 5, length, b"t")
    g = graphs.complete(list(range(n)))
    server = SecAggServer(p, g)
    clients = {u: SecAggClient(u, x[u], p) for u in range(n)}
    rosters = server.advertise([c.advertise() for c in clients.values()])
    inbox = server.route([clients[u].share_keys(rosters[u]) for u in range(n)])
    masked = {u: clients[u].masked_input(inbox[u]) for u in range(n)}
    y3 = masked[3].y
    # what the server holds for client 3 is uniform-looking, nowhere near its input of 7s
    assert (y3 == 7).mean() < 0.01
    assert abs(y3.astype(np.float64).mean() / 2**32 - 0.5) < 0.05
    survivors = server.collect(list(masked.values()))
    total = server.finish([clients[u].unmask(survivors) for u in survivors])
    assert np.array_equal(total, ring_sum(x.values()))


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.3])
def test_dropout_recovery_is_exact_after_dequantisation(rate):
    n = 30
    rng = np.random.default_rng(int(rate * 10))
    floats = {u: rng.normal(0, 0.3, 200) for u in range(n)}
    fp = FixedPoint(32, frac_bits_for(n, 1.0), 1.0)
    ints = {u: fp.to_int(v) for u, v in floats.items()}
    drop = set(rng.choice(n, size=round(rate * n), replace=False).tolist())
    g = make_graph(list(range(n)), None, 0)
    p = Params(32, graphs.threshold(n), 200, b"r")
    res = secure_sum({u: fp.to_ring(v) for u, v in ints.items()}, p, g, drop)
    assert res.survivors == sorted(set(range(n)) - drop) and res.dropped == sorted(drop)
    exact = sum(ints[u] for u in res.survivors)
    assert np.array_equal(fp.from_ring(res.total), exact)  # exact integer match
    plain = sum(np.clip(floats[u], -1, 1) for u in res.survivors)
    assert np.abs(fp.decode(res.total) - plain).max() <= len(res.survivors) * fp.step / 2


def test_k_regular_graph_recovers_dropouts_with_fewer_shares():
    n = 60
    x = ring_inputs(n, 100, seed=1)
    g = make_graph(list(range(n)), 16, seed=3)
    assert all(len(v) == 16 for v in g.values())
    p = Params(32, graphs.threshold(17), 100, b"k")
    drop = {1, 5, 9, 20, 33, 41}
    res = secure_sum(x, p, g, drop_before_masking=drop, drop_before_unmasking={2})
    assert np.array_equal(res.total, ring_sum(x[u] for u in res.survivors))
    assert 2 in res.survivors  # sent its masked input: summed even though it left after
    assert res.bytes_up["shares"] < 17 * 200


def test_fewer_than_t_survivors_abort_with_a_clear_error():
    n = 10
    x = ring_inputs(n, 50)
    p = Params(32, 6, 50, b"a")
    with pytest.raises(TrainError, match="only 5 clients sent masked inputs, fewer than the 6"):
        secure_sum(x, p, graphs.complete(list(range(n))), drop_before_masking={0, 1, 2, 3, 4})
    # enough masked inputs, too few unmasking answers: a secret cannot be rebuilt
    with pytest.raises(TrainError, match=r"cannot rebuild client .* of t=6 shares"):
        secure_sum(x, p, graphs.complete(list(range(n))), drop_before_masking={0, 1},
                   drop_before_unmasking={2, 3, 4})


def test_a_client_sending_bad_shares_is_treated_as_dropped():
    n = 9
    x = ring_inputs(n, 64)
    p = Params(32, 4, 64, b"b")
    g = graphs.complete(list(range(n)))
    server = SecAggServer(p, g)
    clients = {u: SecAggClient(u, x[u], p) for u in range(n)}
    rosters = server.advertise([c.advertise() for c in clients.values()])
    inbox = server.route([clients[u].share_keys(rosters[u]) for u in range(n)])
    masked = [clients[u].masked_input(inbox[u]) for u in range(n) if u != 8]
    survivors = server.collect(masked)
    unmasks = [clients[u].unmask(survivors) for u in survivors]
    liar = unmasks[0]  # client 0: well-formed but wrong shares of everybody
    bad_b = {v: (s.astype(np.int64) + 5).astype(np.uint32) % shamir.P
             for v, s in liar.b_shares.items()}
    unmasks[0] = Unmask(0, bad_b, liar.s_shares)
    malformed = Unmask(1, {v: np.zeros(3, np.uint32) for v in unmasks[1].b_shares},
                       unmasks[1].s_shares)
    unmasks[1] = malformed
    total = server.finish(unmasks)
    assert np.array_equal(total, ring_sum(x[u] for u in survivors))
    assert "malformed share" in server.failed[1]
    assert "wrong share" in server.failed[0]


def test_relayed_ciphertexts_cannot_be_swapped():
    p = Params(32, 2, 10, b"s")
    server = SecAggServer(p, graphs.complete([0, 1, 2]))
    clients = {u: SecAggClient(u, np.zeros(10, np.uint32), p) for u in range(3)}
    rosters = server.advertise([c.advertise() for c in clients.values()])
    inbox = server.route([clients[u].share_keys(rosters[u]) for u in range(3)])
    box = dict(inbox[2])
    box[0], box[1] = box[1], box[0]  # the relay swaps who sent what
    clients[2].masked_input(box)
    with pytest.raises(TrainError, match="failed authentication"):
        clients[2].unmask([0, 1, 2])


def _updates(n: int, global_params, seed: int = 0) -> Updates:
    g = torch.Generator().manual_seed(seed)
    params = [OrderedDict((k, v + 0.05 * torch.randn(v.shape, generator=g))
                          for k, v in global_params.items()) for _ in range(n)]
    return Updates.stack(list(range(n)), params, [10 + i for i in range(n)],
                         [0.5 + 0.01 * i for i in range(n)])


def test_strategy_matches_fedavg_over_the_survivors():
    w = OrderedDict(a=torch.zeros(4, 3), b=torch.ones(3))
    upd = _updates(12, w)
    strat = SecAggFedAvg(dropout=0.25, seed=1)
    new = strat.aggregate(2, w, upd)
    m = strat.round_metrics()
    assert m["secagg_survivors"] == 9 and m["secagg_dropped"] == 3
    rng = np.random.default_rng([1, 2])
    dropped = set(rng.choice(12, size=3, replace=False).tolist())
    keep = [i for i in range(12) if i not in dropped]
    wts = upd.num_examples[keep]
    vec = UpdateVector.for_model(w, int(upd.num_examples.sum()))
    for k in w:
        plain = (upd.params[k][keep] * wts.view(-1, *[1] * w[k].dim())).sum(0) / wts.sum()
        assert torch.allclose(new[k], plain.float(), atol=vec.delta.step)
    assert m["secagg_weight"] == int(wts.sum())


def test_presummed_row_from_the_grpc_backend_is_applied_as_is():
    w = OrderedDict(a=torch.zeros(2))
    row = Updates.stack([4], [OrderedDict(a=torch.tensor([1.0, 2.0]))], [30], [0.1])
    row.metrics["secagg"] = {"survivors": 3}
    strat = SecAggFedAvg()
    assert torch.equal(strat.aggregate(0, w, row)["a"], torch.tensor([1.0, 2.0]))
    assert strat.round_metrics() == {"secagg_survivors": 3}


# ---------------------------------------------------------------- over the grpc backend


class _Device(threading.Thread):
    """An FLClient in a thread whose fit adds a known offset to the global model."""

    def __init__(self, address: str, token: str, cid: int, client_cls=None) -> None:
        super().__init__(daemon=True)

        def fit(params, config, round_num):
            return (OrderedDict((k, v + 0.01 * (cid + 1)) for k, v in params.items()),
                    10 * (cid + 1), 0.1 * cid)

        cls = client_cls or FLClient
        self.client = cls(address, token, cid, fit=fit, num_examples=10 * (cid + 1),
                          give_up_s=10, retry_max_s=0.2)
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            self.client.run()
        except Exception as e:  # surfaced by the test
            self.error = e


class _DropsAfterSharing(FLClient):
    """Shares its keys, then vanishes before sending its masked input."""

    def _secagg_step(self, stub, reg, task):
        if task.secagg.WhichOneof("step") == "inbox":
            self.stop()
            return
        super()._secagg_step(stub, reg, task)


class _SendsShortMaskedInput(FLClient):
    def _send_secagg(self, stub, msg):
        if msg.WhichOneof("step") == "masked":
            msg.masked = msg.masked[:-4]
        return super()._send_secagg(stub, msg)


class _SendsOversizedMaskedInput(FLClient):
    def _send_secagg(self, stub, msg):
        if msg.WhichOneof("step") == "masked":
            msg.masked = msg.masked * 500
        return super()._send_secagg(stub, msg)


class _SendsOversizedShare(FLClient):
    def _send_secagg(self, stub, msg):
        if msg.WhichOneof("step") == "shared":
            msg.shared.shares[0].ciphertext = bytes(2000)
        return super()._send_secagg(stub, msg)


@pytest.fixture
def secagg_fleet():
    token = "t" * 32
    started: list[_Device] = []

    def start(n: int, special: dict | None = None, **kw):
        backend = SecAggGrpcBackend("127.0.0.1:0", token, min_clients=n, model_spec="logreg:3,2",
                                    round_timeout_s=20, wait_clients_s=20, heartbeat_s=0.5, **kw)
        for cid in range(n):
            d = _Device(backend.address, token, cid, (special or {}).get(cid))
            d.start()
            started.append(d)
        backend.available_clients()
        backend.devices = started[-n:]
        return backend

    backends = []
    yield lambda *a, **k: backends.append(start(*a, **k)) or backends[-1]
    for b in backends:
        b.close()
    for d in started:
        d.client.stop()
        d.join(10)


def _model():
    return OrderedDict(w=torch.zeros(2, 3), b=torch.zeros(2))


def _expected(ids: list[int]) -> float:
    wts = [10 * (c + 1) for c in ids]
    return sum(w * 0.01 * (c + 1) for w, c in zip(wts, ids, strict=True)) / sum(wts)


def test_grpc_secure_aggregation_end_to_end_with_a_dropout(secagg_fleet):
    backend = secagg_fleet(5, {2: _DropsAfterSharing})
    u = backend.fit(1, _model(), [0, 1, 2, 3, 4], FitConfig())
    info = u.metrics["secagg"]
    assert len(u) == 1 and info["survivors"] == 4 and info["dropped"] == 1
    assert 2 in u.metrics["failed"]
    step = 2.0 ** -UpdateVector.for_model(_model(), 150).delta.frac_bits
    want = _expected([0, 1, 3, 4])
    assert torch.allclose(u.params["w"][0], torch.full((2, 3), want), atol=step)
    assert float(u.num_examples[0]) == 10 + 20 + 40 + 50
    assert info["bytes_up_per_client"] > 0
    # the next round runs with the four that are left
    u2 = backend.fit(2, _model(), [0, 1, 3, 4], FitConfig())
    assert u2.metrics["secagg"]["survivors"] == 4


def test_grpc_bad_message_gets_a_status_and_its_sender_is_dropped(secagg_fleet):
    backend = secagg_fleet(4, {1: _SendsShortMaskedInput})
    strat = SecAggFedAvg()
    u = backend.fit(1, _model(), [0, 1, 2, 3], FitConfig())
    assert "masked input of client 1 has" in u.metrics["failed"][1]
    new = strat.aggregate(1, _model(), u)
    want = _expected([0, 2, 3])
    assert torch.allclose(new["b"], torch.full((2,), want), atol=1e-3)
    assert strat.round_metrics()["secagg_survivors"] == 3


def test_grpc_oversized_messages_are_refused_and_the_round_goes_on(secagg_fleet):
    backend = secagg_fleet(5, {1: _SendsOversizedMaskedInput, 2: _SendsOversizedShare},
                           max_update_bytes=4096)
    u = backend.fit(1, _model(), list(range(5)), FitConfig())
    assert "exceeds max_update_bytes=4096" in u.metrics["failed"][1]
    assert "oversized share" in u.metrics["failed"][2]
    assert "secagg" in u.metrics, u.metrics["failed"]
    assert u.metrics["secagg"]["survivors"] == 3
    assert torch.allclose(u.params["w"][0], torch.full((2, 3), _expected([0, 3, 4])), atol=1e-3)
    devices = backend.devices
    # each device counts its rejection, and its round, only once the server's reply reaches it,
    # which can be after the round has finished on the server
    end = time.monotonic() + 10
    while (devices[0].client.stats.rounds < 1 or devices[1].client.stats.rejected < 1
           or devices[2].client.stats.rejected < 1) and time.monotonic() < end:
        time.sleep(0.01)
    assert devices[1].client.stats.rejected == 1 and devices[2].client.stats.rejected == 1
    assert devices[0].client.stats.rounds == 1


def test_plain_grpc_server_refuses_secagg_messages_by_name():
    backend = GrpcBackend("127.0.0.1:0", "t" * 32, model_spec="logreg:3,2")
    try:
        with grpc.insecure_channel(backend.address) as ch:
            stub = fl_pb2_grpc.FederatedLearningStub(ch)
            reg = stub.Register(fl_pb2.RegisterRequest(client_id=0, num_examples=1),
                                metadata=auth_metadata("t" * 32))
            with pytest.raises(grpc.RpcError) as e:
                stub.SecAgg(fl_pb2.SecAggMessage(session=reg.session),
                            metadata=auth_metadata("t" * 32))
            assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "does not run secure aggregation" in e.value.details()
    finally:
        backend.close()


def test_server_loop_with_secagg_matches_fedavg_on_digits():
    task = make_task("digits", "iid", 4, "mlp:64,16,10", seed=0)
    ref = Server(task, FedAvg(), SequentialBackend(task), ServerConfig(rounds=1))
    ref.run()
    sec = Server(task, SecAggFedAvg(k=2), SequentialBackend(task), ServerConfig(rounds=1))
    records = sec.run()
    assert records[-1].extra["secagg_survivors"] == 4 and records[-1].extra["secagg_degree"] == 2
    for k, v in ref.params.items():
        assert torch.allclose(sec.params[k], v, atol=1e-4), k


def test_server_loop_over_grpc_secagg(secagg_fleet):
    backend = secagg_fleet(3)
    task = Task(lambda: build_model("logreg:3,2"), None, torch.zeros(4, 3),
                torch.zeros(4, dtype=torch.long), name="g")
    server = Server(task, SecAggFedAvg(), backend, ServerConfig(rounds=1))
    rec = server.run()[-1]
    assert rec.extra["secagg_survivors"] == 3
    # the record counts the clients that contributed and the protocol's real bytes, not the
    # single pre-summed row
    assert rec.clients == 3
    assert rec.bytes_up == backend_bytes(rec, "up") and rec.bytes_down == backend_bytes(rec, "down")
    with pytest.raises(TrainError, match="secure aggregation"):
        Server(task, SecAggFedAvg(), backend, ServerConfig(rounds=1, codec="fp16")).run()
    start = task.init_params()
    for k, v in server.params.items():
        assert torch.allclose(v, start[k] + _expected([0, 1, 2]), atol=1e-3), k


def backend_bytes(rec, direction):
    """The protocol's total bytes in one direction, from its per-client figure."""
    return round(rec.extra[f"secagg_bytes_{direction}_per_client"] * 3)


def test_fl_server_runs_secure_aggregation_from_its_yaml(tmp_path):
    """`edgeweave fl server --config` with a secure_aggregation section: the devices run the
    protocol, and the metrics line counts the three of them and the protocol's bytes."""
    import socket

    import yaml

    from edgeweave.cli import fl_cmds
    from edgeweave.train.checkpoint import read_metrics

    token = "s" * 32
    (tmp_path / "tok").write_text(token)
    (tmp_path / "tok").chmod(0o600)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": "logreg:64,10", "data": {"clients": 3}, "rounds": 2, "plot": False,
        "out_dir": str(tmp_path / "run"), "secure_aggregation": {"clip": 1.0}}))
    devices = [_Device(f"127.0.0.1:{port}", token, cid) for cid in range(3)]
    for d in devices:
        d.start()
    try:
        fl_cmds.fl_server(Console(file=io.StringIO()), config=cfg, listen=f"127.0.0.1:{port}",
                          token_file=tmp_path / "tok", test_data=None, min_clients=3,
                          round_timeout=20, wait_clients=20)
    finally:
        for d in devices:
            d.client.stop()
            d.join(10)
    lines = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [x["clients"] for x in lines] == [3, 3]
    assert all(x["secagg_survivors"] == 3 and x["bytes_up"] > 3 * 650 * 4 for x in lines)
