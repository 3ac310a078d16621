"""What a tile costs beyond its share of the FLOPs, measured on this host (issue 14).

A profile prices each layer once, for the whole feature map. Cut into tiles, every tile calls
every layer of the fused block on its own: the fixed part of a call (dispatch, the kernel's
set-up, the crop's padding and copies, a reused piece's assembly) is paid once per tile and
layer instead of once per layer, so n tiles cost more than their FLOP share even with no halo.
DeepThings' speedups assume that part is small; on resnet18's small feature maps it is not.

The model: a tile that computes a fraction f of layer l costs ``f x latency(l) + c x (1 - f)``
(the whole map, f = 1, costs what the profile says; a tiny tile still pays c), with c one
figure per host. :func:`calibrate_tiles` measures c: it runs one fused block of the model on
this host whole and cut into grids (with and without data reuse), the runs interleaved, each
tile timed in this thread's CPU time (best of ``repeats``), and fits the whole block's time and
c together by least squares (:func:`fit_call_ms`). The profile keeps c (its
``host.tile_call_ms``) with what it was fitted from (``host.tile_calibration``); the cluster
planner scales it to each device as it scales a layer's latency.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from edgeweave.errors import ProfileError
from edgeweave.graph import Graph
from edgeweave.graph.blocks import FusedBlock, cut_depths, fused_block
from edgeweave.graph.regions import EMPTY, Region
from edgeweave.graph.reuse import reuse_tiles
from edgeweave.graph.tile_exec import ShareStore, TileModule
from edgeweave.graph.tiles import Tile, tile_grid
from edgeweave.profile.build import host_latencies
from edgeweave.profile.measure import PROFILE_THREADS, torch_threads
from edgeweave.profile.schema import Profile

#: Grids measured (each with and without data reuse) against the whole block.
GRIDS = ((2, 2), (3, 3), (4, 4))


def tile_call_ms(profile: Profile) -> float | None:
    """The host's per-tile, per-layer call cost in ms, if the profile was calibrated."""
    value = ((profile.model_extra or {}).get("host") or {}).get("tile_call_ms")
    return None if value is None else float(value)


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
                    grids: Sequence[tuple[int, int]] = GRIDS, repeats: int = 3) -> Profile:
    """``profile`` with the host's tile call cost measured on ``graph`` (module docstring):
    fused ``depth`` defaults to the model's middle cut; ProfileError for a model with no
    fusable prefix or a profile of another model."""
    depths = sorted(cut_depths(graph))
    if not depths:
        raise ProfileError(f"model {graph.name!r} has no fusable prefix: nothing to calibrate "
                           "tiles on")
    if profile.model != graph.name:
        raise ProfileError(f"profile of {profile.model!r} does not match model {graph.name!r}")
    block = fused_block(graph, depth if depth is not None else depths[len(depths) // 2])
    host = host_latencies(profile)
    x = torch.randn(graph.input_shape, generator=torch.Generator().manual_seed(0))
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
    extra_doc = dict(profile.model_extra or {})
    extra_doc["host"] = {**extra_doc.get("host", {}), "tile_call_ms": call_ms,
                         "tile_calibration": {"fused_depth": block.depth,
                                              "whole_block_ms": whole, "points": points,
                                              "repeats": repeats, "clock": "thread CPU time"}}
    return Profile.model_validate({**profile.model_dump(), **extra_doc})


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
