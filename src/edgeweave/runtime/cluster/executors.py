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
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from edgeweave.codec import CodecError
from edgeweave.errors import GraphError
from edgeweave.graph.blocks import FusedBlock, chain_block, fused_block, fused_blocks
from edgeweave.graph.capture import Graph
from edgeweave.graph.layerwise import unit_tiles
from edgeweave.graph.tile_exec import TileModule
from edgeweave.graph.tiles import Tile, tile_grid
from edgeweave.runtime import tensors
from edgeweave.runtime.cluster.blueprint import (
    LayerSpec,
    Spec,
    fused_tiles,
    neuron_interval,
    piece_names,
    share_names,
    tile_variant,
    value_dtype,
)
from edgeweave.runtime.proto import cluster_pb2 as cpb

MAX_MODULES = 64
MAX_BANDS = 4  # frames a layer-wise worker keeps rows of (its gateway runs one at a time)
MAX_BACK = 8  # row ranges a task may ask back (a band returns its top and bottom edges)


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


class LayerExecutor:
    """The parts of split layers one device computes (MoDNN): ``run(layer, part, crop)``.
    ``slices`` holds the rows of fully connected layers, named as blueprint.layer_weights."""

    method = "layer-wise"

    def __init__(self, graph: Graph, layers: Sequence[LayerSpec],
                 slices: Mapping[str, torch.Tensor]):
        self.graph = graph
        self.layers = list(layers)
        self.batch = graph.input_shape[0]
        self._fx = {n.name: n for n in graph.module.graph.nodes}
        self._parts: dict[tuple[int, int], tuple[Spec, Spec, object]] = {}
        self._tiles: dict[tuple[int, int], Tile] = {}
        for i, layer in enumerate(self.layers):
            for part in layer.parts:
                self._parts[(i, part)] = self._build(layer, part, slices)
                if layer.kind == "rows":
                    self._tiles[(i, part)] = unit_tiles(self.graph, layer.split())[part]
        # resident rows (graph.resident): each frame's output kept for its next split layer,
        # (layer, first row, tensor) by frame, the oldest dropped beyond MAX_BANDS
        self._bands: OrderedDict[str, tuple[int, int, torch.Tensor]] = OrderedDict()

    @property
    def tasks(self) -> int:
        return len(self._parts)

    def _build(self, layer: LayerSpec, part: int, slices: Mapping[str, torch.Tensor]
               ) -> tuple[Spec, Spec, object]:
        source = self.graph.node(layer.unit[0]).inputs[0]
        dtype = value_dtype(self.graph, source)
        if layer.kind == "rows":
            block = chain_block(self.graph, layer.unit)
            tile = unit_tiles(self.graph, layer.split())[part]
            crop = (dtype, (self.batch, block.input_shape[0], tile.input.height,
                            tile.input.width))
            out = (dtype, (self.batch, block.output.shape[0], tile.output.height,
                           tile.output.width))
            return crop, out, TileModule(self.graph, block, tile).eval()
        a, b = neuron_interval(layer.row_bounds, part)
        target = str(self._fx[layer.unit[0]].target)
        weight = slices[f"{target}.weight[{a}:{b}]"]
        bias = slices.get(f"{target}.bias[{a}:{b}]")
        post = [self.graph.module.get_submodule(str(self._fx[n].target)) for n in layer.unit[1:]]
        shape = tuple(self.graph.node(source).out_shape or ())
        return (dtype, shape), (dtype, (*shape[:-1], b - a)), (weight, bias, post)

    def specs(self, layer: int, part: int) -> tuple[Spec, Spec]:
        """(crop, output) of a part; GraphError if this device has no such part."""
        found = self._parts.get((layer, part))
        if found is None:
            raise GraphError(f"this worker computes no part {part} of split layer {layer}")
        return found[0], found[1]

    def expected(self, msg: cpb.Task) -> dict[str, Spec]:
        """The tensors task ``msg`` must carry: its crop, or with resident rows the halo
        ``above`` and ``below`` the kept rows it names (only the non-empty ones)."""
        crop, _ = self.specs(msg.layer, msg.tile)
        tile = self._tiles.get((msg.layer, msg.tile))
        if (msg.resident or msg.keep or msg.back) and tile is None:
            raise GraphError(f"split layer {msg.layer} is not split by rows: it keeps no rows")
        self._back(msg)  # before any work: what it would return
        if not msg.resident:
            return {"crop": crop}
        assert tile is not None
        r0, r1 = tile.input.r0, tile.input.r1
        if not r0 <= msg.keep_r0 < msg.keep_r1 <= r1:
            raise GraphError(f"kept rows [{msg.keep_r0}, {msg.keep_r1}) are not inside part "
                             f"{msg.tile}'s input rows [{r0}, {r1}) of split layer {msg.layer}")
        dtype, shape = crop
        out = {}
        for name, rows in (("above", msg.keep_r0 - r0), ("below", r1 - msg.keep_r1)):
            if rows:
                out[name] = (dtype, (*shape[:2], rows, shape[3]))
        return out

    def crop(self, msg: cpb.Task, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The part's input: the crop it carries, or its kept rows with the halo around."""
        if not msg.resident:
            return values["crop"]
        kept = self._bands.get(msg.frame)
        if kept is None or kept[0] != msg.layer - 1:
            raise GraphError(f"frame {msg.frame[:40]!r}: this worker kept no rows of split "
                             f"layer {msg.layer - 1}")
        _, first, band = kept
        a, b = msg.keep_r0 - first, msg.keep_r1 - first
        if a < 0 or b > band.shape[2]:
            raise GraphError(f"kept rows [{msg.keep_r0}, {msg.keep_r1}) are outside the rows "
                             f"[{first}, {first + band.shape[2]}) this worker kept")
        pieces = [values["above"]] if "above" in values else []
        tile = self._tiles[(msg.layer, msg.tile)]
        pieces.append(band[:, :, a:b, tile.input.c0:tile.input.c1])
        if "below" in values:
            pieces.append(values["below"])
        return torch.cat(pieces, dim=2)

    def answer(self, msg: cpb.Task, out: torch.Tensor) -> torch.Tensor:
        """What the task returns of its output ``out``: all of it, or when it is kept for the
        frame's next split layer (``keep``) only the rows ``back`` names, stacked (none when
        no other part reads any)."""
        tile = self._tiles.get((msg.layer, msg.tile))
        if msg.keep and tile is not None:
            self._bands[msg.frame] = (msg.layer, tile.output.r0, out)
            self._bands.move_to_end(msg.frame)
            while len(self._bands) > MAX_BANDS:
                self._bands.popitem(last=False)
        else:
            self._bands.pop(msg.frame, None)  # the frame's run of resident layers ended
        if not msg.keep:
            return out
        assert tile is not None
        first = tile.output.r0
        return torch.cat([out[:, :, :0], *(
            out[:, :, a - first:b - first] for a, b in self._back(msg))], dim=2)

    def _back(self, msg: cpb.Task) -> list[tuple[int, int]]:
        """The row pairs ``msg.back`` asks for, checked against the part's output rows."""
        bounds = list(msg.back)
        if not bounds:
            return []
        if not msg.keep:
            raise GraphError("back: only a part whose rows are kept returns some of them")
        tile = self._tiles[(msg.layer, msg.tile)]
        first, last = tile.output.r0, tile.output.r1
        if len(bounds) % 2 or len(bounds) > 2 * MAX_BACK:
            raise GraphError(f"back: expected up to {MAX_BACK} (first, end) row pairs, got "
                             f"{len(bounds)} numbers")
        pairs = list(zip(bounds[::2], bounds[1::2], strict=True))
        if any(not first <= a < b <= last for a, b in pairs):
            raise GraphError(f"back rows {pairs[:4]} are not inside part {msg.tile}'s output "
                             f"rows [{first}, {last})")
        return pairs

    def run(self, layer: int, part: int, crop: torch.Tensor) -> torch.Tensor:
        _, _, how = self._parts[(layer, part)]
        with torch.inference_mode():
            if isinstance(how, TileModule):
                return how(crop)[0]
            weight, bias, post = cast(tuple[torch.Tensor, torch.Tensor | None, list[nn.Module]],
                                      how)
            out = F.linear(crop, weight, bias)
            for module in post:
                out = module(out)
            return out
