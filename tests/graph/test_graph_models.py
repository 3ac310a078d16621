"""Every built-in model: captured by tracing, costed by the documented rules, and split into
stages that reproduce it exactly for several placements."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator

import pytest
import torch

from edgeweave.graph import Graph, capture_spec, list_models, run_stages, split

TIERS = ("device", "edge", "cloud")
MODEL_NAMES = [name for name, _ in list_models()]
#: Small inputs keep the suite fast; every model still works at this size.
SMALL_INPUT = {name: (1, 3, 64, 64) for name in MODEL_NAMES} | {"digits-cnn": (1, 1, 8, 8)}


@pytest.fixture(scope="module", params=MODEL_NAMES)
def captured(request: pytest.FixtureRequest) -> Iterator[tuple[Graph, torch.Tensor, torch.Tensor]]:
    """Graph, an input and the model's output on it; module scope so each model is built once."""
    graph = capture_spec(request.param, input_shape=SMALL_INPUT[request.param])
    x = torch.randn(graph.input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = graph.module(x)
    yield graph, x, expected


def test_builtin_list_matches_the_brief() -> None:
    assert set(MODEL_NAMES) == {
        "alexnet",
        "vgg16",
        "resnet18",
        "resnet50",
        "mobilenet_v2",
        "squeezenet1_0",
        "shufflenet_v2_x1_0",
        "googlenet",
        "digits-cnn",
    }


def test_model_is_traced_with_consistent_nodes(captured) -> None:
    graph, _, expected = captured
    assert graph.traced and graph.fallback_reason is None
    assert isinstance(expected, torch.Tensor)
    assert graph.placeholders == [graph.nodes[0].name]
    assert graph.nodes[0].out_shape == tuple(graph.input_shape)
    assert len(graph.outputs) == 1
    seen: dict[str, int] = {}
    for info in graph.nodes:
        assert all(src in seen for src in info.inputs), "nodes must be topologically ordered"
        assert len(set(info.inputs)) == len(info.inputs)
        assert info.in_bytes == sum(seen[src] for src in info.inputs)
        if info.out_shape is not None:
            assert info.out_bytes == math.prod(info.out_shape) * 4
        assert info.flops >= 0
        json.dumps(info.to_dict())  # plain data: profiles and plans save it
        seen[info.name] = info.out_bytes
    assert graph.total_flops > 0


def test_conv_and_linear_flops_follow_the_formula(captured) -> None:
    graph, _, _ = captured
    conv = next(n for n in graph.nodes if n.op == "conv2d")
    a = conv.attrs
    kh, kw = a["kernel_size"]
    out_numel = math.prod(conv.out_shape)
    per_out = a["in_channels"] // a["groups"] * kh * kw
    assert conv.flops == 2 * out_numel * per_out + (out_numel if a["bias"] else 0)
    weight_numel = a["out_channels"] * per_out + (a["out_channels"] if a["bias"] else 0)
    assert conv.param_bytes == weight_numel * 4

    linears = [n for n in graph.nodes if n.op == "linear"]
    if not linears:  # squeezenet classifies with a conv
        assert graph.name == "squeezenet1_0"
        return
    fc = linears[-1]
    batch = math.prod(fc.out_shape[:-1])
    fin, fout = fc.attrs["in_features"], fc.attrs["out_features"]
    assert fc.flops == 2 * batch * fin * fout + batch * fout
    assert fc.param_bytes == (fin * fout + fout) * 4


def _monotone_placement(graph: Graph, seed: int) -> dict[str, str]:
    """Random tiers pushed up along edges, so no edge goes backwards."""
    rng = random.Random(seed)
    tier = {info.name: rng.randrange(len(TIERS)) for info in graph.nodes}
    for info in graph.nodes:
        tier[info.name] = max([tier[info.name], *(tier[src] for src in info.inputs)])
    return {name: TIERS[t] for name, t in tier.items()}


def test_split_reproduces_the_model(captured) -> None:
    graph, x, expected = captured
    placements = [_monotone_placement(graph, seed) for seed in range(3)]
    placements += [{n.name: tier for n in graph.nodes} for tier in ("device", "cloud")]
    for placement in placements:
        stages = split(graph, placement)
        assert [s.key for s in stages] == [t for t in TIERS if t in placement.values()]
        assert sorted(n for s in stages for n in s.nodes) == sorted(placement)
        with torch.no_grad():
            got = run_stages(stages, x)
        assert torch.allclose(got, expected, atol=1e-5)


def test_resnet18_flops_at_224() -> None:
    graph = capture_spec("resnet18")
    assert graph.input_shape == (1, 3, 224, 224)
    assert 3.0e9 <= graph.total_flops <= 4.5e9
