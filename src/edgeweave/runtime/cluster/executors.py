"""Running one task of a cluster plan: a tile of the fused block, or a part of a split layer.

A worker builds one executor after Setup; the gateway builds the same one from its own copy of
the model when no worker is left to run a task, so a frame is answered whatever fails. Each
executor says exactly which tensors (names, dtypes, shapes) a task must carry before any is
decoded, and runs it on them. Tile modules are built lazily and kept (a level-1 tile has one
variant per set of finished neighbours; at most ``MAX_MODULES`` are kept).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch

from edgeweave.codec import CodecError
from edgeweave.errors import GraphError
from edgeweave.graph.blocks import FusedBlock, fused_block, fused_blocks
from edgeweave.graph.capture import Graph
from edgeweave.graph.tile_exec import TileModule
from edgeweave.graph.tiles import Tile, tile_grid
from edgeweave.runtime import tensors
from edgeweave.runtime.cluster.blueprint import (
    Spec,
    fused_tiles,
    piece_names,
    share_names,
    tile_variant,
    value_dtype,
)
from edgeweave.runtime.proto import cluster_pb2 as cpb

MAX_MODULES = 64


def with_weights(graph: Graph, state: Mapping[str, torch.Tensor]) -> Graph:
    """A copy of a (meta-weighted) captured graph whose named weights are ``state``: only the
    modules the worker runs get real tensors, the rest of the model stays on the meta device."""
    module = copy.deepcopy(graph.module)
    _missing, unexpected = module.load_state_dict(dict(state), strict=False, assign=True)
    if unexpected:
        raise GraphError(f"weights {unexpected[:3]} are not in model {graph.name!r}")
    return dataclasses.replace(graph, module=module.eval())


class TileExecutor:
    """The tiles of one fused block (DeepThings): ``run(tile, crop, pieces)``. ``depth``: the
    prefix block of that fused depth, or the block itself (one of several, DeeperThings)."""

    method = "fused-tiles"

    def __init__(self, graph: Graph, depth: int | FusedBlock, grid: tuple[int, int],
                 reuse: bool):
        self.graph = graph
        self.block: FusedBlock = depth if isinstance(depth, FusedBlock) else \
            fused_block(graph, depth)
        self.tiles = fused_tiles(self.block, grid, reuse)
        self.base = tile_grid(self.block, grid) if reuse else self.tiles
        self.batch = graph.input_shape[0]
        self._modules: OrderedDict[tuple, TileModule] = OrderedDict()

    @property
    def tasks(self) -> int:
        return len(self.tiles)

    def tile(self, index: int, done: Sequence[int] = ()) -> Tile:
        return tile_variant(self.block, self.base, self.tiles, index, done)

    def expected(self, tile: Tile) -> dict[str, Spec]:
        """The crop and every reused piece a task for ``tile`` carries."""
        block = self.block
        out: dict[str, Spec] = {"crop": (value_dtype(self.graph, block.input),
                        (self.batch, block.input_shape[0], tile.input.height, tile.input.width))}
        for name, layer, k in piece_names(tile):
            region = tile.reused[layer][k].region
            out[name] = (value_dtype(self.graph, layer),
                         (self.batch, block.node(layer).shape[0], region.height, region.width))
        return out

    def share_specs(self, tile: Tile) -> dict[str, Spec]:
        """What a result for ``tile`` carries besides its output (the gateway checks it)."""
        out: dict[str, Spec] = {}
        for name, layer, k in share_names(tile):
            region = tile.shares[layer][k]
            out[name] = (value_dtype(self.graph, layer),
                         (self.batch, self.block.node(layer).shape[0], region.height,
                          region.width))
        return out

    def output_spec(self, tile: Tile) -> Spec:
        node = self.block.output
        return (value_dtype(self.graph, node.name),
                (self.batch, node.shape[0], tile.output.height, tile.output.width))

    def decode(self, tile: Tile, result: cpb.TaskResult
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """A worker's result for ``tile``: its output and shares, each checked against the
        tile's shapes before it is decoded (a CodecError or ValueError names what is wrong)."""
        want = {"output": self.output_spec(tile), **self.share_specs(tile)}
        out = tensors.decode([result.output], want.get, 0)["output"]
        shares = tensors.decode(list(result.shares), want.get, 0)
        if set(shares) != set(want) - {"output"}:
            raise CodecError(f"shares {sorted(shares)[:4]}; the tile shares "
                             f"{sorted(set(want) - {'output'})[:4]}")
        return out, shares

    def run(self, tile: Tile, values: Mapping[str, torch.Tensor]
            ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``values``: "crop" and the pieces by wire name; returns the output and the shares
        by wire name."""
        pieces: dict[str, list[torch.Tensor]] = {}
        for name, layer, _ in piece_names(tile):
            pieces.setdefault(layer, []).append(values[name])
        with torch.inference_mode():
            out, shares = self.module(tile)(values["crop"], pieces)
        return out, {name: shares[layer][k] for name, layer, k in share_names(tile)}

    def warm(self, tile: Tile, values: Mapping[str, torch.Tensor]) -> float:
        """Build the tile's module (:meth:`module`) and, the first time, run it once on
        ``values`` with the result thrown away: what a worker does before the device's clock
        starts. A fresh module's first forward pays PyTorch's one-off setup (the allocator,
        oneDNN's kernels for each new shape), which the dilation would multiply into the
        device's compute: resnet18's whole-frame tiles, cold on most workers of a stream,
        calibrated 1.4-1.8x the profile where the warm run that followed computed 1.35x.
        Returns the ms that run took (0 when the module was warm), which the worker reports
        apart (``TaskResult.warm_ms``) so that it is not priced as the runtime's cost."""
        key = self._key(tile)
        fresh = key not in self._modules
        self.module(tile)
        if not fresh:
            return 0.0
        start = time.perf_counter()
        self.run(tile, values)
        return (time.perf_counter() - start) * 1000.0

    @staticmethod
    def _key(tile: Tile) -> tuple:
        # a level-1 tile's regions depend on which neighbours were done: key on all of them
        return (tile.index, tuple(sorted(tile.computes.items())),
                tuple(sorted(tile.reused.items())))

    def module(self, tile: Tile) -> TileModule:
        """The tile's module, built on first use. A worker asks for it before it starts the
        dilated clock: building one is this host's bookkeeping, not the device's compute
        (a level-1 tile meets a new variant whenever its finished neighbours differ)."""
        key = self._key(tile)
        module = self._modules.get(key)
        if module is None:
            module = self._modules[key] = TileModule(self.graph, self.block, tile).eval()
            while len(self._modules) > MAX_MODULES:
                self._modules.popitem(last=False)
        self._modules.move_to_end(key)
        return module


class TileStages:
    """The tiles of consecutive fused blocks (DeeperThings): one :class:`TileExecutor` per
    block, ``stage(b)`` the one a task of block ``b`` runs on (one block: DeepThings)."""

    method = "fused-tiles"

    def __init__(self, graph: Graph, ends: Sequence[int], grids: Sequence[tuple[int, int]],
                 reuse: Sequence[bool]):
        blocks = fused_blocks(graph, ends)
        self.stages = [TileExecutor(graph, block, grid, r)
                       for block, grid, r in zip(blocks, grids, reuse, strict=True)]

    @property
    def tasks(self) -> int:
        return sum(s.tasks for s in self.stages)

    @property
    def blocks(self) -> list[FusedBlock]:
        return [s.block for s in self.stages]

    def stage(self, block: int) -> TileExecutor:
        if not 0 <= block < len(self.stages):
            raise GraphError(f"block {block}: the plan has fused blocks 0 to "
                             f"{len(self.stages) - 1}")
        return self.stages[block]
