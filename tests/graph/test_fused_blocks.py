"""DeeperThings' consecutive fused blocks: tiling each block with its own grid, stitching, and
tiling the next block from the stitched map gives the unpartitioned prefix (allclose)."""

from __future__ import annotations

import itertools

import pytest
from tile_cases import assert_same, one_thread, zoo_graph, zoo_input  # noqa: F401

from edgeweave.errors import GraphError
from edgeweave.graph.blocks import cut_depths, fused_block, fused_blocks
from edgeweave.graph.reuse import reuse_tiles
from edgeweave.graph.tile_exec import run_block, run_blocks

CASES = [
    ("digits-cnn", 2, [(2, 2), (1, 3)]),
    ("vgg16", 2, [(3, 2), (2, 2)]),
    ("vgg16", 3, [(2, 3), (3, 3), (1, 2)]),
    ("resnet18", 2, [(2, 2), (3, 1)]),
    ("resnet18", 3, [(1, 2), (2, 2), (2, 1)]),
]


def _ends(model: str, count: int) -> list[int]:
    """``count`` block ends spread over the model's cut depths (the deepest last)."""
    depths = sorted(cut_depths(zoo_graph(model)))
    return [depths[(len(depths) - 1) * (k + 1) // count] for k in range(count)]


@pytest.mark.parametrize(("model", "count", "grids"), CASES)
def test_stitched_blocks_equal_the_unpartitioned_prefix(model: str, count: int,
                                                        grids: list[tuple[int, int]]) -> None:
    graph, x = zoo_graph(model), zoo_input(model)
    blocks = fused_blocks(graph, _ends(model, count))
    assert len(blocks) == count
    for a, b in itertools.pairwise(blocks):
        assert b.input == a.output.name and b.input_shape == a.output.shape
    names = [n for block in blocks for n in block.names]
    assert names == fused_block(graph, _ends(model, count)[-1]).names
    grids = [(min(r, b.output.shape[1]), min(c, b.output.shape[2]))
             for (r, c), b in zip(grids, blocks, strict=True)]
    want = run_block(graph, blocks[-1], x)
    assert_same(run_blocks(graph, blocks, grids, x), want)
    if model == "vgg16" and count == 2:  # data reuse in every block too
        assert_same(run_blocks(graph, blocks, grids, x, reuse_tiles), want)


def test_one_block_is_the_fused_block() -> None:
    graph = zoo_graph("vgg16")
    assert fused_blocks(graph, [5]) == [fused_block(graph, 5)]


def test_bad_block_ends_name_the_problem() -> None:
    graph = zoo_graph("vgg16")
    with pytest.raises(GraphError, match="each deeper than the one before"):
        fused_blocks(graph, [5, 3])
    with pytest.raises(GraphError, match="valid fused depths"):
        fused_blocks(graph, [3, 99])
