"""DDNN (distributed DNN over several end devices): views, shapes, aggregation, exits, bytes."""

from __future__ import annotations

import pytest
import torch

from edgeweave.adapt.datasets import digits
from edgeweave.adapt.ddnn import (
    AGGREGATIONS,
    DDNN,
    DDNNError,
    ddnn_report,
    make_views,
    train_ddnn,
)
from edgeweave.errors import EdgeWeaveError


@pytest.fixture(scope="module")
def data():
    return digits(seed=0)


@pytest.fixture(scope="module")
def trained(data):
    torch.manual_seed(0)
    model = DDNN(3, "avg")
    views = make_views(data.x_train, 3, seed=0)
    return train_ddnn(model, views, data.y_train, epochs=5, seed=0)


def test_make_views_deterministic_and_shaped(data):
    x = data.x_test[:50]
    a = make_views(x, 3, seed=4)
    assert a.shape == (3, 50, 1, 8, 8)
    assert torch.equal(a, make_views(x, 3, seed=4))
    assert a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a[0], a[1])  # each device sees its own view
    assert torch.equal(make_views(x, 1, seed=4)[0], a[0])  # device 0 independent of n
    assert not torch.equal(a, make_views(x, 3, seed=5))
    assert make_views(x, 2, seed=0, per_sample_shift=True).shape == (2, 50, 1, 8, 8)
    clean = make_views(x, 1, seed=0, shift=0, sigma=0.0, patch=0)
    assert torch.allclose(clean[0], x)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("n_devices", [1, 3])
def test_forward_shapes_each_aggregation(aggregation, n_devices):
    torch.manual_seed(0)
    model = DDNN(n_devices, aggregation)
    views = torch.rand(n_devices, 7, 1, 8, 8)
    local, cloud = model(views)
    assert local.shape == (7, 10) and cloud.shape == (7, 10)
    feats, exits = model.device_outputs(views)
    assert feats.shape == (n_devices, 7, 8, 4, 4) and exits.shape == (n_devices, 7, 10)
    res = model.infer(views, 0.5)
    assert res.predictions.shape == (7,) and res.local_exit.dtype == torch.bool


def test_bytes_accounting_and_threshold_extremes():
    torch.manual_seed(0)
    model = DDNN(3, "max")
    views = torch.rand(3, 20, 1, 8, 8)
    local_bytes = 3 * 10 * 4
    cloud_bytes = local_bytes + 3 * 8 * 4 * 4 * 4
    assert model.bytes_local() == local_bytes and model.bytes_cloud() == cloud_bytes
    assert model.raw_upload_bytes() == 3 * 64 * 4
    all_local = model.infer(views, 1.0)
    assert all_local.local_exit.all()
    assert torch.all(all_local.bytes_per_sample == local_bytes)
    local, cloud = model(views)
    assert torch.equal(all_local.predictions, local.argmax(1))
    all_cloud = model.infer(views, -0.1)
    assert not all_cloud.local_exit.any()
    assert torch.all(all_cloud.bytes_per_sample == cloud_bytes)
    assert torch.equal(all_cloud.predictions, cloud.argmax(1))
    assert model.bytes_cloud(feature_bits=1) == local_bytes + 3 * 128 / 8
    mixed = model.infer(views, 0.9999)
    expected = torch.where(mixed.local_exit, float(local_bytes), float(cloud_bytes))
    assert torch.equal(mixed.bytes_per_sample, expected)


def test_training_beats_chance_and_report(data, trained):
    views = make_views(data.x_test, 3, seed=1)
    rep = ddnn_report(trained, views, data.y_test, threshold=0.3)
    assert rep["accuracy"] > 0.6  # chance is 0.1
    assert rep["local_only_accuracy"] > 0.4 and rep["cloud_only_accuracy"] > 0.6
    assert 0.0 <= rep["fraction_local"] <= 1.0
    assert rep["raw_upload_bytes"] == 768
    assert rep["reduction_factor"] == pytest.approx(768 / rep["mean_bytes_per_sample"])
    assert len(rep["device_local_accuracy"]) == 3
    lo = ddnn_report(trained, views, data.y_test, threshold=1.0)
    assert lo["fraction_local"] == 1.0 and lo["mean_bytes_per_sample"] == 120
    assert lo["reduction_factor"] == pytest.approx(768 / 120)
    assert lo["cloud_exit_accuracy"] != lo["cloud_exit_accuracy"]  # nan: no cloud exits
    hi = ddnn_report(trained, views, data.y_test, threshold=-1.0)
    assert hi["fraction_local"] == 0.0 and hi["accuracy"] == hi["cloud_only_accuracy"]


def test_errors():
    with pytest.raises(EdgeWeaveError):
        DDNN(3, "sum")
    with pytest.raises(DDNNError):
        DDNN(0, "max")
    model = DDNN(3, "concat")
    with pytest.raises(EdgeWeaveError, match="3 devices but got 2"):
        model(torch.rand(2, 4, 1, 8, 8))
    with pytest.raises(DDNNError):
        model(torch.rand(3, 4, 1, 6, 6))
    with pytest.raises(DDNNError):
        model.infer(torch.rand(4, 1, 8, 8), 0.5)
    with pytest.raises(DDNNError):
        train_ddnn(model, torch.rand(3, 4, 1, 8, 8), torch.zeros(5, dtype=torch.long), epochs=1)
    with pytest.raises(DDNNError):
        make_views(torch.rand(4, 8, 8), 2)
    with pytest.raises(DDNNError):
        make_views(torch.rand(4, 1, 8, 8), 0)
