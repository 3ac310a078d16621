"""Stateful update compression: error feedback, DGC, and the server's up/down codecs."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch

from edgeweave.codec import get_codec
from edgeweave.train.backends.sequential import SequentialBackend
from edgeweave.train.compress import DGC, ErrorFeedback, make_compressor, warmup_density
from edgeweave.train.models import build_model
from edgeweave.train.server import Server, ServerConfig
from edgeweave.train.strategies import FedAvg
from edgeweave.train.task import FederatedData, Task
from edgeweave.train.transfer import Transfer
from edgeweave.train.types import TrainError

pytestmark = pytest.mark.usefixtures("one_thread")


def _update(seed: int, scale: float = 1.0) -> OrderedDict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return OrderedDict([("w", torch.randn(20, 30, generator=g) * scale),
                        ("b", torch.randn(30, generator=g) * scale)])


def tiny_task(clients: int = 6, per_client: int = 8) -> Task:
    g = torch.Generator().manual_seed(0)
    n = clients * per_client
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return Task(lambda: build_model("logreg:4,3"),
                FederatedData(x, y, torch.arange(0, n + 1, per_client)), x[:12], y[:12],
                name="tiny")


@pytest.mark.parametrize("codec", ["topk:0.05", "randmask:0.1", "lowrank:0.2", "sketch:0.2,1",
                                   "qsgd:2"])
def test_error_feedback_loses_nothing(codec: str) -> None:
    """sum over rounds of what was decoded + the final residual == sum of the inputs."""
    ef = ErrorFeedback(get_codec(codec))
    sums = {c: {k: torch.zeros_like(v, dtype=torch.float64) for k, v in _update(0).items()}
            for c in (3, 8)}
    decoded = {c: {k: torch.zeros_like(v) for k, v in s.items()} for c, s in sums.items()}
    for r in range(6):
        for c in (3, 8):
            upd = _update(100 * c + r)
            dec, nbytes = ef.compress(c, upd)
            assert nbytes > 0
            for k in upd:
                sums[c][k] += upd[k].double()
                decoded[c][k] += dec[k].double()
    for c in (3, 8):
        for k in sums[c]:
            torch.testing.assert_close(decoded[c][k] + ef.residual[c][k], sums[c][k],
                                       atol=1e-5, rtol=1e-6)
    assert float(ef.residual[3]["w"].abs().sum()) > 0  # something was actually carried


def test_error_feedback_sends_the_carried_residual() -> None:
    ef = ErrorFeedback(get_codec("topk:0.25"))
    first, _ = ef.compress(0, OrderedDict(x=torch.tensor([4.0, 1.0, 0.0, 0.0])))
    assert first["x"].tolist() == [4.0, 0.0, 0.0, 0.0]
    second, _ = ef.compress(0, OrderedDict(x=torch.tensor([0.0, 0.5, 0.0, 0.0])))
    assert second["x"].tolist() == [0.0, 1.5, 0.0, 0.0]  # the held-back 1.0 goes out with 0.5


def test_error_feedback_state_roundtrip() -> None:
    a = ErrorFeedback(get_codec("topk:0.1"))
    a.compress(1, _update(1))
    b = ErrorFeedback(get_codec("topk:0.1"))
    b.load_state(a.state())
    out_a, n_a = a.compress(1, _update(2))
    out_b, n_b = b.compress(1, _update(2))
    assert n_a == n_b and all(torch.equal(out_a[k], out_b[k]) for k in out_a)


def test_dgc_warmup_schedule() -> None:
    assert [warmup_density(i, 0.001, 4) for i in range(6)] == \
        [0.25, 0.0625, 0.015625, 0.00390625, 0.001, 0.001]
    assert warmup_density(0, 0.5, 4) == 0.5  # a target denser than the ramp wins
    dgc = DGC(density=0.001, momentum=0.0, warmup=4)
    upd = OrderedDict(w=torch.randn(10_000, generator=torch.Generator().manual_seed(0)))
    sent = []
    for _ in range(6):
        dgc.begin_round(1)
        dec, _ = dgc.compress(0, upd)
        sent.append(int((dec["w"] != 0).sum()))
    assert sent == [2500, 625, 157, 40, 10, 10]


def test_dgc_dense_limit_is_the_fedavg_step() -> None:
    """Density 1, no clipping, no warm-up: every coordinate goes out every round, so momentum
    factor masking clears u and v each time and DGC must send each update unchanged."""
    dgc = DGC(density=1.0, momentum=0.9, clip=0.0, warmup=0)
    for r in range(4):
        dgc.begin_round(3)
        upd = _update(r, scale=1.0 + r)
        dec, _ = dgc.compress(5, upd)
        for k in upd:
            torch.testing.assert_close(dec[k], upd[k], atol=1e-6, rtol=1e-6)


def test_dgc_dense_limit_trains_like_fedavg() -> None:
    task = tiny_task()
    runs = [Server(task, FedAvg(fraction=0.5), SequentialBackend(task),
                   ServerConfig(rounds=4, up_codec=spec)) for spec in (None, "dgc:1,0.9,0,0")]
    for s in runs:
        s.run()
    for k, v in runs[0].params.items():
        torch.testing.assert_close(runs[1].params[k], v, atol=1e-5, rtol=1e-5)


def test_dgc_momentum_correction_and_factor_masking() -> None:
    dgc = DGC(density=0.25, momentum=0.5, warmup=0)
    g = torch.tensor([8.0, 4.0, 2.0, 1.0])
    dgc.begin_round(1)
    dec, _ = dgc.compress(7, OrderedDict(x=g))
    # u = 0.5 * 0 + g; v = u; the largest of v goes out, u and v are zeroed there
    assert dec["x"].tolist() == [8.0, 0.0, 0.0, 0.0]
    assert dgc.u[7]["x"].tolist() == [0.0, 4.0, 2.0, 1.0]
    assert dgc.v[7]["x"].tolist() == [0.0, 4.0, 2.0, 1.0]
    dgc.begin_round(1)
    dec, _ = dgc.compress(7, OrderedDict(x=g))
    # u = 0.5 u + g = [8, 6, 3, 1.5]; v += u = [8, 10, 5, 2.5]: coordinate 1 goes, with the
    # momentum of the round it waited (10 = 4 + 6, not 2 * 4)
    assert dec["x"].tolist() == [0.0, 10.0, 0.0, 0.0]
    assert dgc.u[7]["x"].tolist() == [8.0, 0.0, 3.0, 1.5]
    assert dgc.v[7]["x"].tolist() == [8.0, 0.0, 5.0, 2.5]


def test_dgc_without_momentum_is_topk_with_error_feedback() -> None:
    dgc, ef = DGC(density=0.05, momentum=0.0, warmup=0), ErrorFeedback(get_codec("topk:0.05"))
    for r in range(4):
        dgc.begin_round(1)
        a, na = dgc.compress(0, _update(r))
        b, nb = ef.compress(0, _update(r))
        assert na == nb  # same selection; values differ only by float64 -> float32 rounding
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-6)


def test_dgc_local_clipping_scales_with_senders() -> None:
    dgc = DGC(density=1.0, momentum=0.0, clip=2.0, warmup=0)
    dgc.begin_round(4)  # 4 senders: each clips to 2 / sqrt(4) = 1
    upd = _update(5, scale=3.0)
    dec, _ = dgc.compress(0, upd)
    norm = math.sqrt(sum(float(v.pow(2).sum()) for v in dec.values()))
    assert norm == pytest.approx(1.0, rel=1e-5)
    ratio = dec["w"] / upd["w"]
    assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio))  # one scale, direction kept


def test_dgc_state_roundtrip_and_specs() -> None:
    a = make_compressor("dgc:0.01,0.9,0,2")
    assert isinstance(a, DGC) and (a.density, a.momentum, a.warmup) == (0.01, 0.9, 2)
    a.begin_round(2)
    a.compress(3, _update(0))
    b = make_compressor("dgc:0.01,0.9,0,2")
    b.load_state(a.state())
    for c in (a, b):
        c.begin_round(2)
    out_a, _ = a.compress(3, _update(1))
    out_b, _ = b.compress(3, _update(1))
    assert all(torch.equal(out_a[k], out_b[k]) for k in out_a)
    for bad in ("dgc:2", "dgc:0.1,1", "dgc:0.1,0.9,-1", "dgc:0.1,0.9,0,1.5", "ef:nope", ""):
        with pytest.raises(TrainError):
            make_compressor(bad, "server config: up_codec")


def test_server_counts_up_and_down_payloads_exactly() -> None:
    task = tiny_task()
    cfg = ServerConfig(rounds=3, up_codec="randk:0.25", down_codec="ef:qsgd:3,0")
    recs = Server(task, FedAvg(fraction=0.5), SequentialBackend(task), cfg).run()
    shapes = [v.numel() for v in task.init_params().values()]  # logreg:4,3 -> 12 and 3
    per_up = sum(math.ceil(0.25 * n) * 4 for n in shapes)
    per_down_delta = sum(4 + math.ceil(n * 3 / 8) for n in shapes)  # norm + 3-bit codes (s=3)
    for r in recs:
        assert r.bytes_up == 3 * per_up
    assert recs[0].bytes_down == 3 * sum(shapes) * 4  # first broadcast: the full model, raw
    assert [r.bytes_down for r in recs[1:]] == [3 * per_down_delta] * 2
    assert all(0 <= r.test_acc <= 1 for r in recs)


def test_codec_still_means_both_directions() -> None:
    task = tiny_task()
    recs = Server(task, FedAvg(fraction=0.5), SequentialBackend(task),
                  ServerConfig(rounds=1, codec="int8")).run()
    n = sum(v.numel() for v in task.init_params().values())
    assert recs[0].bytes_up == 3 * n and recs[0].bytes_down == 3 * n
    recs = Server(task, FedAvg(fraction=0.5), SequentialBackend(task),
                  ServerConfig(rounds=1, codec="int8", up_codec="ef:topk:0.05")).run()
    assert recs[0].bytes_down == 3 * n and recs[0].bytes_up < 3 * n


def test_downlink_delta_mode_tracks_the_model() -> None:
    t = Transfer(down="ef:topk:0.2")
    models = [_update(i) for i in range(5)]
    first, nbytes = t.down(models[0])
    assert nbytes == sum(v.numel() * 4 for v in models[0].values())
    assert all(torch.equal(first[k], models[0][k]) for k in first)
    for m in models[1:]:
        held, nbytes = t.down(m)
        assert nbytes < sum(v.numel() * 4 for v in m.values()) / 2
        residual = t.downlink.residual[-1]
        for k in m:  # what clients hold + what the server still owes them == the model
            torch.testing.assert_close(held[k].double() + residual[k], m[k].double(),
                                       atol=1e-5, rtol=1e-6)
    u = Transfer(down="ef:topk:0.2")
    u.load_state(t.state())
    a, _ = t.down(models[0])
    b, _ = u.down(models[0])
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_specs_name_the_field() -> None:
    task = tiny_task()
    for field, spec in (("up_codec", "topk:2"), ("down_codec", "dgc:0,0.9"),
                        ("codec", "nope:1")):
        with pytest.raises(TrainError, match=field):
            Server(task, FedAvg(), SequentialBackend(task),
                   ServerConfig(rounds=1, **{field: spec}))
