"""What a tile costs beyond its share of the FLOPs, measured on this host (issue 14).

A profile prices each layer once, for the whole feature map. Cut into tiles, every tile calls
every layer of the fused block on its own: the fixed part of a call (dispatch, the kernel's
set-up, the crop's padding and copies, a reused piece's assembly) is paid once per tile and
layer instead of once per layer, so n tiles cost more than their FLOP share even with no halo.
DeepThings' speedups assume that part is small; on resnet18's small feature maps it is not.

The model: a tile that computes a fraction f of layer l costs ``f x latency(l) + c_l x (1 - f)``
(the whole map, f = 1, costs what the profile says; a tiny tile still pays c_l).
:func:`calibrate_tiles` measures c: it cuts the model's fusable prefix into consecutive fused
blocks (:data:`SEGMENTS` of them, DeeperThings' blocks) and runs each on this host whole and cut
into grids (with and without data reuse), the runs interleaved, each tile timed in this
thread's CPU time (best of ``repeats``), and fits each block's whole time and its c together by
least squares (:func:`fit_call_ms`); a layer's c_l is its block's. One figure for the whole
prefix, fitted on the first block, priced later blocks too cheap: resnet18's last blocks
(7x7 maps, 512 channels, residual adds) pay nearly twice the first's cost a call, so the
planner chose several blocks that ran 36% slower than one. The profile keeps every prefix
layer's c_l (``host.tile_call_ms_by_node``), their mean for any other layer a task splits
(``host.tile_call_ms``), and what they were fitted from (``host.tile_calibration``); the
cluster planner scales them to each device as it scales a layer's latency.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from edgeweave.errors import ProfileError
from edgeweave.graph import Graph
from edgeweave.graph.blocks import FusedBlock, cut_depths, fused_blocks
from edgeweave.graph.regions import EMPTY, Region
from edgeweave.graph.reuse import reuse_tiles
from edgeweave.graph.tile_exec import ShareStore, TileModule, run_tiles
from edgeweave.graph.tiles import Tile, tile_grid
from edgeweave.profile.build import host_latencies
from edgeweave.profile.measure import PROFILE_THREADS, torch_threads
from edgeweave.profile.schema import Profile

#: Grids measured (each with and without data reuse) against the whole block.
GRIDS = ((2, 2), (3, 3), (4, 4))
#: Consecutive blocks the fusable prefix is cut into for the calibration (fewer when it has
#: fewer cuts): each block's layers get the call cost fitted on it.
SEGMENTS = 3


def tile_call_ms(profile: Profile) -> float | None:
    """The host's per-tile, per-layer call cost in ms, if the profile was calibrated."""
    value = ((profile.model_extra or {}).get("host") or {}).get("tile_call_ms")
    return None if value is None else float(value)


def tile_call_costs(profile: Profile) -> dict[str, float]:
    """Each calibrated layer's per-call cost in ms (the block it was fitted on); empty for a
    profile calibrated before costs were per layer (:func:`tile_call_ms` then prices all)."""
    costs = ((profile.model_extra or {}).get("host") or {}).get("tile_call_ms_by_node") or {}
    return {str(name): float(ms) for name, ms in costs.items()}


def call_share(block: FusedBlock, tile: Tile) -> float:
    """Sum over the block's layers a tile computes of (1 - its fraction of the layer): how
    many whole-layer calls' fixed cost the tile adds to the profile's FLOP share."""
    total = 0.0
    for node in block.nodes:
        f = tile.computes.get(node.name, EMPTY).area / node.map_area
        if f > 0:
            total += 1.0 - f
    return total


