"""Split learning, activation privacy and GPipe pipelines (edgeweave.train.split)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import OrderedDict

import grpc
import pytest
import torch
from torch import nn

from edgeweave.codec import get_codec
from edgeweave.security import generate_token, write_token
from edgeweave.train.data import make_task
from edgeweave.train.models import build_model
from edgeweave.train.split import (
    ClipNoise,
    Nullify,
    SplitConfig,
    SplitTrainer,
    arden,
    privacy_from_spec,
    split_sequential,
)
from edgeweave.train.split.grpc_edge import GrpcLink, SplitEdgeServer
from edgeweave.train.split.messages import encoded_to_msg
from edgeweave.train.task import FederatedData, client_seed
from edgeweave.train.types import TrainError
from edgeweave.train.wire import split_pb2, split_pb2_grpc

pytestmark = pytest.mark.usefixtures("one_thread")

MLP = "mlp:64,32,32,10"


@pytest.fixture(scope="module")
def digits_task():
    return make_task("digits", "iid", 3, "cnn:8,8,16", seed=0)


@pytest.fixture(scope="module")
def small_data():
    """3 clients, 40 samples of digits (flat, for the MLP)."""
    task = make_task("digits", "iid", 3, MLP, seed=0)
    x, y = task.data.x[:120], task.data.y[:120]
    return FederatedData(x, y, torch.tensor([0, 40, 80, 120])), task.test_x, task.test_y


@pytest.fixture(scope="module")
def full_task():
    return make_task("digits", "iid", 3, MLP, seed=0)


def unsplit_reference(config: SplitConfig, data: FederatedData) -> OrderedDict:
    """Plain single-model SGD on the same batches in the same order (the definition split
    learning must reproduce with a lossless codec)."""
    torch.manual_seed(config.init_seed)
    model = build_model(config.model)
    for epoch in range(config.epochs):
        for cid in range(data.num_clients):
            x, y = data.client(cid)
            g = torch.Generator().manual_seed(client_seed(config.seed, epoch, cid))
            perm = torch.randperm(len(y), generator=g)
            for lo in range(0, len(y), config.batch_size):
                idx = perm[lo:lo + config.batch_size]
                loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
                model.zero_grad()
                loss.backward()
                with torch.no_grad():
                    for p in model.parameters():
                        p.sub_(config.lr * p.grad)
    return OrderedDict((k, v.detach()) for k, v in model.state_dict().items())


def split_weights(trainer: SplitTrainer) -> OrderedDict:
    # nn.Sequential slices keep the original layer names, so the halves' keys are disjoint
    items = [*trainer.device.weights().items(), *trainer.edge.weights().items()]
    return OrderedDict(sorted(items, key=lambda kv: int(kv[0].partition(".")[0])))


def assert_same(a: OrderedDict, b: OrderedDict, atol=1e-6, rtol=1e-5) -> None:
    assert list(a) == list(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=rtol, msg=k)


# ----------------------------------------------------------------------- split == unsplit

@pytest.mark.parametrize("cut", [1, 2, 4])
def test_split_equals_unsplit_training_with_lossless_codec(small_data, cut):
    data, _, _ = small_data
    cfg = SplitConfig(MLP, cut=cut, lr=0.1, batch_size=8, epochs=2)
    trainer = SplitTrainer(cfg)
    trainer.run(data)
    assert_same(split_weights(trainer), unsplit_reference(cfg, data))


def test_split_cnn_equals_unsplit(digits_task):
    d = digits_task.data
    data = FederatedData(d.x[:60], d.y[:60], torch.tensor([0, 30, 60]))
    cfg = SplitConfig("cnn:8,8,16", cut=5, lr=0.05, batch_size=10, epochs=1)
    trainer = SplitTrainer(cfg)
    trainer.run(data)
    assert_same(split_weights(trainer), unsplit_reference(cfg, data))


def test_lossy_codec_changes_the_model_but_still_learns(full_task):
    t = full_task
    recs = SplitTrainer(SplitConfig(MLP, cut=2, lr=0.3, epochs=2, codec="int8")).run(
        t.data, t.test_x, t.test_y)
    assert recs[-1].test_acc > 0.8
    assert recs[-1].train_loss < recs[0].train_loss


@pytest.mark.parametrize("cut,head", [(1, 4), (2, 4), (2, 3)])
def test_u_shaped_split_equals_unsplit_and_sends_no_labels(small_data, cut, head):
    data, tx, ty = small_data
    cfg = SplitConfig(MLP, cut=cut, head=head, lr=0.1, batch_size=8, epochs=2)
    trainer = SplitTrainer(cfg)
    recs = trainer.run(data, tx, ty)
    assert_same(split_weights(trainer), unsplit_reference(cfg, data))
    assert all(r.label_bytes == 0 for r in recs)
    # up: activations + feature gradients; down: features + activation gradients; every one
    # of them 32 wide in this MLP; float32, 120 samples per epoch
    assert recs[-1].activation_bytes == 4 * 120 * (32 + 32)
    assert recs[-1].gradient_bytes == 4 * 120 * (32 + 32)
    assert 0 <= recs[-1].test_acc <= 1


def test_u_shape_config_and_protocol_errors():
    with pytest.raises(TrainError, match="head 2 must be"):
        SplitTrainer(SplitConfig(MLP, cut=2, head=2))
    from edgeweave.train.split import make_edge

    edge = make_edge(SplitConfig(MLP, cut=2, head=4))
    none = get_codec("none")
    with pytest.raises(TrainError, match="no forward pending"):
        edge.middle_backward(0, 0, none.encode(torch.ones(4, 32)))
    edge.middle_forward(0, 5, none.encode(torch.ones(4, 32)), True)
    with pytest.raises(TrainError, match="no forward pending for client 0 step 4"):
        edge.middle_backward(0, 4, none.encode(torch.ones(4, 32)))
    with pytest.raises(TrainError, match=r"declared shape \[4, 7\], expected \[4, 32\]"):
        edge.middle_backward(0, 5, none.encode(torch.ones(4, 7)))
    edge.middle_backward(0, 5, none.encode(torch.ones(4, 32)))  # the right one still works


def test_u_shape_over_grpc_in_process_equals_local(small_data, token):
    tok, _ = token
    data, tx, ty = small_data
    cfg = SplitConfig(MLP, cut=2, head=4, lr=0.1, batch_size=16, epochs=1, codec="fp16")
    local = SplitTrainer(cfg)
    local_rec = local.run(data, tx, ty)[0]
    with SplitEdgeServer(cfg, tok) as server:
        link = GrpcLink(server.address, tok, timeout_s=10)
        remote = SplitTrainer(cfg, link)
        rec = remote.run(data, tx, ty)[0]
        link.close()
        # bit-identical: the server pins gRPC worker threads to the caller's torch thread
        # count, so no reduction is split differently from the in-process run
        assert_same(server.edge.weights(), local.edge.weights(), atol=0, rtol=0)
    assert_same(remote.device.weights(), local.device.weights(), atol=0, rtol=0)
    assert (rec.bytes_up, rec.bytes_down, rec.test_acc) == (
        local_rec.bytes_up, local_rec.bytes_down, local_rec.test_acc)


# ----------------------------------------------------------------------- bytes

@pytest.mark.parametrize("codec,per_entry", [("none", 4), ("fp16", 2), ("int8", 1)])
def test_bytes_per_epoch_equal_the_formula(small_data, codec, per_entry):
    data, _, _ = small_data
    cfg = SplitConfig(MLP, cut=2, batch_size=16, epochs=2, codec=codec)
    trainer = SplitTrainer(cfg)
    recs = trainer.run(data)
    n, width = 120, 32  # samples; activation entries per sample after mlp layers 0-1
    device_param_bytes = (64 * 32 + 32) * 4
    steps = 3 * math.ceil(40 / 16)
    for r in recs:
        assert r.activation_bytes == per_entry * width * n
        assert r.gradient_bytes == per_entry * width * n
        assert r.label_bytes == 8 * n
        assert r.steps == steps
    # handoffs: 0->1, 1->2 in epoch 0, then 2->0 too in every later epoch
    assert [r.handoffs for r in recs] == [2, 3]
    assert recs[1].weight_bytes_up == recs[1].weight_bytes_down == 3 * device_param_bytes
    assert recs[1].bytes_up == per_entry * width * n + 8 * n + 3 * device_param_bytes
    assert recs[1].bytes_down == per_entry * width * n + 3 * device_param_bytes


def test_zstd_bytes_are_the_payload_sizes(small_data):
    data, _, _ = small_data
    cfg = SplitConfig(MLP, cut=2, batch_size=40, epochs=1, codec="int8+zstd")
    trainer = SplitTrainer(cfg)
    rec = trainer.run(data)[0]
    # recompute the first client's payload independently: same model, same batch
    torch.manual_seed(0)
    dev, _ = split_sequential(build_model(MLP), 2)
    x, _ = data.client(0)
    g = torch.Generator().manual_seed(client_seed(0, 0, 0))
    first = get_codec("int8+zstd").encode(dev(x[torch.randperm(40, generator=g)]).detach())
    assert 0 < first.nbytes < 32 * 40  # zstd beats raw int8 on ReLU zeros
    assert rec.activation_bytes < 32 * 120
    assert rec.activation_bytes >= first.nbytes


# ----------------------------------------------------------------------- privacy

def test_clip_bounds_every_sample_norm():
    a = torch.randn(64, 10, 3) * 5
    for mech, ord_ in (("gaussian", 2), ("laplace", 1)):
        t = ClipNoise(clip=2.0, noise_multiplier=0.0, mechanism=mech)
        out = t.on_activation(a, torch.Generator().manual_seed(0))
        norms = torch.linalg.vector_norm(out.reshape(64, -1), ord=ord_, dim=1)
        assert float(norms.max()) <= 2.0 + 1e-5
        small = a * 1e-3  # already inside the bound: untouched
        torch.testing.assert_close(t.on_activation(small, torch.Generator()), small)


@pytest.mark.parametrize("mech,std_factor", [("gaussian", 1.0), ("laplace", math.sqrt(2))])
def test_noise_std_matches_calibration(mech, std_factor):
    # Monte-Carlo: 200k noise draws on a zero activation; std of the sample std is ~0.3% for
    # Gaussian and ~0.5% for Laplace, so a 3% tolerance fails only on a real miscalibration
    t = ClipNoise(clip=1.5, noise_multiplier=0.8, mechanism=mech)
    out = t.on_activation(torch.zeros(200, 1000), torch.Generator().manual_seed(1))
    expected = 0.8 * 1.5 * std_factor
    assert abs(float(out.std()) / expected - 1) < 0.03
    assert abs(float(out.mean())) < 0.02


def test_nullification_rate_and_reproducibility():
    t = Nullify(0.3)
    x = torch.ones(100, 1000)
    out = t.on_input(x, torch.Generator().manual_seed(3))
    assert abs(float((out == 0).float().mean()) - 0.3) < 0.01  # 1e5 draws: sd 0.0015
    assert set(out.unique().tolist()) == {0.0, 1.0}  # zeroed, not rescaled
    torch.testing.assert_close(out, t.on_input(x, torch.Generator().manual_seed(3)))
    assert torch.equal(t.on_activation(x, torch.Generator()), x)  # acts on the input only


def test_arden_nullifies_input_and_noises_activations():
    a = arden(rate=0.5, clip=1.0, noise_multiplier=0.5)
    g = torch.Generator().manual_seed(0)
    assert float((a.on_input(torch.ones(50, 50), g) == 0).float().mean()) == pytest.approx(
        0.5, abs=0.03)
    out = a.on_activation(torch.zeros(100, 400), g)
    assert float(out.std()) == pytest.approx(0.5 * math.sqrt(2), rel=0.05)
    assert a.guarantee(1)["epsilon"] == pytest.approx(4.0)  # Laplace: 2 clip / b


def test_privacy_guarantees():
    g = ClipNoise(1.0, 4.0)
    e1, e10 = g.guarantee(1)["epsilon"], g.guarantee(10)["epsilon"]
    assert 0 < e1 < e10 < 10 * e1  # RDP composition is sublinear
    assert ClipNoise(1.0, 8.0).guarantee(10)["epsilon"] < e10
    assert ClipNoise(1.0, 0.0).guarantee(1)["epsilon"] == math.inf
    assert Nullify(0.5).guarantee(1)["epsilon"] == math.inf  # no formal guarantee alone
    assert ClipNoise(1.0, 2.0, "laplace").guarantee(3)["epsilon"] == pytest.approx(3.0)


def test_privacy_specs_and_errors():
    assert isinstance(privacy_from_spec("gaussian:1,0.5"), ClipNoise)
    assert privacy_from_spec("none") is None
    with pytest.raises(TrainError, match="unknown kind"):
        privacy_from_spec("blur:1")
    with pytest.raises(TrainError, match="takes 3"):
        privacy_from_spec("arden:0.1")
    with pytest.raises(TrainError, match="clip"):
        ClipNoise(0.0, 1.0)
    with pytest.raises(TrainError, match="rate"):
        Nullify(1.0)


def test_noisy_split_training_backprops_through_the_transform(full_task):
    t = full_task
    cfg = SplitConfig(MLP, cut=2, lr=0.3, epochs=2)

    def acc(privacy):
        return SplitTrainer(cfg, privacy=privacy).run(t.data, t.test_x, t.test_y)[-1].test_acc

    clean, mild, heavy = acc(None), acc(ClipNoise(20.0, 0.01)), acc(ClipNoise(1.0, 5.0))
    assert clean > 0.8 and mild > 0.8
    assert heavy < mild - 0.2  # noise at 5x the clip bound drowns the signal


def test_bad_configs_raise_train_error():
    with pytest.raises(TrainError, match="cut 9 is out of range"):
        SplitTrainer(SplitConfig(MLP, cut=9))
    with pytest.raises(TrainError, match="codec"):
        SplitConfig(MLP, cut=1, codec="jpeg")
    with pytest.raises(TrainError, match="split learning cuts a sequential model spec such as "
                                         "--model"):
        split_sequential(nn.Linear(2, 2), 1)


# ----------------------------------------------------------------------- gRPC

@pytest.fixture
def token(tmp_path):
    path = tmp_path / "token"
    return write_token(path), path


@pytest.mark.slow  # a fresh Python importing torch: several seconds on a loaded box
def test_grpc_device_process_equals_in_process(small_data, token, tmp_path):
    tok, path = token
    cfg = SplitConfig(MLP, cut=2, lr=0.1, batch_size=16, epochs=1, seed=3)
    task = make_task("digits", "iid", 3, MLP, seed=3)
    local = SplitTrainer(cfg)
    local_recs = local.run(task.data, task.test_x, task.test_y)
    with SplitEdgeServer(cfg, tok) as server:
        proc = subprocess.run(
            [sys.executable, "-m", "edgeweave.train.split", "device", "--edge", server.address,
             "--token-file", str(path), "--model", MLP, "--cut", "2", "--lr", "0.1",
             "--clients", "3", "--epochs", "1", "--seed", "3"],
            capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        lines = [json.loads(s) for s in proc.stdout.splitlines()]
        assert lines[-1]["done"]
        rec = lines[0]
        assert rec["bytes_up"] == local_recs[0].bytes_up
        assert rec["bytes_down"] == local_recs[0].bytes_down
        assert rec["test_acc"] == pytest.approx(local_recs[0].test_acc)
        assert_same(server.edge.weights(), local.edge.weights())
        assert_same(server.edge.get_device_weights(), local.device.weights())


def _raw_stub(server):
    ch = grpc.insecure_channel(server.address)
    return ch, split_pb2_grpc.SplitLearningStub(ch)


def test_grpc_rejects_bad_token_and_malformed_tensors_and_keeps_serving(token):
    tok, _ = token
    cfg = SplitConfig(MLP, cut=2)
    none = get_codec("none")
    with SplitEdgeServer(cfg, tok) as server:
        ch, stub = _raw_stub(server)
        good = split_pb2.ForwardRequest(activations=encoded_to_msg(none.encode(torch.ones(4, 32))),
                                        labels=encoded_to_msg(none.encode(torch.arange(4))),
                                        train=True)
        md = (("authorization", "Bearer " + tok),)
        for bad_md in ((), (("authorization", "Bearer " + generate_token()),)):
            with pytest.raises(grpc.RpcError) as e:
                stub.Forward(good, metadata=bad_md, timeout=5)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        bad_cases = {
            "payload": split_pb2.ForwardRequest(
                activations=split_pb2.Tensor(codec="none", dtype="float32", shape=[4, 32],
                                             payload=b"\0" * 10), labels=good.labels),
            "not fit": split_pb2.ForwardRequest(
                activations=encoded_to_msg(none.encode(torch.ones(4, 7))), labels=good.labels),
            "labels must be in": split_pb2.ForwardRequest(
                activations=good.activations,
                labels=encoded_to_msg(none.encode(torch.tensor([0, 1, 2, 99])))),
            "NaN": split_pb2.ForwardRequest(
                activations=encoded_to_msg(none.encode(torch.full((4, 32), math.nan))),
                labels=good.labels),
            "unknown codec": split_pb2.ForwardRequest(
                activations=split_pb2.Tensor(codec="gzip", dtype="float32", shape=[1]),
                labels=good.labels),
        }
        before = server.edge.weights()
        for needle, req in bad_cases.items():
            with pytest.raises(grpc.RpcError) as e:
                stub.Forward(req, metadata=md, timeout=5)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, needle
            assert needle in e.value.details(), (needle, e.value.details())
        assert_same(server.edge.weights(), before)  # nothing bad reached the model
        bad_w = split_pb2.DeviceWeights(params=[encoded_to_msg(none.encode(torch.ones(3)), "x")])
        with pytest.raises(grpc.RpcError) as e:
            stub.PutDeviceWeights(bad_w, metadata=md, timeout=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as e:
            stub.MiddleBackward(split_pb2.MiddleBackwardRequest(client_id=7, step=1,
                                                                gradient=good.activations),
                                metadata=md, timeout=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "no forward pending" in e.value.details()
        reply = stub.Forward(good, metadata=md, timeout=5)  # still serving
        assert reply.HasField("gradient") and reply.loss > 0
        assert server.auth.rejected == 2
        ch.close()
        link = GrpcLink(server.address, generate_token(), timeout_s=5)
        with pytest.raises(TrainError, match="UNAUTHENTICATED"):
            link.forward(0, 0, none.encode(torch.ones(4, 32)), none.encode(torch.arange(4)),
                         True)
        link.close()


# ----------------------------------------------------------------------- GPipe

PIPE_MODEL = "mlp:64,48,48,48,10"


def _plain_steps(model: nn.Module, batches, lr: float) -> list[float]:
    losses = []
    for x, y in batches:
        loss = nn.functional.cross_entropy(model(x), y)
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p.sub_(lr * p.grad)
        losses.append(float(loss.detach()))
    return losses


@pytest.fixture(scope="module")
def pipe_batches():
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(20, 64, generator=g), torch.randint(0, 10, (20,), generator=g))
            for _ in range(3)]


@pytest.mark.parametrize("stages", [2, 3, 4])
@pytest.mark.parametrize("micro", [1, 3, 7])
def test_gpipe_equals_plain_training(pipe_batches, stages, micro):
    import copy

    from edgeweave.train.split.pipeline import GPipe

    torch.manual_seed(1)
    model = build_model(PIPE_MODEL)
    ref = copy.deepcopy(model)
    with GPipe(model, stages, micro, lr=0.1) as pipe:
        assert pipe.num_stages == stages
        losses = [pipe.step(x, y).loss for x, y in pipe_batches]  # 20 samples / 3 or 7: uneven
    ref_losses = _plain_steps(ref, pipe_batches, 0.1)
    assert losses == pytest.approx(ref_losses, abs=1e-6)
    assert_same(OrderedDict(model.state_dict()), OrderedDict(ref.state_dict()))


def test_gpipe_time_balancing_and_explicit_bounds(pipe_batches):
    from edgeweave.train.split.pipeline import GPipe

    model = build_model(PIPE_MODEL)
    x, y = pipe_batches[0]
    with GPipe(model, 3, 2, lr=0.1, by="time", sample=x[:10]) as pipe:
        assert len(pipe.bounds) == 3 and pipe.bounds[0] == 0
        pipe.step(x, y)
    with GPipe(model, [0, 5], 2, lr=0.1) as pipe:
        assert [m.layers for m in pipe.memory()] == [(0, 5), (5, 7)]
    with pytest.raises(TrainError, match="increasing"):
        GPipe(model, [1, 3], 2, lr=0.1)
    with pytest.raises(TrainError, match="sample"):
        GPipe(model, 2, 2, lr=0.1, by="time")


def test_balanced_bounds_is_optimal():
    import itertools

    from edgeweave.train.split.pipeline import balanced_bounds

    costs = [5, 1, 1, 8, 2, 2, 3, 9, 1]
    for s in (2, 3, 4):
        bounds = balanced_bounds(costs, s)
        worst = max(sum(costs[a:b]) for a, b in zip(bounds, [*bounds[1:], len(costs)], strict=True))
        brute = min(max(sum(costs[a:b]) for a, b in zip((0, *c), (*c, len(costs)), strict=True))
                    for c in itertools.combinations(range(1, len(costs)), s - 1))
        assert worst == brute
    with pytest.raises(TrainError, match="non-empty"):
        balanced_bounds([1, 2], 3)


def test_bubble_replay_matches_theory_for_equal_stages():
    from edgeweave.train.split.pipeline import replay_bubble, theoretical_bubble

    for s, m in ((2, 1), (4, 8), (3, 5)):
        ev = [(i, k, j, 0.0, 1.0 if k == "F" else 2.0) for i in range(s) for k in "FB"
              for j in range(m)]
        assert replay_bubble(ev, s, m) == pytest.approx(theoretical_bubble(s, m))


def test_gpipe_measures_timeline(pipe_batches):
    from edgeweave.train.split.pipeline import GPipe

    with GPipe(build_model(PIPE_MODEL), 3, 4, lr=0.1) as pipe:
        st = pipe.step(*pipe_batches[0])
    assert len(st.events) == 3 * 4 * 2
    assert 0 <= st.bubble < 1 and len(st.busy_s) == 3
    # stage s cannot start micro-batch m before stage s-1 finished it
    f = {(s, m): (a, b) for s, k, m, a, b in st.events if k == "F"}
    assert all(f[(s, m)][0] >= f[(s - 1, m)][1] for s in (1, 2) for m in range(4))


def test_memory_cap_whole_model_exceeds_each_stage_fits(pipe_batches):
    from edgeweave.train.split.pipeline import GPipe, stage_memory

    x, y = pipe_batches[0]
    model = build_model("mlp:64,256,256,256,10")
    whole = stage_memory(model, 1, 4, x, y)[0]
    parts = stage_memory(model, 4, 4, x, y)
    assert sum(p.param_bytes for p in parts) == whole.param_bytes
    assert all(p.activation_bytes > 0 for p in parts)
    cap = max(p.total for p in parts)
    assert whole.total > cap  # the model does not fit one such device ...
    with GPipe(model, 4, 4, lr=0.1, memory_cap_bytes=cap) as pipe:  # ... its 4 stages do
        pipe.step(x, y)
    with pytest.raises(TrainError, match=r"stage 0 .* over the"):  # refused before training
        GPipe(build_model("mlp:64,256,256,256,10"), 1, 4, lr=0.1, memory_cap_bytes=cap)
    tight = max(p.param_bytes + p.grad_bytes for p in parts) + 1
    with GPipe(build_model("mlp:64,256,256,256,10"), 4, 4, lr=0.1,
               memory_cap_bytes=tight) as pipe, pytest.raises(TrainError, match="activations"):
        pipe.step(x, y)  # params + grads fit; the measured activations do not


def test_gpipe_stage_failure_is_reported_not_hung(pipe_batches):
    from edgeweave.train.split.pipeline import GPipe

    x, _ = pipe_batches[0]
    pipe = GPipe(build_model(PIPE_MODEL), 3, 2, lr=0.1)
    with pytest.raises(TrainError, match="stage 2 failed"):
        pipe.step(x, torch.full((20,), 99))  # label out of range in the loss stage
    assert not any(st.is_alive() for st in pipe.stages)  # every stage thread ended
    with pytest.raises(TrainError, match="closed"):
        pipe.step(x, torch.zeros(20, dtype=torch.long))
    with GPipe(build_model(PIPE_MODEL), 2, 8, lr=0.1) as pipe, \
            pytest.raises(TrainError, match="cannot be split"):
        pipe.step(x[:4], torch.zeros(4, dtype=torch.long))
