"""Running the parts of split layers one device computes (MoDNN's layer-wise split), whole or
one step at a time.

A part of a convolution or pooling layer is a tile of its unit (rows of its output); a part of
a fully connected layer is a slice of its neurons (the device holds only those rows of the
weights). With resident rows (graph.resident) a device keeps the rows it computed for the
frame's next split layer, and a task carries only the halo rows it lacks; overlapped
(graph.overlap), a task computes one step of its part, some of its output rows, and a kept
step's rows join the rows kept for the part. Everything a task names (rows, kept rows, the rows
it asks back) is checked against the device's own part before any work, and everything kept
is bounded: the rows of at most ``MAX_BANDS`` frames, two split layers each, and at most
``MAX_MODULES`` step modules.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from edgeweave.errors import GraphError
from edgeweave.graph.blocks import FusedBlock, chain_block
from edgeweave.graph.capture import Graph
from edgeweave.graph.layerwise import unit_tiles
from edgeweave.graph.tile_exec import TileModule
from edgeweave.graph.tiles import Tile, tiles_for_bounds
from edgeweave.runtime.cluster.blueprint import LayerSpec, Spec, neuron_interval, value_dtype
from edgeweave.runtime.cluster.executors import MAX_MODULES
from edgeweave.runtime.proto import cluster_pb2 as cpb

MAX_BANDS = 4  # frames a layer-wise worker keeps rows of (its gateway runs one at a time)
MAX_BACK = 8  # row ranges a task may ask back (a band returns its top and bottom edges)


@dataclass
class _Band:
    """A part's output rows kept for the frame's next split layer: ``map`` the part's rows
    (NaN where no step wrote yet), ``have`` which are written."""

    first: int
    map: torch.Tensor
    have: torch.Tensor


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
        self._blocks: dict[int, FusedBlock] = {}
        for i, layer in enumerate(self.layers):
            for part in layer.parts:
                self._parts[(i, part)] = self._build(layer, part, slices)
                if layer.kind == "rows":
                    self._tiles[(i, part)] = unit_tiles(self.graph, layer.split())[part]
                    self._blocks[i] = chain_block(self.graph, layer.unit)
        # steps (graph.overlap): (layer, part, first row, end row) -> its tile and module
        self._steps: OrderedDict[tuple[int, int, int, int], tuple[Tile, TileModule]] = \
            OrderedDict()
        self._warm: set[tuple[int, int, int, int]] = set()
        # resident rows: each frame's kept rows by split layer, the oldest frame dropped
        # beyond MAX_BANDS
        self._bands: OrderedDict[str, dict[int, _Band]] = OrderedDict()

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
            return (self._crop_spec(block, tile, dtype),
                    (dtype, (self.batch, block.output.shape[0], tile.output.height,
                             tile.output.width)),
                    TileModule(self.graph, block, tile).eval())
        a, b = neuron_interval(layer.row_bounds, part)
        target = str(self._fx[layer.unit[0]].target)
        weight = slices[f"{target}.weight[{a}:{b}]"]
        bias = slices.get(f"{target}.bias[{a}:{b}]")
        post = [self.graph.module.get_submodule(str(self._fx[n].target)) for n in layer.unit[1:]]
        shape = tuple(self.graph.node(source).out_shape or ())
        return (dtype, shape), (dtype, (*shape[:-1], b - a)), (weight, bias, post)

    def _crop_spec(self, block: FusedBlock, tile: Tile, dtype: str) -> Spec:
        return (dtype, (self.batch, block.input_shape[0], tile.input.height, tile.input.width))

    def specs(self, layer: int, part: int) -> tuple[Spec, Spec]:
        """(crop, output) of a part; GraphError if this device has no such part."""
        found = self._parts.get((layer, part))
        if found is None:
            raise GraphError(f"this worker computes no part {part} of split layer {layer}")
        return found[0], found[1]

    def step_tile(self, msg: cpb.Task) -> Tile | None:
        """The tile of the rows task ``msg`` computes: its part's, or the step's
        (``out_r0``/``out_r1``, which must lie inside the part); None for neurons."""
        self.specs(msg.layer, msg.tile)
        tile = self._tiles.get((msg.layer, msg.tile))
        a, b = msg.out_r0, msg.out_r1
        if not (a or b):
            return tile
        if tile is None:
            raise GraphError(f"split layer {msg.layer} is not split by rows: it has no rows "
                             "to compute a step of")
        if not tile.output.r0 <= a < b <= tile.output.r1:
            raise GraphError(f"step rows [{a}, {b}) are not inside part {msg.tile}'s output "
                             f"rows [{tile.output.r0}, {tile.output.r1}) of split layer "
                             f"{msg.layer}")
        if (a, b) == (tile.output.r0, tile.output.r1):
            return tile
        return self._step(msg.layer, msg.tile, a, b)[0]

    def _step(self, layer: int, part: int, a: int, b: int) -> tuple[Tile, TileModule]:
        key = (layer, part, a, b)
        found = self._steps.get(key)
        if found is None:
            whole = self._tiles[(layer, part)]
            block = self._blocks[layer]
            tile = tiles_for_bounds(block, (a, b), (whole.output.c0, whole.output.c1))[0]
            found = self._steps[key] = (tile, TileModule(self.graph, block, tile).eval())
            while len(self._steps) > MAX_MODULES:
                old, _ = self._steps.popitem(last=False)
                self._warm.discard(old)
        self._steps.move_to_end(key)
        return found

    def expected(self, msg: cpb.Task) -> dict[str, Spec]:
        """The tensors task ``msg`` must carry: its crop, or with resident rows the halo
        ``above`` and ``below`` the kept rows it names (only the non-empty ones)."""
        crop, _ = self.specs(msg.layer, msg.tile)
        tile = self.step_tile(msg)
        if (msg.resident or msg.keep or msg.back) and tile is None:
            raise GraphError(f"split layer {msg.layer} is not split by rows: it keeps no rows")
        self._back(msg)  # before any work: what it would return
        if tile is not None:
            crop = self._crop_spec(self._blocks[msg.layer], tile, crop[0])
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
        """The task's input: the crop it carries, or its kept rows with the halo around."""
        if not msg.resident:
            return values["crop"]
        band = self._bands.get(msg.frame, {}).get(msg.layer - 1)
        if band is None:
            raise GraphError(f"frame {msg.frame[:40]!r}: this worker kept no rows of split "
                             f"layer {msg.layer - 1}")
        a, b = msg.keep_r0 - band.first, msg.keep_r1 - band.first
        if a < 0 or b > band.map.shape[2] or not bool(band.have[a:b].all()):
            raise GraphError(f"kept rows [{msg.keep_r0}, {msg.keep_r1}) are not all among "
                             "the rows this worker kept")
        pieces = [values["above"]] if "above" in values else []
        tile = self.step_tile(msg)
        assert tile is not None
        pieces.append(band.map[:, :, a:b, tile.input.c0:tile.input.c1])
        if "below" in values:
            pieces.append(values["below"])
        return torch.cat(pieces, dim=2)

    def answer(self, msg: cpb.Task, out: torch.Tensor) -> torch.Tensor:
        """What the task returns of its output ``out``: all of it, or when it is kept for the
        frame's next split layer (``keep``) only the rows ``back`` names, stacked (none when
        no other part reads any)."""
        part = self._tiles.get((msg.layer, msg.tile))
        bands = self._bands.get(msg.frame)
        band = None
        if msg.keep and part is not None:
            if bands is None:
                bands = self._bands[msg.frame] = {}
            band = bands.get(msg.layer)
            if band is None:
                band = bands[msg.layer] = _Band(
                    part.output.r0, out.new_full((*out.shape[:2], part.output.height,
                                                  out.shape[3]), float("nan")),
                    torch.zeros(part.output.height, dtype=torch.bool))
            self._bands.move_to_end(msg.frame)
            while len(self._bands) > MAX_BANDS:
                self._bands.popitem(last=False)
        if bands is not None:
            # the layer before the one just computed is read by no later task
            for old in [k for k in bands if k < msg.layer - 1]:
                del bands[old]
            if not msg.resident and not msg.keep:  # the frame's run of resident layers ended
                self._bands.pop(msg.frame, None)
        if not msg.keep:
            return out
        step = self.step_tile(msg)
        assert step is not None and band is not None
        at = step.output.r0 - band.first
        band.map[:, :, at:at + out.shape[2]] = out
        band.have[at:at + out.shape[2]] = True
        return torch.cat([out[:, :, :0], *(
            out[:, :, a - step.output.r0:b - step.output.r0] for a, b in self._back(msg))],
            dim=2)

    def _back(self, msg: cpb.Task) -> list[tuple[int, int]]:
        """The row pairs ``msg.back`` asks for, checked against the task's output rows."""
        bounds = list(msg.back)
        if not bounds:
            return []
        if not msg.keep:
            raise GraphError("back: only a part whose rows are kept returns some of them")
        tile = self.step_tile(msg)
        assert tile is not None
        first, last = tile.output.r0, tile.output.r1
        if len(bounds) % 2 or len(bounds) > 2 * MAX_BACK:
            raise GraphError(f"back: expected up to {MAX_BACK} (first, end) row pairs, got "
                             f"{len(bounds)} numbers")
        pairs = list(zip(bounds[::2], bounds[1::2], strict=True))
        if any(not first <= a < b <= last for a, b in pairs):
            raise GraphError(f"back rows {pairs[:4]} are not inside the task's output rows "
                             f"[{first}, {last})")
        return pairs

    def warm(self, msg: cpb.Task, crop: torch.Tensor) -> float:
        """Run a step's fresh module once on ``crop``, the result thrown away, before the
        device's clock starts (as TileExecutor.warm: a new shape's first forward pays this
        host's one-off setup, which the dilation would multiply). Returns the ms it took, 0
        when the task is a whole part or its step ran before."""
        a, b = msg.out_r0, msg.out_r1
        part = self._tiles.get((msg.layer, msg.tile))
        key = (msg.layer, msg.tile, a, b)
        if part is None or not (a or b) or (a, b) == (part.output.r0, part.output.r1) \
                or key in self._warm:
            return 0.0
        start = time.perf_counter()
        self.run(msg.layer, msg.tile, crop, (a, b))
        self._warm.add(key)
        return (time.perf_counter() - start) * 1000.0

    def run(self, layer: int, part: int, crop: torch.Tensor,
            rows: tuple[int, int] | None = None) -> torch.Tensor:
        """Part ``part`` of split layer ``layer`` on ``crop``, or only its output ``rows`` (a
        step: ``crop`` is then the step's input rows)."""
        _, _, how = self._parts[(layer, part)]
        with torch.inference_mode():
            if isinstance(how, TileModule):
                tile = self._tiles[(layer, part)]
                if rows is not None and rows != (tile.output.r0, tile.output.r1):
                    how = self._step(layer, part, *rows)[1]
                return how(crop)[0]
            weight, bias, post = cast(tuple[torch.Tensor, torch.Tensor | None, list[nn.Module]],
                                      how)
            out = F.linear(crop, weight, bias)
            for module in post:
                out = module(out)
            return out
