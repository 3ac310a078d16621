"""Fused Tile Partitioning on the zoo: the tiles of every grid stitch back to the unpartitioned
fused block (allclose), the report's figures add up, and bad requests fail with one clear error.

The default subset covers every qualifying zoo model and every grid shape class (one tile,
one row, one column, square, uneven, the largest that fits) at the shallowest, a middle and the
deepest fused depth; the slow sweep runs every depth and every grid from 1x1 to 6x6."""

from __future__ import annotations

import pytest
import torch
from tile_cases import ZOO_INPUTS, assert_same, one_thread, zoo_graph, zoo_input  # noqa: F401
from torch import nn

from edgeweave.errors import GraphError
from edgeweave.graph import capture, capture_spec, model_skeleton
from edgeweave.graph.blocks import cut_depths, fused_block
from edgeweave.graph.regions import Region
from edgeweave.graph.tile_exec import TileModule, run_block, run_tiles
from edgeweave.graph.tiles import (
    halo_flops,
    input_bytes,
    output_bytes,
    tile_flops,
    tile_grid,
    tiling_report,
)

GRID_CLASSES = [(1, 1), (1, 3), (3, 1), (2, 2), (3, 5), (6, 6)]


def _depth_choices(model: str) -> list[int]:
    depths = sorted(cut_depths(zoo_graph(model)))
    picks = {depths[0], depths[len(depths) // 2], depths[-1]}
    if model == "resnet18":
        picks.add(6)  # the stem and layer1, residual adds included
    return sorted(picks)


def _fitting(block, grid: tuple[int, int]) -> tuple[int, int]:
    _, height, width = block.output.shape
    return min(grid[0], height), min(grid[1], width)


@pytest.mark.parametrize("model", list(ZOO_INPUTS))
def test_zoo_tiles_stitch_to_the_block_output(model: str) -> None:
    graph, x = zoo_graph(model), zoo_input(model)
    for depth in _depth_choices(model):
        block = fused_block(graph, depth)
        with torch.no_grad():
            want = run_block(graph, block, x)
            for grid in {_fitting(block, g) for g in GRID_CLASSES}:
                assert_same(run_tiles(graph, block, tile_grid(block, grid), x), want)


def test_resnet18_stem_and_layer1_is_a_depth_with_its_residual_adds() -> None:
    graph = zoo_graph("resnet18")
    block = fused_block(graph, 6)
    assert block.output.name == "layer1_1_relu_1"
    assert [n.name for n in block.nodes if n.op == "add"] == ["add", "add_1"]
    # the shortcut value (maxpool) is read by a conv and by the add: it is held over both needs
    tile = tile_grid(block, (2, 2))[0]
    conv_need = block.node("layer1_0_conv1").window.needed(tile.computes["layer1_0_conv1"])
    assert tile.holds["maxpool"].contains(conv_need.intersect(Region(0, 16, 0, 16)))
    assert tile.holds["maxpool"].contains(tile.holds["add"])
    # inside a residual block is not a cut
    assert 3 not in cut_depths(graph) and 5 not in cut_depths(graph)


def test_tiles_partition_the_output_and_crop_only_at_the_border() -> None:
    block = fused_block(zoo_graph("vgg16"), 7)
    tiles = tile_grid(block, (3, 4))
    _, height, width = block.output.shape
    covered = torch.zeros(height, width, dtype=torch.int32)
    for t in tiles:
        covered[t.output.r0:t.output.r1, t.output.c0:t.output.c1] += 1
    assert bool((covered == 1).all())
    corner, middle = tiles[0], tiles[5]
    assert corner.input.r0 == 0 and corner.input.c0 == 0
    # an interior tile needs a halo on all four sides, all of it real data
    assert middle.input.r0 > 0 and middle.input.c0 > 0
    assert middle.input.r1 < 64 and middle.input.c1 < 64


def test_report_figures() -> None:
    block = fused_block(zoo_graph("vgg16"), 4)
    one = tiling_report(block, tile_grid(block, (1, 1)), (1, 1))
    assert one.halo_flops == pytest.approx(0.0, abs=1e-6)
    assert one.total_flops == pytest.approx(block.flops)
    tiles = tile_grid(block, (2, 3))
    report = tiling_report(block, tiles, (2, 3))
    assert report.halo_flops > 0
    assert report.halo_flops == pytest.approx(halo_flops(block, tiles))
    assert report.total_flops == pytest.approx(sum(tile_flops(block, t.computes) for t in tiles))
    assert report.largest_tile_bytes == max(
        input_bytes(block, t) + output_bytes(block, t) for t in tiles) + block.param_bytes
    assert sum(output_bytes(block, t) for t in tiles) == block.output.bytes_of(
        block.output.map_area)
    assert len(report.sent_bytes) == len(report.received_bytes) == 6
    assert report.largest_tile_peak_bytes < report.whole_block_peak_bytes
    doc = report.to_dict()
    assert doc["grid"] == [2, 3] and doc["halo_pct"] > 0


def test_tile_module_holds_only_the_block_weights() -> None:
    graph = zoo_graph("vgg16")
    block = fused_block(graph, 4)
    module = TileModule(graph, block, tile_grid(block, (2, 2))[0])
    held = sum(p.numel() * p.element_size() for p in module.parameters())
    assert held == block.param_bytes < graph.total_param_bytes


def test_tile_module_does_not_keep_the_rest_of_the_model_alive() -> None:
    import gc
    import weakref

    graph = capture_spec("digits-cnn")
    block = fused_block(graph, 2)
    module = TileModule(graph, block, tile_grid(block, (2, 2))[0])
    whole = weakref.ref(graph.module)
    del graph
    gc.collect()
    assert whole() is None  # a worker can drop the model and keep only the block's layers
    assert module(torch.zeros(1, 1, 6, 6))[0].shape == (1, 32, 4, 4)


def test_wrong_crop_shape_is_refused() -> None:
    graph = zoo_graph("digits-cnn")
    block = fused_block(graph, 2)
    tile = tile_grid(block, (2, 2))[0]
    with pytest.raises(GraphError, match="input crop of tile 0 has shape"):
        TileModule(graph, block, tile)(torch.zeros(1, 1, 3, 3))


# ---- bad requests -----------------------------------------------------------------------------


def test_grid_larger_than_the_feature_map() -> None:
    block = fused_block(zoo_graph("digits-cnn"), 3)
    with pytest.raises(GraphError, match=r"grid 6x6 is larger than the 4x4 output feature map "
                                         r"of model 'digits-cnn' at fused depth 3"):
        tile_grid(block, (6, 6))
    with pytest.raises(GraphError, match="grid 0x2"):
        tile_grid(block, (0, 2))


def test_model_with_no_fusable_prefix() -> None:
    mlp = capture(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), (1, 1, 8, 8), name="mlp")
    with pytest.raises(GraphError, match=r"model 'mlp' has no fusable prefix .*flatten"):
        fused_block(mlp)


def test_fused_depth_that_is_not_a_cut() -> None:
    with pytest.raises(GraphError, match=r"fused depth 3 is not available for model "
                                         r"'resnet18'.*valid fused depths: 1, 2, 4, 6"):
        fused_block(zoo_graph("resnet18"), 3)


# ---- the full sweep ---------------------------------------------------------------------------

SWEEP_INPUTS = {"digits-cnn": None, "vgg16": (1, 3, 32, 32), "resnet18": (1, 3, 32, 32),
                "mobilenet_v2": (1, 3, 32, 32)}


def _narrow_vgg16() -> nn.Module:
    from torchvision.models.vgg import VGG, cfgs, make_layers

    features = make_layers([v if v == "M" else int(v) // 8 for v in cfgs["D"]])
    model = VGG(features, num_classes=10, init_weights=False)
    for i, (fan_in, fan_out) in {0: (64 * 7 * 7, 512), 3: (512, 512), 6: (512, 10)}.items():
        model.classifier[i] = nn.Linear(fan_in, fan_out)
    return model


#: The sweep's vgg16: the zoo model's layers (kernels, strides, padding, pooling), so the same
#: fused depths and tiles, with an eighth of the channels. Tiling depends on that geometry only
#: (checked below against the zoo's own, captured on the meta device), and at full width this
#: sweep took 24 s of the suite; the zoo's vgg16 itself is tiled at full width above.
NARROW = {"vgg16": _narrow_vgg16}


def _geometry(graph) -> list[tuple]:
    """What tiling reads from a graph: each node's op, inputs, spatial output and layer attrs
    other than channel counts."""
    skip = {"in_channels", "out_channels", "num_features", "in_features", "out_features"}
    return [(n.op, n.kind, n.inputs, None if n.out_shape is None else n.out_shape[2:],
             {k: v for k, v in n.attrs.items() if k not in skip}) for n in graph.nodes]


def _sweep_graph(model: str):
    if model not in NARROW:
        return capture_spec(model, input_shape=SWEEP_INPUTS[model])
    shape = SWEEP_INPUTS[model]
    assert shape is not None
    narrow = capture(NARROW[model]().eval(), shape, name=model)
    zoo = model_skeleton(model)
    assert zoo is not None
    full = capture(zoo.module, torch.empty(shape, device="meta"), name=model)
    assert _geometry(narrow) == _geometry(full)
    return narrow


@pytest.mark.slow
@pytest.mark.parametrize("model", list(SWEEP_INPUTS))
def test_every_depth_and_every_grid_up_to_6x6(model: str) -> None:
    """Every fused depth x every grid 1x1..6x6: equal where the grid fits the depth's output
    map, the 'larger than the feature map' error where it does not."""
    graph = _sweep_graph(model)
    x = torch.randn(graph.input_shape, generator=torch.Generator().manual_seed(2))
    for depth in sorted(cut_depths(graph)):
        block = fused_block(graph, depth)
        _, height, width = block.output.shape
        with torch.no_grad():
            want = run_block(graph, block, x)
            for rows in range(1, 7):
                for cols in range(1, 7):
                    if rows > height or cols > width:
                        with pytest.raises(GraphError, match="larger than"):
                            tile_grid(block, (rows, cols))
                        continue
                    assert_same(run_tiles(graph, block, tile_grid(block, (rows, cols)), x), want)
