"""Compressed variants of digits-cnn: int8, pruning, filter pruning, SVD, distillation."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from edgeweave.adapt.compress import (
    Variant,
    baseline,
    combine,
    count_flops,
    distill,
    filter_prune,
    low_rank,
    magnitude_prune,
    narrow,
    prune_then_quantize,
    quantize_dynamic,
    quantize_static,
    svd_linear,
    total_params,
)
from edgeweave.adapt.datasets import digits
from edgeweave.adapt.fit import accuracy, fit
from edgeweave.errors import EdgeWeaveError
from edgeweave.graph import capture, load_model, run_stages, split

SHAPE = (1, 1, 8, 8)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models: intra-op threading only adds contention on a shared machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    return digits(seed=0)


@pytest.fixture(scope="module")
def trained(data):
    torch.manual_seed(0)
    model = load_model("digits-cnn").module
    return fit(model, data.x_train, data.y_train, epochs=8, seed=0)


def _split_matches(module: nn.Module, x: torch.Tensor) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = capture(module, SHAPE, "variant")
    names = [n.name for n in graph.nodes]
    cut = len(names) // 2
    placement = {n: ("device" if i < cut else "cloud") for i, n in enumerate(names)}
    stages = split(graph, placement)
    assert len(stages) == 2
    with torch.no_grad():
        return torch.allclose(run_stages(stages, x), module(x), atol=1e-5)


def test_dynamic_int8_close_to_fp32_and_splittable(trained, data) -> None:
    fp32 = baseline(trained)
    q = quantize_dynamic(trained)
    assert isinstance(q, Variant) and q.recipe["method"] == "quantize_dynamic"
    assert q.size_bytes < fp32.size_bytes / 2.5
    base_acc = accuracy(trained, data.x_test, data.y_test)
    assert base_acc > 0.85
    assert abs(accuracy(q.module, data.x_test, data.y_test) - base_acc) < 0.03
    assert _split_matches(q.module, data.x_test[:7])
    # the original model is untouched
    assert all(isinstance(m, nn.Linear) for m in trained if "Linear" in type(m).__name__)


def test_static_int8_runs(trained, data) -> None:
    q = quantize_static(trained, data.x_train[:128])
    assert q.size_bytes < baseline(trained).size_bytes / 2.5
    assert abs(accuracy(q.module, data.x_test, data.y_test)
               - accuracy(trained, data.x_test, data.y_test)) < 0.05
    assert _split_matches(q.module, data.x_test[:4])


def test_static_int8_failure_is_an_edgeweave_error() -> None:
    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x  # data-dependent control flow: not FX-traceable

    with pytest.raises(EdgeWeaveError, match="static FX int8 quantization failed"):
        quantize_static(Branchy(), torch.randn(4, 3))


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9])
def test_magnitude_pruning_hits_sparsity_exactly(trained, sparsity) -> None:
    v = magnitude_prune(trained, sparsity)
    weights = [m.weight for m in v.module.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    n = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros == round(sparsity * n)
    assert v.params <= total_params(trained) - round(sparsity * n)
    assert not any(hasattr(m, "weight_orig") for m in v.module.modules())  # made permanent


def test_magnitude_pruning_fine_tune_keeps_mask(trained, data) -> None:
    v = magnitude_prune(trained, 0.8, x=data.x_train, y=data.y_train, epochs=2)
    weights = [m.weight for m in v.module.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    n = sum(w.numel() for w in weights)
    assert sum(int((w == 0).sum()) for w in weights) >= round(0.8 * n)
    assert accuracy(v.module, data.x_test, data.y_test) > 0.8


def test_filter_pruning_shrinks_flops_and_splits(trained, data) -> None:
    v = filter_prune(trained, 0.5, input_shape=SHAPE, x=data.x_train, y=data.y_train, epochs=2)
    m = v.module
    assert [m[0].out_channels, m[2].in_channels, m[2].out_channels] == [8, 8, 16]
    assert m[6].in_features == 16 * 4 * 4
    assert v.recipe["flops_after"] < v.recipe["flops_before"] / 2
    assert count_flops(m, SHAPE) == v.recipe["flops_after"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert capture(m, SHAPE).total_flops < capture(trained, SHAPE).total_flops
    x = data.x_test[:5]
    assert m(x).shape == trained(x).shape == (5, 10)
    assert _split_matches(m, x)
    assert accuracy(m, data.x_test, data.y_test) > 0.8


def test_filter_pruning_without_fine_tune_keeps_kept_channels_exact(trained) -> None:
    # Prune only conv2: conv1 is untouched and conv2's kept filters compute the same values.
    v = filter_prune(trained, 0.25, layers=["2"])
    keep = torch.topk(trained[2].weight.abs().flatten(1).sum(1), 24).indices.sort().values
    x = torch.rand(3, *SHAPE[1:])
    with torch.no_grad():
        got = nn.Sequential(*list(v.module)[:3])(x)
        want = nn.Sequential(*list(trained)[:3])(x)[:, keep]
    assert torch.allclose(got, want, atol=1e-6)


def test_svd_full_rank_exact_low_rank_smaller() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(20, 12)
    x = torch.randn(4, 20)
    with torch.no_grad():
        assert torch.allclose(svd_linear(lin, 12)(x), lin(x), atol=1e-5)
        assert torch.allclose(svd_linear(lin, 100)(x), lin(x), atol=1e-5)  # clipped to full
    assert sum(p.numel() for p in svd_linear(lin, 3).parameters()) < 20 * 12 + 12


def test_low_rank_variant(trained, data) -> None:
    full = low_rank(trained, {"6": 64, "8": 10})
    x = data.x_test[:6]
    with torch.no_grad():
        assert torch.allclose(full.module(x), trained(x), atol=1e-4)
    small = low_rank(trained, 8)
    assert small.params < total_params(trained)
    assert small.recipe["ranks"] == {"6": 8, "8": 8}
    assert _split_matches(small.module, x)


def test_distilled_student_is_smaller_and_learns(trained, data) -> None:
    v = distill(trained, data.x_train, data.y_train, width=0.5, epochs=5)
    assert v.params < total_params(trained) / 3
    assert accuracy(v.module, data.x_test, data.y_test) > 0.6  # chance is 0.1
    assert narrow(trained, 0.5)[0].out_channels == 8


def test_prune_then_quantize(trained, data) -> None:
    v = prune_then_quantize(trained, 0.7, x=data.x_train, y=data.y_train, epochs=1)
    assert v.recipe["method"] == "combine"
    assert [s["method"] for s in v.recipe["steps"]] == ["magnitude_prune", "quantize_dynamic"]
    fp32 = baseline(trained)
    assert v.params < fp32.params * 0.35
    assert v.size_bytes < fp32.size_bytes / 2.5
    assert v.zipped_bytes < fp32.zipped_bytes / 4
    assert accuracy(v.module, data.x_test, data.y_test) > 0.8


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: magnitude_prune(m, 1.0), "sparsity"),
        (lambda m: magnitude_prune(m, -0.1), "sparsity"),
        (lambda m: magnitude_prune(m, 0.5, layers=["nope"]), "nope"),
        (lambda m: filter_prune(m, 1.0), "amount"),
        (lambda m: filter_prune(m, 0.5, layers=["6"]), "'6'"),
        (lambda m: filter_prune(m, 0.5, layers=["99"]), "'99'"),
        (lambda m: low_rank(m, 0), "rank"),
        (lambda m: low_rank(m, {"0": 4}), "'0'"),
        (lambda m: low_rank(m, {"fc": 4}), "'fc'"),
        (lambda m: prune_then_quantize(m, 1.5), "sparsity"),
        (lambda m: combine(m), "step"),
        (lambda m: narrow(m, 0.0), "width"),
    ],
)
def test_bad_arguments_raise(trained, call, match) -> None:
    with pytest.raises(EdgeWeaveError, match=match):
        call(trained)
