"""Early exits (BranchyNet) on the digits CNN: exit rules, calibration, reports, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeweave.adapt.datasets import digits
from edgeweave.adapt.exits import (
    BranchyNet,
    ExitError,
    attach_exits,
    calibrate_thresholds,
    candidate_exit_points,
    exit_report,
    normalized_entropy,
    train_heads,
    train_joint,
)
from edgeweave.errors import EdgeWeaveError
from edgeweave.graph import load_model


@pytest.fixture(scope="module")
def data():
    return digits(seed=0)


@pytest.fixture(scope="module")
def net(data):
    torch.manual_seed(0)
    spec = load_model("digits-cnn")
    model = attach_exits(spec.module, [1, 4], 10, spec.input_shape)
    return train_joint(model, data.x_train, data.y_train, epochs=3, seed=0)


def test_candidate_points_and_structure(net):
    spec = load_model("digits-cnn")
    assert candidate_exit_points(spec.module, spec.input_shape) == [1, 4]
    assert net.num_exits == 3
    outs = net(torch.zeros(2, 1, 8, 8))
    assert [tuple(o.shape) for o in outs] == [(2, 10)] * 3


def test_confidence_thresholds_extremes(net, data):
    x = data.x_test
    _, exits = net.infer(x, [0.0, 0.0], mode="confidence")
    assert (exits == 0).all()
    _, exits = net.infer(x, [1.01, 1.5], mode="confidence")
    assert (exits == 2).all()


def test_entropy_thresholds_extremes(net, data):
    x = data.x_test
    _, exits = net.infer(x, [1.0, 1.0], mode="entropy")
    assert (exits == 0).all()
    _, exits = net.infer(x, [5.0, 1.0, 0.3], mode="entropy")  # last value ignored
    assert (exits == 0).all()
    _, exits = net.infer(x, [-0.01, -1.0], mode="entropy")
    assert (exits == 2).all()


def test_normalized_entropy_range():
    assert float(normalized_entropy(torch.zeros(1, 10))) == pytest.approx(1.0)
    assert float(normalized_entropy(torch.tensor([[100.0, 0.0, 0.0]]))) == pytest.approx(0.0)


@pytest.mark.parametrize(("mode", "ts"), [("entropy", [0.2, 0.4]),
                                          ("confidence", [0.9, 0.7])])
def test_infer_matches_forward(net, data, mode, ts):
    x = data.x_test
    logits, exits = net.infer(x, ts, mode=mode)
    with torch.no_grad():
        outs = torch.stack(net(x))  # (exits, N, C)
    picked = outs[exits, torch.arange(len(x))]
    torch.testing.assert_close(logits, picked, rtol=1e-4, atol=1e-5)
    assert len(set(exits.tolist())) >= 2  # the thresholds really split the test set


@pytest.mark.parametrize("mode", ["entropy", "confidence"])
def test_calibration_meets_target(net, data, mode):
    with torch.no_grad():
        final = float((net(data.x_val)[-1].argmax(1) == data.y_val).float().mean())
    target = final - 0.01  # the final exit alone reaches it
    ts = calibrate_thresholds(net, data.x_val, data.y_val, target, mode=mode)
    assert len(ts) == 2
    logits, exits = net.infer(data.x_val, ts, mode=mode)
    assert float((logits.argmax(1) == data.y_val).float().mean()) >= target
    for k in range(2):
        mask = exits == k
        if mask.any():
            assert float((logits[mask].argmax(1) == data.y_val[mask]).float().mean()) >= target


def test_exit_report(net, data):
    x, y = data.x_test[:60], data.y_test[:60]
    report = exit_report(net, x, y, [0.3, 0.3], repeats=1)
    assert len(report) == 3
    assert sum(r["fraction"] for r in report) == pytest.approx(1.0)
    flops = [r["flops"] for r in report]
    assert flops == sorted(flops) and flops[0] < flops[1] < flops[2]
    assert 0.0 <= report.accuracy <= 1.0
    assert flops[0] <= report.mean_flops <= flops[2]
    assert report.mean_latency_s > 0
    assert report.summary()["exits"][0]["exit"] == 0


def test_train_heads_keeps_backbone(data):
    spec = load_model("digits-cnn")
    model = attach_exits(spec.module, [1], 10, spec.input_shape)
    before = [p.clone() for p in model.blocks.parameters()]
    heads_before = [p.clone() for p in model.heads.parameters()]
    train_heads(model, data.x_train[:256], data.y_train[:256], epochs=1)
    assert all(torch.equal(a, b) for a, b in zip(before, model.blocks.parameters(), strict=True))
    assert any(not torch.equal(a, b)
               for a, b in zip(heads_before, model.heads.parameters(), strict=True))
    assert all(p.requires_grad for p in model.blocks.parameters())


def test_bad_arguments(net, data):
    spec = load_model("digits-cnn")
    with pytest.raises(EdgeWeaveError, match="after: exit index 8 out of range"):
        attach_exits(spec.module, [1, 8], 10, spec.input_shape)
    with pytest.raises(EdgeWeaveError, match="out of range"):
        attach_exits(spec.module, [-1], 10, spec.input_shape)
    with pytest.raises(ExitError, match="exit index 3 out of range"):
        BranchyNet([nn.Identity(), nn.Identity()], {3: nn.Identity()})
    with pytest.raises(EdgeWeaveError, match="thresholds: expected 2"):
        net.infer(data.x_test[:4], [0.5])
    with pytest.raises(EdgeWeaveError, match="thresholds: expected 2"):
        exit_report(net, data.x_test[:4], data.y_test[:4], [0.1] * 4, latency=False)
    with pytest.raises(EdgeWeaveError, match="mode"):
        net.infer(data.x_test[:4], [0.5, 0.5], mode="margin")
    with pytest.raises(EdgeWeaveError, match="weights: expected 3"):
        train_joint(net, data.x_train[:8], data.y_train[:8], weights=[1.0], epochs=1)
    with pytest.raises(EdgeWeaveError, match="target_accuracy"):
        calibrate_thresholds(net, data.x_val, data.y_val, 1.5)
