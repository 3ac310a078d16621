"""Fused Tile Partitioning (DeepThings, Zhao et al. 2018): a grid over the fused block's output,
each tile walked back through the block to the input region it needs.

A tile is plain data: for every layer of the block, the region of that layer's output the tile
holds (its share plus the halo later layers read) and the part it computes itself (the same,
unless data reuse hands it pieces computed by neighbours; see :mod:`edgeweave.graph.reuse`).
Walking back, a window layer needs ``Window.needed`` of its output region; an elementwise layer
needs the same region of each operand; a value read by several layers (a residual add's
shortcut) is held over the bounding box of all their needs. Regions are clipped to the real map:
what falls outside is the zero padding the unpartitioned layer had, which the tile adds back only
where it touches the image border (:mod:`edgeweave.graph.tile_exec`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from edgeweave.errors import GraphError
from edgeweave.graph.blocks import FusedBlock
from edgeweave.graph.regions import (
    EMPTY,
    Region,
    bbox,
    clip,
    even_bounds,
    needed_interval,
    uncovered_bbox,
)


class Piece(NamedTuple):
    """A region of one layer's output computed by tile ``source`` (data reuse)."""

    source: int
    region: Region


@dataclass(frozen=True)
class Tile:
    """One tile of a fused block: where it sits in the grid and what it holds and computes.

    ``holds``/``computes`` map each block layer to a region of its output; ``input`` is the
    crop of the block's input the tile receives. With data reuse, ``reused`` lists the pieces of
    each layer it receives instead of computing (from level-0 tiles), and ``shares`` the pieces
    of its own layers it sends to be kept for level-1 tiles."""

    index: int
    row: int
    col: int
    output: Region
    input: Region
    holds: dict[str, Region] = field(hash=False)
    computes: dict[str, Region] = field(hash=False)
    level: int = 0
    reused: dict[str, tuple[Piece, ...]] = field(default_factory=dict, hash=False)
    shares: dict[str, tuple[Region, ...]] = field(default_factory=dict, hash=False)


def tile_grid(block: FusedBlock, grid: tuple[int, int]) -> list[Tile]:
    """The ``rows x cols`` grid of tiles over ``block``'s output, in row-major order.

    Raises :class:`GraphError` when the grid has more rows or columns than the output map."""
    rows, cols = grid
    _, height, width = block.output.shape
    if rows < 1 or cols < 1:
        raise GraphError(f"grid {rows}x{cols}: expected at least 1x1")
    if rows > height or cols > width:
        raise GraphError(
            f"grid {rows}x{cols} is larger than the {height}x{width} output feature map of model "
            f"{block.model!r} at fused depth {block.depth}; use at most "
            f"{min(rows, height)}x{min(cols, width)} or a shallower fused depth"
        )
    return tiles_for_bounds(block, even_bounds(height, rows), even_bounds(width, cols))


def tiles_for_bounds(block: FusedBlock, row_bounds: Sequence[int],
                     col_bounds: Sequence[int]) -> list[Tile]:
    """Tiles for arbitrary grid lines (MoDNN's speed-biased row split uses uneven ones).

    Without data reuse a tile's regions are separable, rows from its row interval and columns
    from its column interval, so each grid row and column is walked back once."""
    rows = [axis_intervals(block, 0, a, b) for a, b in itertools.pairwise(row_bounds)]
    cols = [axis_intervals(block, 1, a, b) for a, b in itertools.pairwise(col_bounds)]
    tiles: list[Tile] = []
    for i, by_row in enumerate(rows):
        for j, by_col in enumerate(cols):
            holds = {name: _rect(by_row[name], by_col[name]) for name in by_row}
            out = Region(row_bounds[i], row_bounds[i + 1], col_bounds[j], col_bounds[j + 1])
            tiles.append(Tile(index=len(tiles), row=i, col=j, output=out,
                              input=holds[block.input], holds=holds,
                              computes={n: holds[n] for n in block.names}))
    return tiles


def axis_intervals(block: FusedBlock, axis: int, start: int, end: int
                   ) -> dict[str, tuple[int, int]]:
    """Along one axis (0 rows, 1 columns): the interval of every layer's output (and of the
    block's input) needed to produce ``[start, end)`` of the block's output."""
    needs: dict[str, list[tuple[int, int]]] = {block.output.name: [(start, end)]}
    held: dict[str, tuple[int, int]] = {}
    for node in reversed(block.nodes):
        lo, hi = _hull(needs.get(node.name, []), node.shape[1 + axis])
        held[node.name] = (lo, hi)
        window = node.window
        if window is not None and hi > lo:
            need = needed_interval(lo, hi, window.kernel[axis], window.stride[axis],
                                   window.padding[axis], window.dilation[axis])
        else:
            need = (lo, hi)
        for producer in node.inputs:
            needs.setdefault(producer, []).append(need)
    held[block.input] = _hull(needs.get(block.input, []), block.input_shape[1 + axis])
    return held


