"""Resident rows (layer-wise, rows kept on the devices between split layers): a part built
from its device's own band and only the halo rows the others return computes exactly what the
scatter/gather split computes, and far fewer bytes cross."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_regions import capture_or_skip, layer_stacks
from tile_cases import ZOO_INPUTS, assert_same, one_thread, zoo_graph, zoo_input  # noqa: F401

from edgeweave.graph.layerwise import layer_units, layerwise_splits, residual_blocks
from edgeweave.graph.overlap import run_overlapped
from edgeweave.graph.resident import hops, rows_count, run_resident, stays


@pytest.mark.parametrize("runner", [run_resident, run_overlapped])
@pytest.mark.parametrize("model", list(ZOO_INPUTS))
def test_resident_rows_equal_the_unsplit_model(model: str, runner) -> None:
    """Rows never returned are NaN in the reference, so a halo the geometry forgot to send
    poisons the output; overlapped (graph.overlap), a step also sees only the rows its
    ``after`` steps returned, so a dependency the geometry forgot poisons it too."""
    graph, x = zoo_graph(model), zoo_input(model)
    with torch.no_grad():
        want = graph.module(x)
        for speeds in ([9.0, 3.0], [9.0, 9.0, 3.0, 3.0], [5.0, 0.0, 1.0]):
            splits = layerwise_splits(graph, speeds, "resident")
            assert_same(runner(graph, splits, x), want)


def test_vgg16_keeps_its_features_on_the_devices() -> None:
    graph = zoo_graph("vgg16")
    speeds = [9.0, 9.0, 3.0, 3.0]
    splits = layerwise_splits(graph, speeds, "resident")
    # the scatter/gather split of the same units (each convolution with the pool that alone
    # reads it: graph.layerwise._with_pooling)
    plain = layerwise_splits(graph, speeds, "biased", units=layer_units(graph, blocks=True))
    features = [s for s in splits if s.kind == "rows"]
    # every convolution after the first reads its input where it was computed
    assert [s.resident for s in features] == [False] + [True] * (len(features) - 1)
    assert not any(s.resident for s in splits if s.kind == "neurons")
    for res, base in zip(splits, plain, strict=True):
        # the same devices and rows: a pool inside a unit needs no cut moved for it
        assert res.unit == base.unit and res.devices == base.devices
        assert res.row_bounds == base.row_bounds
    # each of vgg16's five max pools runs in the unit of the convolution it reads, on the
    # rows that convolution computed: 13 convolutions, 13 row units
    pools = [s for s in features if "pool" in str(graph.module.get_submodule(
        s.unit[-1].replace("_", "."))).lower()]
    assert len(pools) == 5 and len(features) == 13
    # between the first scatter and the last gather only halo rows move (the test's 64x64
    # frame: 4x4 maps at the end, where a one-row band needs two rows of halo)
    inner = sum(s.scatter_bytes for s in features[1:]) + sum(s.gather_bytes
                                                              for s in features[:-1])
    inner_plain = sum(s.scatter_bytes for s in plain[1:len(features)]) + sum(
        s.gather_bytes for s in plain[:len(features) - 1])
    assert inner < inner_plain / 4
    # a 3x3 convolution's part needs one row beyond each edge of its band, and each band
    # returns only the rows its neighbours read
    hop = hops(graph, splits)[1]
    assert hop is not None
    assert [rows_count(h) for h in hop.halo] == [1, 2, 2, 1]
    assert [rows_count(b) for b in hop.back] == [1, 2, 2, 1]
    # the last split before the classifier is gathered whole
    last = features[-1]
    assert all(p.medium_out is None for p in last.parts)


def test_a_residual_block_is_one_unit_whose_rows_stay_on_the_devices() -> None:
    """resnet18's shortcut reads the block's input, as its first convolution does: the block
    is one unit (both branches and the add on a device's rows), so the stem's rows (its max
    pool in its unit) and every block's stay on the devices from the stem to the last block;
    only the fully connected layer's input is gathered."""
    graph = zoo_graph("resnet18")
    units = layer_units(graph, blocks=True)
    blocks = residual_blocks(graph)
    assert len(blocks) == 8 and all(u in units for u in blocks.values())
    first = blocks["layer1_0_conv1"]
    assert "add" in first and first[-1] == "layer1_0_relu_1"  # the activation after the add
    splits = layerwise_splits(graph, [1.0, 1.0], "resident", units)
    # the stem: its convolution with the max pool that reads it (graph.layerwise._with_pooling)
    stem = splits[0]
    assert stem.unit == ("conv1", "bn1", "relu", "maxpool")
    after = splits[1]
    assert after.unit == first and stays(graph, stem, after) and after.resident
    assert [s.resident for s in splits] == [False] + [True] * 8 + [False]
    # a chain that only post-processes one layer is not a block; MoDNN's own split scatters
    # and gathers every layer, the add on the gateway
    assert not residual_blocks(zoo_graph("vgg16"))
    assert not any("add" in u for u in layer_units(graph))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layer_stacks(), st.lists(st.sampled_from([0.0, 1.0, 3.0, 9.0]), min_size=2,
                                max_size=4).filter(lambda s: sum(s) > 0))
def test_random_stacks_with_resident_rows_equal_the_model(stack, speeds) -> None:
    """Any stack of convolutions (strided, dilated, grouped), max and average pools (ceil
    mode, padded), batch norm and activations, any device speeds: a part built from its band
    and the halo the geometry forwards computes the unsplit model's output; so does every
    step of it overlapped (graph.overlap), from the rows its ``after`` steps returned."""
    model, channels, side = stack
    graph = capture_or_skip(model, side, channels)
    x = torch.randn(graph.input_shape)
    splits = layerwise_splits(graph, speeds, "resident")
    with torch.no_grad():
        want = model(x)
        assert_same(run_resident(graph, splits, x), want)
        assert_same(run_overlapped(graph, splits, x), want)
