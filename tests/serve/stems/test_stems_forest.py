"""The shared-stem executor equals each tenant's own model, runs only what a frame needs, and
is built by a node from its specifier plus weights."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from edgeweave.graph import capture
from edgeweave.serve.stems import (
    TenancyError,
    build_forest,
    fine_tune,
    forest_from_spec,
    forest_spec,
    run_stream,
)
from edgeweave.serve.stems.spec import MAX_HEADS, parse_stem_spec, stem_spec

MIXED = {"digit": 0, "odd": 2, "zero": 5}


@pytest.fixture(scope="module")
def forest(stem_workload):
    _, backbone, tenants = stem_workload
    return build_forest(backbone, tenants, MIXED)


def _own_model(backbone, tenant, depth):
    """The tenant's model as it would run alone: frozen blocks, then its fine-tuned tail."""
    return nn.Sequential(*backbone.blocks[:depth], tenant.versions[depth].tail).eval()


@pytest.mark.parametrize("depths", [MIXED, {"digit": 5, "odd": 5, "zero": 5},
                                    {"digit": 0, "odd": 0, "zero": 0},
                                    {"digit": 2, "odd": 5, "zero": 2}])
def test_forest_equals_every_tenants_own_model(stem_workload, depths):
    data, backbone, tenants = stem_workload
    forest = build_forest(backbone, tenants, depths)
    with torch.no_grad():
        answers = forest.split(forest(data.x_test))
        for t in tenants:
            alone = _own_model(backbone, t, depths[t.name])(data.x_test)
            assert answers[t.name].shape == alone.shape
            assert torch.allclose(answers[t.name], alone, atol=1e-6)


def test_forest_answers_score_the_measured_accuracies(stem_workload, forest):
    data, _, tenants = stem_workload
    from edgeweave.serve.stems.tenants import TASKS

    with torch.no_grad():
        answers = forest.split(forest(data.x_test))
    for t in tenants:
        y = TASKS[t.task].relabel(data.y_test)
        acc = float((answers[t.name].argmax(1) == y).float().mean())
        assert acc == pytest.approx(t.versions[MIXED[t.name]].accuracy, abs=1e-6)


def test_forward_active_runs_the_trunk_only_as_deep_as_needed(stem_workload, forest):
    data, _, _ = stem_workload
    calls = [0] * len(forest.trunk)
    hooks = [b.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
             for i, b in enumerate(forest.trunk)]
    try:
        with torch.no_grad():
            out = forest.forward_active(data.x_test[:5], ["odd"])
            assert set(out) == {"odd"}
            assert calls == [1, 1, 0, 0, 0]  # odd shares two blocks
            both = forest.forward_active(data.x_test[:5], ["digit", "zero"])
            full = forest.split(forest(data.x_test[:5]))
    finally:
        for h in hooks:
            h.remove()
    assert torch.equal(out["odd"], full["odd"])
    assert torch.equal(both["zero"], full["zero"]) and torch.equal(both["digit"], full["digit"])
    assert forest.forward_active(data.x_test[:5], []) == {}


def test_run_stream_samples_each_tenant_at_its_stride_and_counts_shared_work(stem_workload,
                                                                             forest):
    data, _, _ = stem_workload
    frames = data.x_test[:37]
    strides = {"digit": 4, "odd": 2, "zero": 1}
    run = run_stream(forest, frames, strides)
    with torch.no_grad():
        full = forest.split(forest(frames))
    for name, stride in strides.items():
        expect = {t: int(full[name][t].argmax()) for t in range(0, 37, stride)}
        assert run.predictions[name] == expect
        assert run.tail_frames[name] == len(expect)
    # block l runs on the frames of the fastest tenant sharing it (rates nest): blocks 1-2
    # serve odd (stride 2) and zero (stride 1), blocks 3-5 only zero
    assert run.block_frames == (37, 37, 37, 37, 37)
    slower = run_stream(forest, frames, {"digit": 1, "odd": 2, "zero": 4})
    assert slower.block_frames == (19, 19, 10, 10, 10)


def test_run_stream_rejects_unknown_or_missing_tenants_and_bad_strides(forest):
    frames = torch.zeros(4, 1, 8, 8)
    with pytest.raises(TenancyError, match="nope"):
        run_stream(forest, frames, {"digit": 1, "odd": 1, "zero": 1, "nope": 1})
    with pytest.raises(TenancyError, match="zero"):
        run_stream(forest, frames, {"digit": 1, "odd": 1})
    with pytest.raises(TenancyError, match="stride of tenant 'odd'"):
        run_stream(forest, frames, {"digit": 1, "odd": 0, "zero": 1})