def _hull(intervals: list[tuple[int, int]], size: int) -> tuple[int, int]:
    """The smallest interval of ``[0, size)`` holding every non-empty interval's inside."""
    lo, hi = size, 0
    for a, b in intervals:
        a, b = max(a, 0), min(b, size)
        if a < b:
            lo, hi = min(lo, a), max(hi, b)
    return (lo, hi) if lo < hi else (0, 0)


def _rect(rows: tuple[int, int], cols: tuple[int, int]) -> Region:
    if rows[1] <= rows[0] or cols[1] <= cols[0]:
        return EMPTY
    return Region(rows[0], rows[1], cols[0], cols[1])


def backward_regions(block: FusedBlock, out: Region,
                     available: Mapping[str, Sequence[Region]] | None = None
                     ) -> tuple[dict[str, Region], dict[str, Region]]:
    """``(holds, computes)``: the region of every layer's output needed to produce ``out`` of
    the block's output, and the part of it computed here.

    ``available`` (data reuse) lists, per layer, regions already computed elsewhere: a layer
    then computes only the bounding box of what they miss, and only that part's needs propagate
    further back. Without it every held region is computed."""
    needs: dict[str, list[Region]] = {block.output.name: [out]}
    holds: dict[str, Region] = {}
    computes: dict[str, Region] = {}
    for node in reversed(block.nodes):
        _, height, width = node.shape
        holds[node.name] = clip(bbox(needs.get(node.name, [])), height, width)
        own = holds[node.name]
        if available is not None:
            own = uncovered_bbox(own, available.get(node.name, ()))
        computes[node.name] = own
        for producer in node.inputs:
            need = node.window.needed(own) if node.window is not None else own
            needs.setdefault(producer, []).append(need)
    _, height, width = block.input_shape
    holds[block.input] = clip(bbox(needs.get(block.input, [])), height, width)
    return holds, computes


def restrict(tiles: Sequence[Tile], block: FusedBlock) -> list[Tile]:
    """``tiles`` of a longer block that ends where ``block`` does (same output, same grid),
    cut down to ``block``: the same tiles as tiling ``block`` itself, with or without data
    reuse.

    Walking back from the output, a layer's regions depend only on the layers after it, so a
    later block's walk is the first part of the longer one's; ``block``'s input is a layer of
    the longer block, held where the longer block holds it (its output is read by ``block``
    alone: a cut leaves one tensor). DeeperThings' block search prices every block between two
    cuts: each is then cut from the prefix's tiles instead of walked again."""
    names = set(block.names)
    keep = names | {block.input}
    out = []
    for t in tiles:
        if block.input not in t.holds:
            raise GraphError(f"tiles of model {block.model!r}: no region of {block.input!r} to "
                             f"cut the block from {block.input!r} out of")
        out.append(Tile(t.index, t.row, t.col, t.output, t.holds[block.input],
                        {n: r for n, r in t.holds.items() if n in keep},
                        {n: r for n, r in t.computes.items() if n in names}, t.level,
                        {n: p for n, p in t.reused.items() if n in names},
                        {n: r for n, r in t.shares.items() if n in names}))
    return out


def stitch_region(tiles: Sequence[Tile]) -> Region:
    """The output region the tiles cover together (their bounding box)."""
    return bbox(t.output for t in tiles)


# ---- what a tiling costs ----------------------------------------------------------------------


def tile_flops(block: FusedBlock, computes: Mapping[str, Region]) -> float:
    """FLOPs of computing these regions: each layer's FLOPs are proportional to the output
    pixels it produces (true of every fusable layer under the cost rules in graph.costs)."""
    return sum(n.flops * computes.get(n.name, EMPTY).area / n.map_area for n in block.nodes)


def halo_flops(block: FusedBlock, tiles: Sequence[Tile]) -> float:
    """Redundant FLOPs: what the tiles compute together beyond the unpartitioned block."""
    return sum(tile_flops(block, t.computes) for t in tiles) - block.flops


def input_bytes(block: FusedBlock, tile: Tile) -> int:
    channels = block.input_shape[0]
    return tile.input.area * channels * block.input_elem_bytes


