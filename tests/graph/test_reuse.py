"""Data-reuse scheduling (DeepThings): level-1 tiles reuse the halo level-0 tiles computed, fall
back to computing it when a neighbour has not finished, and the stitched output is the same
with reuse on and off; reuse saves FLOPs."""

from __future__ import annotations

import itertools

import pytest
import torch
from tile_cases import ZOO_INPUTS, assert_same, one_thread, zoo_graph, zoo_input  # noqa: F401

from edgeweave.errors import GraphError
from edgeweave.graph import capture_spec
from edgeweave.graph.blocks import cut_depths, fused_block, fused_blocks
from edgeweave.graph.reuse import checkerboard, reuse_savings, reuse_tiles
from edgeweave.graph.tile_exec import ShareStore, TileModule, run_block, run_tiles
from edgeweave.graph.tiles import restrict, tile_flops, tile_grid


def test_checkerboard_levels() -> None:
    assert checkerboard(3, 3) == [0, 1, 0, 1, 0, 1, 0, 1, 0]
    assert checkerboard(2, 3) == [0, 1, 0, 1, 0, 1]


@pytest.mark.parametrize("model", list(ZOO_INPUTS))
def test_reuse_on_and_off_give_the_block_output(model: str) -> None:
    graph, x = zoo_graph(model), zoo_input(model)
    depths = sorted(cut_depths(graph))
    for depth in {depths[len(depths) // 2], depths[-1]}:
        block = fused_block(graph, depth)
        _, height, width = block.output.shape
        grid = (min(3, height), min(3, width))
        with torch.no_grad():
            want = run_block(graph, block, x)
            assert_same(run_tiles(graph, block, tile_grid(block, grid), x), want)
            assert_same(run_tiles(graph, block, reuse_tiles(block, grid), x), want)


def test_fallback_when_neighbours_have_not_finished() -> None:
    graph, x = zoo_graph("resnet18"), zoo_input("resnet18")
    block = fused_block(graph, 6)
    grid = (3, 3)
    level0 = [i for i, level in enumerate(checkerboard(*grid)) if level == 0]
    with torch.no_grad():
        want = run_block(graph, block, x)
        flops = []
        for done in ([], level0[:2], level0):
            tiles = reuse_tiles(block, grid, done)
            assert_same(run_tiles(graph, block, tiles, x), want)
            flops.append(sum(tile_flops(block, t.computes) for t in tiles))
    plain = sum(tile_flops(block, t.computes) for t in tile_grid(block, grid))
    # no neighbour finished: full computation; every neighbour: the most saved
    assert flops[0] == pytest.approx(plain)
    assert flops[0] > flops[1] > flops[2]


def test_level1_tile_computes_less_and_receives_the_rest() -> None:
    block = fused_block(zoo_graph("vgg16"), 7)
    plain = tile_grid(block, (3, 3))
    tiles = reuse_tiles(block, (3, 3))
    centre = tiles[1]
    assert centre.level == 1 and tiles[4].level == 0
    assert tile_flops(block, centre.computes) < tile_flops(block, plain[1].computes)
    assert centre.reused and all(p.source in (0, 2, 4) for ps in centre.reused.values()
                                 for p in ps)
    assert tiles[0].shares and not centre.shares
    # level-0 tiles are the plain tiles
    assert tiles[4].holds == plain[4].holds and tiles[4].computes == plain[4].computes


def test_reuse_savings_figures() -> None:
    block = fused_block(zoo_graph("vgg16"), 10)
    saved = reuse_savings(block, (4, 4))
    assert saved["flops_with_reuse"] < saved["flops_without_reuse"]
    assert saved["saved_flops"] == pytest.approx(
        saved["flops_without_reuse"] - saved["flops_with_reuse"])
    assert 0 < saved["saved_pct"] < 100
    assert reuse_savings(block, (1, 1))["saved_flops"] == 0


def test_missing_reused_piece_is_refused() -> None:
    graph = zoo_graph("vgg16")
    block = fused_block(graph, 4)
    tiles = reuse_tiles(block, (2, 2))
    level1 = next(t for t in tiles if t.level == 1)
    store = ShareStore(tiles)
    with pytest.raises(GraphError, match="has not shared it"):
        store.pieces(level1)
    crop = torch.zeros(1, 3, level1.input.height, level1.input.width)
    with pytest.raises(GraphError, match="reused piece"):
        TileModule(graph, block, level1)(crop, {})


@pytest.mark.parametrize("model", ["digits-cnn", "resnet18"])
def test_a_later_blocks_tiles_cut_from_its_prefixs_are_its_own(model: str) -> None:
    """graph.tiles.restrict: every block between two cuts, tiled directly, with and without
    data reuse, equals the tiles of the model's prefix ending where it ends cut down to it
    (resnet18: residual adds inside the blocks)."""
    graph = capture_spec(model)
    for start, end in itertools.combinations(sorted(cut_depths(graph)), 2):
        later, prefix = fused_blocks(graph, [start, end])[1], fused_block(graph, end)
        for grid in [(1, 1), (2, 2), (1, 2)]:
            assert restrict(tile_grid(prefix, grid), later) == tile_grid(later, grid)
            assert restrict(reuse_tiles(prefix, grid), later) == reuse_tiles(later, grid)
