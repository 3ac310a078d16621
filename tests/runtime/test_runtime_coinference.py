"""Distributed execution over real gRPC equals local execution, for every codec."""

import pytest
import torch
from runtime_helpers import TOKEN, local_output, three_tier_plan

from edgeweave.runtime.client import ClientOptions, CoInferenceClient

# (codec, atol): lossless codecs must be exact up to float reassociation inside TorchScript;
# fp16 keeps ~3 significant digits; int8 is affine per tensor (error <= scale/2 per cut).
CODECS = [("none", 1e-5), ("zstd", 1e-5), ("lz4", 1e-5), ("fp16", 2e-2), ("fp16+zstd", 2e-2),
          ("int8", 0.25), ("int8+lz4", 0.25)]


@pytest.mark.parametrize(("codec", "atol"), CODECS)
@pytest.mark.parametrize("model", ["digits_graph", "resnet_graph"])
def test_distributed_output_matches_local(nodes, request, model, codec, atol):
    graph = request.getfixturevalue(model)
    edge_target, *_ = nodes
    _, chosen = three_tier_plan(graph)
    client = CoInferenceClient(graph, chosen, edge_target, token=TOKEN,
                               options=ClientOptions(codec=codec, return_codec=codec))
    x = torch.randn(graph.input_shape, generator=torch.Generator().manual_seed(1))
    client.deploy(x)
    result = client.infer(x)
    assert not result.fallback, result.note
    assert result.batch == 1  # the edge's reply: a lone request ran in a batch of one there
    assert set(result.segments) >= {"device_compute", "edge_compute", "cloud_compute"}
    ref = local_output(graph, x)
    assert torch.allclose(result.output, ref, atol=atol), (result.output - ref).abs().max()
    if codec in ("none", "zstd", "lz4"):
        assert torch.allclose(result.output, ref, atol=1e-5)


def test_redeploy_is_a_cache_hit(nodes, digits_graph):
    edge_target, *_ = nodes
    _, chosen = three_tier_plan(digits_graph)
    client = CoInferenceClient(digits_graph, chosen, edge_target, token=TOKEN)
    x = torch.randn(digits_graph.input_shape)
    first = client.deploy(x)
    again = client.deploy(x)
    assert not any(r.cached for r in first)
    assert all(r.cached for r in again)


def test_cloud_down_edge_finishes_and_marks_fallback(nodes, digits_graph):
    edge_target, cloud, _, _ = nodes
    _, chosen = three_tier_plan(digits_graph)
    client = CoInferenceClient(digits_graph, chosen, edge_target, token=TOKEN)
    x = torch.randn(digits_graph.input_shape)
    client.deploy(x)
    cloud.stop(0)
    result = client.infer(x)
    assert result.fallback and "finished on edge" in result.note
    assert torch.allclose(result.output, local_output(digits_graph, x), atol=1e-5)


def test_device_only_plan_needs_no_server(digits_graph):
    _, chosen = three_tier_plan(digits_graph, fractions=(2.0, 2.0))
    client = CoInferenceClient(digits_graph, chosen, None)
    x = torch.randn(digits_graph.input_shape)
    result = client.infer(x)
    assert torch.allclose(result.output, local_output(digits_graph, x), atol=1e-6)
    assert result.batch == 0  # no node served it
