"""Codecs on a cluster's medium: fixed-width ones priced exactly, a lossless compressor after
them priced by its ratio on the model's own feature maps (plan.medium_codecs)."""

from __future__ import annotations

import pytest
import torch

from edgeweave.codec import get_codec
from edgeweave.errors import PlanError
from edgeweave.graph import capture_spec
from edgeweave.plan.cluster_cost import ClusterModel
from edgeweave.plan.medium_codecs import codec_ratio, ratios, samples
from edgeweave.profile import analytic_profile
from edgeweave.topology import Fleet


def _graph():
    return capture_spec("digits-cnn")


def test_fixed_codecs_keep_their_exact_ratio_and_need_no_model():
    assert ratios(None, "int8", "fp16") == (0.25, 0.5)
    assert codec_ratio("none") == 1.0


def test_a_compressor_is_priced_on_the_models_maps_and_beats_its_fixed_codec():
    """digits-cnn's maps after ReLU are about half zeros, so zstd takes fp16 well below its
    fixed 0.5; the ratio is what the codec really does to the sampled maps."""
    graph = _graph()
    frame, maps = samples(graph)
    assert frame.shape == graph.input_shape and maps.dim() == 1
    assert float((maps == 0).float().mean()) > 0.2  # ReLU outputs are among them
    crop, result = ratios(graph, "int8+zstd", "fp16+zstd")
    assert 0 < result < 0.5
    assert result == pytest.approx(get_codec("fp16+zstd").encode(maps).nbytes
                                   / (maps.numel() * 4))
    # a random 8x8 frame does not compress: the codec's own figure, frame header and all
    assert crop == pytest.approx(get_codec("int8+zstd").encode(frame).nbytes
                                 / (frame.numel() * 4))
    assert samples(graph)[1] is maps  # measured once per model


def test_the_cluster_model_prices_a_compressed_map_by_that_ratio():
    graph = _graph()
    fleet = Fleet.from_dict({
        "name": "f", "links": [],
        "nodes": [{"name": n, "tier": "device", "hardware": "rpi4"} for n in "ab"],
        "clusters": [{"name": "ab", "devices": ["a", "b"], "gateway": "a",
                      "medium": {"mbps": 20.0, "rtt_ms": 1.0}}]})
    profile = analytic_profile(graph, fleet)
    plain = ClusterModel(profile, fleet, fleet.cluster(), "int8", "fp16")
    packed = ClusterModel(profile, fleet, fleet.cluster(), "int8", "fp16+zstd", graph=graph)
    assert packed.result_ratio < plain.result_ratio == 0.5
    assert packed.input_ratio == plain.input_ratio == 0.25


@pytest.mark.parametrize(("args", "needle"), [
    (("none", "zstd"), "--result-codec: 'zstd' is not a codec"),
    (("topk:0.1", "fp16"), "--input-codec: 'topk:0.1'"),
])
def test_codecs_the_medium_cannot_price_are_named(args, needle):
    with pytest.raises(PlanError, match=needle.replace("(", r"\(")) as e:
        ratios(_graph(), *args)
    assert "fp16+zstd" in str(e.value)  # the choices are listed


def test_a_compressor_without_the_model_says_what_it_needs():
    with pytest.raises(PlanError, match="priced on the model's tensors"):
        ratios(None, "int8", "fp16+zstd")
    with pytest.raises(PlanError, match="needs a sample"):
        codec_ratio("fp16+lz4", "--result-codec")


def test_a_graph_without_maps_is_priced_on_its_frame():
    """A model with no 4-D map (a plain MLP on vectors) has nothing but its frame to sample."""
    from edgeweave.graph import capture

    mlp = capture(torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()), (1, 8))
    frame, maps = samples(mlp)
    assert torch.equal(maps, frame.flatten())


def test_the_cli_offers_exactly_the_codecs_the_medium_prices():
    """`edgeweave distribute` keeps its own copy of the names (importing the planner there
    would slow every command's start); the two must not drift apart."""
    from edgeweave.cli.commands.distribute import CODECS
    from edgeweave.plan.medium_codecs import MEDIUM_CODECS

    assert CODECS == MEDIUM_CODECS
