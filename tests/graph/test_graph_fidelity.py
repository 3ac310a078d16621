"""Codec fidelity: lossless codecs change nothing; lossy ones change outputs by bounded amounts."""

import pytest
import torch

from edgeweave.graph import capture_spec
from edgeweave.graph.fidelity import fidelity, run_with_codecs


@pytest.fixture(scope="module")
def graph():
    return capture_spec("digits-cnn")


def placement(graph, cut_a, cut_b):
    names = [n.name for n in graph.nodes]
    return {n: ("device" if i < cut_a else "edge" if i < cut_b else "cloud")
            for i, n in enumerate(names)}


@pytest.mark.parametrize("codec", ["none", "zstd", "lz4"])
def test_lossless_codecs_reproduce_the_model_exactly(graph, codec):
    x = torch.randn(graph.input_shape)
    out = run_with_codecs(graph, placement(graph, 3, 6), {"device-edge": codec,
                                                          "edge-cloud": codec}, x)
    with torch.no_grad():
        assert torch.equal(out, graph.module(x))


def test_int8_changes_outputs_a_little_and_fidelity_reports_it(graph):
    xs = torch.randn(16, *graph.input_shape[1:])
    fid = fidelity(graph, placement(graph, 3, 6), {"device-edge": "int8", "edge-cloud": "int8"},
                   xs, labels=torch.zeros(16, dtype=torch.long))
    assert 0 < fid.max_abs_error < 0.5
    assert 0.5 <= fid.agreement <= 1.0
    assert fid.accuracy is not None and 0 <= fid.accuracy <= 1
    exact = fidelity(graph, placement(graph, 3, 6), {}, xs)
    assert exact.agreement == 1.0 and exact.max_abs_error == 0.0
