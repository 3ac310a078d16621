"""Data-reuse scheduling (DeepThings, Zhao et al. 2018, Sec. IV-B): neighbouring tiles compute
the same halo pixels; compute them once.

Tiles are split into two levels in a checkerboard: level-0 tiles have no dependencies and
compute their whole halo, as without reuse, then send the parts of it that level-1 tiles would
otherwise recompute to where results are gathered. A level-1 tile computes, at every layer, only
the bounding box of what the kept pieces miss, and receives the rest. When a level-0 neighbour
has not finished yet its pieces are simply not available and the level-1 tile computes more, up
to its full halo: the same regions arithmetic with fewer pieces, so any subset of finished
neighbours gives a correct tile.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from edgeweave.graph.blocks import FusedBlock
from edgeweave.graph.regions import Region, uncovered_bbox
from edgeweave.graph.tiles import Piece, Tile, backward_regions, tile_flops, tile_grid


def checkerboard(rows: int, cols: int) -> list[int]:
    """Level of each tile in row-major order: 0 where row + column is even."""
    return [(i + j) % 2 for i in range(rows) for j in range(cols)]


def reuse_tiles(block: FusedBlock, grid: tuple[int, int],
                done: Iterable[int] | None = None) -> list[Tile]:
    """The grid's tiles with data reuse: level-0 tiles carry the pieces they share, level-1
    tiles the pieces they reuse from the level-0 tiles in ``done`` (all of them when None)."""
    base = tile_grid(block, grid)
    if len(base) == 1:
        return base
    levels = checkerboard(*grid)
    level0 = [t for t in base if levels[t.index] == 0]
    full = {name: [t.holds[name] for t in level0] for name in block.names}
    planned = {t.index: backward_regions(block, t.output, full)
               for t in base if levels[t.index] == 1}
    shares = {t.index: _shares(block, t, planned.values()) for t in level0}
    finished = set(shares) if done is None else set(done) & set(shares)
    out = []
    for tile in base:
        if levels[tile.index] == 0:
            out.append(Tile(tile.index, tile.row, tile.col, tile.output, tile.input, tile.holds,
                            tile.computes, level=0, shares=shares[tile.index]))
        else:
            out.append(level1_tile(block, tile, {k: shares[k] for k in sorted(finished)}))
    return out


def level1_tile(block: FusedBlock, tile: Tile,
                shares: Mapping[int, Mapping[str, Sequence[Region]]]) -> Tile:
    """``tile`` as a level-1 tile reusing the pieces level-0 tiles have shared (``shares``:
    source tile -> layer -> kept regions); with none it computes everything itself."""
    available = {name: [r for by_layer in shares.values() for r in by_layer.get(name, ())]
                 for name in block.names}
    holds, computes = backward_regions(block, tile.output, available)
    reused: dict[str, tuple[Piece, ...]] = {}
    for name in block.names:
        taken: list[Region] = [computes[name]]
        pieces = []
        held = holds[name]
        for source, by_layer in shares.items():
            for region in by_layer.get(name, ()):
                overlap = _overlap(held, region)
                if overlap is None:
                    continue
                piece = uncovered_bbox(overlap, taken)
                if not piece.empty:
                    pieces.append(Piece(source, piece))
                    taken.append(piece)
        if pieces:
            reused[name] = tuple(pieces)
    return Tile(tile.index, tile.row, tile.col, tile.output, holds[block.input], holds,
                computes, level=1, reused=reused)


def _shares(block: FusedBlock, source: Tile,
            planned: Iterable[tuple[dict[str, Region], dict[str, Region]]]
            ) -> dict[str, tuple[Region, ...]]:
    """What a level-0 tile keeps for the level-1 tiles: per layer, the part of each level-1
    tile's held region it holds and that tile does not compute."""
    out: dict[str, list[Region]] = {}
    for holds, computes in planned:
        for name in block.names:
            overlap = _overlap(holds[name], source.holds[name])
            if overlap is None:  # most pairs of tiles (all but neighbours) share nothing
                continue
            piece = uncovered_bbox(overlap, [computes[name]])
            if not piece.empty and piece not in out.get(name, []):
                out.setdefault(name, []).append(piece)
    return {name: tuple(regions) for name, regions in out.items()}


def _overlap(a: Region, b: Region) -> Region | None:
    """``a.intersect(b)``, or None when it is empty (without building it: a hot test)."""
    r0, r1 = max(a.r0, b.r0), min(a.r1, b.r1)
    if r0 >= r1:
        return None
    c0, c1 = max(a.c0, b.c0), min(a.c1, b.c1)
    return None if c0 >= c1 else Region(r0, r1, c0, c1)


def reuse_savings(block: FusedBlock, grid: tuple[int, int]) -> dict[str, float]:
    """FLOPs of the grid's tiles with and without reuse (all level-0 tiles finished first)."""
    plain = sum(tile_flops(block, t.computes) for t in tile_grid(block, grid))
    reused = sum(tile_flops(block, t.computes) for t in reuse_tiles(block, grid))
    return {"flops_without_reuse": plain, "flops_with_reuse": reused,
            "saved_flops": plain - reused,
            "saved_pct": 100.0 * (plain - reused) / plain if plain else 0.0}
