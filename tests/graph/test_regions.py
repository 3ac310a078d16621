"""Region arithmetic: interval maps of window layers, rectangle differences, grid lines; and
random stacks of convolutions and pools (random kernel, stride, padding, dilation) whose tiles
must stitch back to the unpartitioned output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from tile_cases import assert_same, one_thread  # noqa: F401
from torch import nn

from edgeweave.graph import capture
from edgeweave.graph.blocks import fused_block
from edgeweave.graph.regions import (
    EMPTY,
    Region,
    Window,
    bbox,
    even_bounds,
    needed_interval,
    proportional_bounds,
    uncovered_bbox,
)
from edgeweave.graph.reuse import checkerboard, reuse_tiles
from edgeweave.graph.tile_exec import run_block, run_tiles
from edgeweave.graph.tiles import backward_regions, tiles_for_bounds


def test_needed_interval_matches_the_window_formula() -> None:
    # 3x3 stride 1 pad 1: output rows [0, 4) read input rows [-1, 5)
    assert needed_interval(0, 4, 3, 1, 1, 1) == (-1, 5)
    # 7x7 stride 2 pad 3 (resnet stem): output [10, 20) reads [17, 42)
    assert needed_interval(10, 20, 7, 2, 3, 1) == (17, 42)
    # dilation 2 widens the window to 5: output [0, 1) reads [0, 5)
    assert needed_interval(0, 1, 3, 1, 0, 2) == (0, 5)
    # 2x2 stride 2 pool: disjoint windows
    assert needed_interval(3, 5, 2, 2, 0, 1) == (6, 10)


@given(st.integers(1, 7), st.integers(1, 4), st.integers(0, 3), st.integers(1, 3),
       st.integers(8, 40), st.data())
def test_needed_interval_covers_exactly_the_read_positions(
        kernel: int, stride: int, padding: int, dilation: int, size: int, data) -> None:
    n_out = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    assume(n_out >= 1)
    o0 = data.draw(st.integers(0, n_out - 1))
    o1 = data.draw(st.integers(o0 + 1, n_out))
    read = {o * stride - padding + dilation * t for o in range(o0, o1) for t in range(kernel)}
    lo, hi = needed_interval(o0, o1, kernel, stride, padding, dilation)
    assert min(read) == lo and max(read) == hi - 1


def test_uncovered_bbox() -> None:
    region = Region(0, 10, 0, 10)
    assert uncovered_bbox(region, []) == region
    assert uncovered_bbox(region, [Region(-5, 20, -5, 20)]) == EMPTY
    # covered on the left and the top: what is left is the bottom-right block
    assert uncovered_bbox(region, [Region(0, 10, 0, 3), Region(0, 4, 0, 10)]) == Region(
        4, 10, 3, 10)
    # a hole in the middle keeps the whole frame's bounding box
    frame = [Region(0, 10, 0, 2), Region(0, 10, 8, 10), Region(0, 2, 0, 10), Region(8, 10, 0, 10)]
    assert uncovered_bbox(region, frame) == Region(2, 8, 2, 8)
    assert uncovered_bbox(EMPTY, frame) == EMPTY


@given(st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12), st.integers(0, 12),
                          st.integers(0, 12)), max_size=6))
def test_uncovered_bbox_matches_a_pixel_mask(boxes: list[tuple[int, int, int, int]]) -> None:
    region = Region(2, 11, 1, 10)
    cover = [Region(min(a, b), max(a, b), min(c, d), max(c, d)) for a, b, c, d in boxes]
    mask = np.zeros((14, 14), dtype=bool)
    mask[region.r0:region.r1, region.c0:region.c1] = True
    for c in cover:
        mask[c.r0:c.r1, c.c0:c.c1] = False
    rows, cols = np.nonzero(mask)
    want = EMPTY if len(rows) == 0 else Region(rows.min(), rows.max() + 1, cols.min(),
                                                 cols.max() + 1)
    assert uncovered_bbox(region, cover) == want


def test_bounds() -> None:
    assert even_bounds(7, 3) == [0, 2, 4, 7]
    assert even_bounds(6, 6) == [0, 1, 2, 3, 4, 5, 6]
    assert proportional_bounds(56, [9.0, 3.0]) == [0, 42, 56]
    assert proportional_bounds(10, [1, 1, 1]) == [0, 4, 7, 10]
    bounds = proportional_bounds(13, [9.0, 9.0, 3.0, 0.0])
    assert bounds[-1] == 13 and bounds[3] == bounds[4]  # a zero-speed device gets no rows
    with pytest.raises(ValueError):
        proportional_bounds(5, [0.0, 0.0])
    assert bbox([EMPTY, Region(1, 2, 3, 4), Region(0, 1, 5, 9)]) == Region(0, 2, 3, 9)


def test_window_needed_of_empty_is_empty() -> None:
    window = Window((3, 3), (1, 1), (1, 1), (1, 1))
    assert window.needed(EMPTY) == EMPTY


# ---- random stacks ----------------------------------------------------------------------------


@st.composite
def layer_stacks(draw):
    """A random sequence of conv / max pool / avg pool / relu / batch norm layers, and an input
    side long enough that every layer has an output."""
    layers: list[nn.Module] = []
    channels = in_channels = draw(st.integers(1, 3))
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["conv", "conv", "max", "avg", "relu", "bn"]))
        if kind == "conv":
            k, s, d = draw(st.integers(1, 5)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
            p = draw(st.integers(0, d * (k - 1)))
            out = draw(st.integers(1, 3))
            groups = channels if draw(st.booleans()) and out == channels else 1
            layers.append(nn.Conv2d(channels, out, k, s, p, d, groups=groups))
            channels = out
        elif kind == "max":
            k = draw(st.integers(1, 3))
            layers.append(nn.MaxPool2d(k, draw(st.integers(1, 3)), draw(st.integers(0, k // 2)),
                                       draw(st.integers(1, 2)), ceil_mode=draw(st.booleans())))
        elif kind == "avg":
            k = draw(st.integers(1, 3))
            layers.append(nn.AvgPool2d(k, draw(st.integers(1, 3)), draw(st.integers(0, k // 2))))
        elif kind == "relu":
            layers.append(nn.ReLU(inplace=draw(st.booleans())))
        else:
            bn = nn.BatchNorm2d(channels)
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            layers.append(bn)
    side = draw(st.integers(6, 30))
    return nn.Sequential(*layers).eval(), in_channels, side


def capture_or_skip(model: nn.Module, side: int, c: int):
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, c, side, side))
    except RuntimeError:
        assume(False)
    assume(out.shape[2] >= 1 and out.shape[3] >= 1)
    assume(any(isinstance(m, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d) for m in model))
    return capture(model, (1, c, side, side), name="random-stack")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layer_stacks(), st.data())
def test_random_stacks_stitch_to_the_unpartitioned_output(stack, data) -> None:
    model, channels, side = stack
    graph = capture_or_skip(model, side, channels)
    block = fused_block(graph)
    _, height, width = block.output.shape
    rows = data.draw(st.integers(1, min(height, 6)))
    cols = data.draw(st.integers(1, min(width, 6)))
    cut_r = sorted(data.draw(st.lists(st.integers(1, max(1, height - 1)), max_size=rows - 1,
                                      unique=True))) if height > 1 else []
    cut_c = sorted(data.draw(st.lists(st.integers(1, max(1, width - 1)), max_size=cols - 1,
                                      unique=True))) if width > 1 else []
    tiles = tiles_for_bounds(block, [0, *cut_r, height], [0, *cut_c, width])
    x = torch.randn(graph.input_shape)
    with torch.no_grad():
        want = run_block(graph, block, x)
        assert_same(run_tiles(graph, block, tiles, x), want)
    # every window layer's need lies inside what its producer holds, and the per-axis walk
    # (used for plain tiles) holds what the two-dimensional one (used with reuse) does
    for tile in tiles:
        holds, _ = backward_regions(block, tile.output)
        assert all(tile.holds[name].contains(region) for name, region in holds.items())
        for node in block.nodes:
            if node.window is None:
                continue
            need = node.window.needed(tile.computes[node.name])
            shape = block.shape_of(node.inputs[0])
            inside = need.intersect(Region(0, shape[1], 0, shape[2]))
            assert inside.empty or tile.holds[node.inputs[0]].contains(inside)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layer_stacks(), st.data())
def test_random_stacks_with_reuse_and_any_finished_neighbours(stack, data) -> None:
    model, channels, side = stack
    graph = capture_or_skip(model, side, channels)
    block = fused_block(graph)
    _, height, width = block.output.shape
    grid = (data.draw(st.integers(1, min(height, 4))), data.draw(st.integers(1, min(width, 4))))
    level0 = [i for i, level in enumerate(checkerboard(*grid)) if level == 0]
    done = data.draw(st.lists(st.sampled_from(level0), unique=True))
    x = torch.randn(graph.input_shape)
    with torch.no_grad():
        assert_same(run_tiles(graph, block, reuse_tiles(block, grid, done), x),
                    run_block(graph, block, x))