def output_bytes(block: FusedBlock, tile: Tile) -> int:
    return block.output.bytes_of(tile.output.area)


def reused_bytes(block: FusedBlock, tile: Tile) -> int:
    """Bytes of the pieces a level-1 tile receives instead of computing."""
    return sum(block.node(name).bytes_of(p.region.area)
               for name, pieces in tile.reused.items() for p in pieces)


def shared_bytes(block: FusedBlock, tile: Tile) -> int:
    """Bytes of the halo pieces a level-0 tile sends to be kept for level-1 tiles."""
    return sum(block.node(name).bytes_of(r.area)
               for name, regions in tile.shares.items() for r in regions)


def received_bytes(block: FusedBlock, tile: Tile) -> int:
    """Everything a tile receives for one frame: its input crop and any reused pieces."""
    return input_bytes(block, tile) + reused_bytes(block, tile)


def sent_bytes(block: FusedBlock, tile: Tile) -> int:
    """Everything a tile sends for one frame: its output and any shared halo pieces."""
    return output_bytes(block, tile) + shared_bytes(block, tile)


def peak_activation_bytes(block: FusedBlock, holds: Mapping[str, Region],
                          computes: Mapping[str, Region] | None = None) -> int:
    """Peak bytes of feature maps alive while a tile runs its layers in order (each value
    freed after its last reader; a window layer's padded input counted while it runs)."""
    computes = holds if computes is None else computes
    alive = {block.input: _bytes(block, block.input, holds[block.input])}
    total = peak = alive[block.input]
    for name, window, source_bytes, pixel_bytes, frees in block.live_steps:
        temp = 0
        own = computes[name]
        if window is not None and not own.empty:
            temp = window.needed(own).area * source_bytes
        size = holds[name].area * pixel_bytes
        alive[name] = size
        total += size
        peak = max(peak, total + temp)
        for producer in frees:
            if producer in alive:
                total -= alive.pop(producer)
    return peak


def _bytes(block: FusedBlock, name: str, region: Region) -> int:
    channels = block.shape_of(name)[0]
    return region.area * channels * block.elem_bytes_of(name)


@dataclass(frozen=True)
class TilingReport:
    """The figures the issue asks for, for one fused depth and grid."""

    model: str
    depth: int
    grid: tuple[int, int]
    reuse: bool
    block_flops: float
    total_flops: float
    halo_flops: float
    weights_bytes: int
    largest_tile_bytes: int
    largest_tile_peak_bytes: int
    whole_block_peak_bytes: int
    sent_bytes: tuple[int, ...]
    received_bytes: tuple[int, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "model": self.model, "fused_depth": self.depth, "grid": list(self.grid),
            "reuse": self.reuse, "block_flops": self.block_flops,
            "total_flops": self.total_flops, "halo_flops": self.halo_flops,
            "halo_pct": 100.0 * self.halo_flops / self.block_flops if self.block_flops else 0.0,
            "weights_bytes": self.weights_bytes,
            "largest_tile_bytes": self.largest_tile_bytes,
            "largest_tile_peak_bytes": self.largest_tile_peak_bytes,
            "whole_block_peak_bytes": self.whole_block_peak_bytes,
            "tile_sent_bytes": list(self.sent_bytes),
            "tile_received_bytes": list(self.received_bytes),
        }


def tiling_report(block: FusedBlock, tiles: Sequence[Tile], grid: tuple[int, int],
                  reuse: bool = False) -> TilingReport:
    """Halo FLOPs, the largest tile's input + output + weights bytes (and its peak feature-map
    bytes), and each tile's traffic, next to the unpartitioned block's peak."""
    total = sum(tile_flops(block, t.computes) for t in tiles)
    whole = tiles_for_bounds(block, [0, block.output.shape[1]], [0, block.output.shape[2]])[0]
    weights = block.param_bytes
    return TilingReport(
        model=block.model, depth=block.depth, grid=grid, reuse=reuse,
        block_flops=float(block.flops), total_flops=total, halo_flops=total - block.flops,
        weights_bytes=weights,
        largest_tile_bytes=max(input_bytes(block, t) + output_bytes(block, t) + weights
                               for t in tiles),
        largest_tile_peak_bytes=max(peak_activation_bytes(block, t.holds, t.computes)
                                    for t in tiles),
        whole_block_peak_bytes=peak_activation_bytes(block, whole.holds),
        sent_bytes=tuple(sent_bytes(block, t) for t in tiles),
        received_bytes=tuple(received_bytes(block, t) for t in tiles),
    )