def calibrate_tiles(graph: Graph, profile: Profile, depth: int | None = None,
                    grids: Sequence[tuple[int, int]] = GRIDS, repeats: int = 3,
                    segments: int = SEGMENTS) -> Profile:
    """``profile`` with the host's tile call costs measured on ``graph`` (module docstring):
    the prefix (up to fused ``depth``, the deepest cut by default) in ``segments`` consecutive
    blocks; ProfileError for a model with no fusable prefix or a profile of another model."""
    depths = sorted(cut_depths(graph))
    if not depths:
        raise ProfileError(f"model {graph.name!r} has no fusable prefix: nothing to calibrate "
                           "tiles on")
    if profile.model != graph.name:
        raise ProfileError(f"profile of {profile.model!r} does not match model {graph.name!r}")
    if depth is not None:
        depths = [d for d in depths if d <= depth] or depths[:1]
    n = max(1, min(segments, len(depths)))
    ends = sorted({depths[(i + 1) * len(depths) // n - 1] for i in range(n)})
    host = host_latencies(profile)
    x = torch.randn(graph.input_shape, generator=torch.Generator().manual_seed(0))
    records: list[dict[str, Any]] = []
    by_node: dict[str, float] = {}
    start = 0
    for block, end in zip(fused_blocks(graph, ends), ends, strict=True):
        record = _calibrate_block(graph, block, x, host, grids, repeats)
        records.append({"from_depth": start, "to_depth": end, **record})
        by_node.update(dict.fromkeys(block.names, record["tile_call_ms"]))
        with torch.no_grad():  # the next block's input: this one run whole
            x = run_tiles(graph, block, tile_grid(block, (1, 1)), x)
        start = end
    mean = sum(by_node.values()) / len(by_node)
    extra_doc = dict(profile.model_extra or {})
    extra_doc["host"] = {**extra_doc.get("host", {}), "tile_call_ms": mean,
                         "tile_call_ms_by_node": by_node,
                         "tile_calibration": {"blocks": records, "repeats": repeats,
                                              "clock": "thread CPU time"}}
    return Profile.model_validate({**profile.model_dump(), **extra_doc})


def _calibrate_block(graph: Graph, block: FusedBlock, x: torch.Tensor,
                     host: dict[str, float], grids: Sequence[tuple[int, int]], repeats: int
                     ) -> dict[str, Any]:
    """One block's points (whole and every grid that fits, reuse off and on) and its fit."""
    _, height, width = block.output.shape
    configs = [((1, 1), False)] + [(g, r) for g in grids if g[0] <= height and g[1] <= width
                                   for r in (False, True)]
    tilings = [reuse_tiles(block, g) if r else tile_grid(block, g) for g, r in configs]
    with torch_threads(PROFILE_THREADS):
        runs = [_Run(graph, block, tiles) for tiles in tilings]
        for _ in range(repeats):  # interleaved: a spell of load hits every configuration
            for run in runs:
                run.once(x)
    points: list[dict[str, Any]] = [
        {"grid": list(g), "reuse": r, "tiles": len(tiles), "measured_ms": run.ms,
         "flop_share": _share(block, tiles, host),
         "calls": sum(call_share(block, t) for t in tiles)}
        for (g, r), tiles, run in zip(configs, tilings, runs, strict=True)]
    whole, call_ms = fit_call_ms(points)
    return {"fused_depth": block.depth, "whole_block_ms": whole, "tile_call_ms": call_ms,
            "points": points}


def fit_call_ms(points: Sequence[dict[str, Any]]) -> tuple[float, float]:
    """Least squares of ``measured_ms = whole x flop_share + c x calls`` over the points (the
    whole block is one of them: share 1, no calls): ``(whole, c)``, c at least 0. Fitting the
    whole block's time from every point, not from its own run alone, keeps one noisy run of
    it from deciding c."""
    ss = sum(p["flop_share"] ** 2 for p in points)
    sk = sum(p["flop_share"] * p["calls"] for p in points)
    kk = sum(p["calls"] ** 2 for p in points)
    sm = sum(p["flop_share"] * p["measured_ms"] for p in points)
    km = sum(p["calls"] * p["measured_ms"] for p in points)
    det = ss * kk - sk * sk
    if det > 0:
        whole, call = (sm * kk - km * sk) / det, (ss * km - sk * sm) / det
        if call >= 0:
            return whole, call
    return (sm / ss if ss > 0 else 0.0), 0.0


def _share(block: FusedBlock, tiles: Sequence[Tile], host: dict[str, float]) -> float:
    """The tiles' FLOP-priced time as a multiple of the whole block's (halo included)."""
    block_ms = sum(host[n.name] for n in block.nodes)
    priced = sum(host[n.name] * t.computes.get(n.name, EMPTY).area / n.map_area
                 for t in tiles for n in block.nodes)
    return priced / block_ms if block_ms > 0 else float(len(tiles))


class _Run:
    """One tiling run in order (level 0 first, reused pieces kept), modules built before any
    clock starts; ``ms``: the sum over its tiles of each tile's best CPU time so far."""

    def __init__(self, graph: Graph, block: FusedBlock, tiles: Sequence[Tile]) -> None:
        self.tiles = tiles
        self.order = sorted(tiles, key=lambda t: (t.level, t.index))
        self.modules = {t.index: TileModule(graph, block, t) for t in self.order}
        self.best = dict.fromkeys(self.modules, float("inf"))

    @property
    def ms(self) -> float:
        return sum(self.best.values())

    def once(self, x: torch.Tensor) -> None:
        frame = Region(0, x.shape[2], 0, x.shape[3])
        store = ShareStore(self.tiles)
        with torch.no_grad():
            for tile in self.order:
                rows, cols = tile.input.relative_to(frame)
                crop, pieces = x[:, :, rows, cols], store.pieces(tile)
                start = time.thread_time()
                _, shares = self.modules[tile.index](crop, pieces)
                elapsed = (time.thread_time() - start) * 1000.0
                self.best[tile.index] = min(self.best[tile.index], elapsed)
                store.keep(tile.index, shares)