def test_unknown_tenant_and_depth_out_of_range_are_clear_errors(stem_workload, forest):
    data, backbone, tenants = stem_workload
    with pytest.raises(TenancyError, match="unknown tenant 'cat'"):
        forest.forward_active(data.x_test[:1], ["cat"])
    with pytest.raises(TenancyError, match="unknown tenant 'cat'"):
        forest.tenant_model("cat")
    with pytest.raises(TenancyError, match=r"unknown tenant\(s\) \['cat'\]"):
        build_forest(backbone, tenants, {**MIXED, "cat": 0})
    with pytest.raises(TenancyError, match=r"missing tenant\(s\) \['zero'\]"):
        build_forest(backbone, tenants, {"digit": 0, "odd": 2})
    with pytest.raises(TenancyError, match=r"depth in 0\.\.5"):
        build_forest(backbone, tenants, {**MIXED, "odd": 6})
    with pytest.raises(TenancyError, match="not fine-tuned at depth 3"):
        build_forest(backbone, tenants, {**MIXED, "odd": 3})
    with pytest.raises(TenancyError, match=r"depth in 0\.\.5"):
        fine_tune(backbone, "odd", -1, data)
    with pytest.raises(TenancyError, match="unknown tenant task 'colour'"):
        fine_tune(backbone, "colour", 2, data)


def test_a_node_builds_the_forest_from_its_specifier_and_weights(stem_workload, forest):
    data, _, _ = stem_workload
    spec = forest_spec(forest, side=8, width=4)
    assert spec == "digits-tenants:side=8,width=4,heads=10@0+2@2+2@5"
    buf = io.BytesIO()
    torch.save(forest.state_dict(), buf)
    built, shape = forest_from_spec(spec)
    assert shape == (1, 1, 8, 8)
    buf.seek(0)
    built.load_state_dict(torch.load(buf, weights_only=True), strict=True)
    graph = capture(built, (4, 1, 8, 8), name=spec, spec=spec)
    assert graph.traced  # torch.fx traced it: the node can split and profile it
    with torch.no_grad():
        assert torch.allclose(built(data.x_test), forest(data.x_test), atol=1e-6)
        assert torch.allclose(graph.module(data.x_test), forest(data.x_test), atol=1e-6)


@pytest.mark.parametrize("spec, field", [
    ("digits-cnn", "not a digits-tenants specifier"),
    ("digits-tenants:side=8,width=4", "expected side, width and heads"),
    ("digits-tenants:side=8,width=4,heads=10@0,side=8", "each once"),
    ("digits-tenants:side=6,width=4,heads=10@0", "multiple of 4"),
    ("digits-tenants:side=64,width=4,heads=10@0", "side must be an integer in 4..32"),
    ("digits-tenants:side=8,width=0,heads=10@0", "width must be an integer in 1..32"),
    ("digits-tenants:side=8,width=4,heads=10@6", "head depth must be an integer in 0..5"),
    ("digits-tenants:side=8,width=4,heads=1@2", "head classes must be an integer in 2..1000"),
    ("digits-tenants:side=8,width=4,heads=10", "is not classes@depth"),
    ("digits-tenants:side=8,width=4,heads=10@-1", "head depth"),
    ("digits-tenants:side=8,width=4,heads=10@" + "9" * 5000, "head depth"),
    ("digits-tenants:side=8,width=4,heads=" + "+".join(["2@5"] * (MAX_HEADS + 1)),
     f"at most {MAX_HEADS} heads"),
])
def test_bad_specifiers_name_the_part_at_fault(spec, field):
    with pytest.raises(TenancyError, match=field):
        parse_stem_spec(spec)


def test_spec_round_trip():
    spec = stem_spec(16, 8, [(10, 3), (2, 5), (2, 0)])
    assert parse_stem_spec(spec) == (16, 8, [(10, 3), (2, 5), (2, 0)])
    forest, _ = forest_from_spec(spec)
    assert forest.depths == (3, 5, 0) and forest.classes == (10, 2, 2)
    assert forest(torch.zeros(2, 1, 16, 16)).shape == (2, 14)


def test_a_nodes_registry_builds_the_forest_and_refuses_a_bad_specifier():
    from edgeweave.runtime.models import BadModelRequest, TrustedModels

    models = TrustedModels(())
    spec = "digits-tenants:side=8,width=4,heads=10@0+2@2+2@5"
    graph = models.graph(spec, (1, 1, 8, 8))
    assert graph.spec == spec and graph.traced
    assert any(name.startswith("digits-tenants:") for name in models.names)
    with pytest.raises(BadModelRequest, match=r"head depth must be an integer in 0\.\.5"):
        models.graph("digits-tenants:side=8,width=4,heads=10@6", (1, 1, 8, 8))
