"""Layer-wise partition (MoDNN, Mao et al. 2017): every layer's work split across K devices,
with a scatter and a gather per layer.

The device holding the frame (the group owner) runs the model layer by layer; at each
convolution or pooling layer it sends every worker the input rows its output rows need (halo
included) and gathers the rows back; at each fully connected layer it sends every worker the
input vector and gathers its slice of output neurons. MoDNN's "biased one-dimensional
partition" sizes each worker's rows by its measured speed, so a slow device gets fewer rows;
the 2-D grid split it is compared with cuts both axes and pays halo on both. Elementwise layers
that only post-process one split layer (batch norm, activation) run on the same rows before the
gather. A split is plain data: the unit's layer names and its grid lines, from which the
regions are recomputed (:func:`unit_tiles`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from edgeweave.errors import GraphError
from edgeweave.graph.blocks import (
    ELEMENTWISE_MODULES,
    NotFusable,
    chain_block,
    describe_node,
    single_value_cuts,
)
from edgeweave.graph.capture import Graph
from edgeweave.graph.regions import even_bounds, proportional_bounds
from edgeweave.graph.tile_exec import TileModule, stitch
from edgeweave.graph.tiles import Tile, tile_flops, tiles_for_bounds

#: Pooling layers a convolution's unit takes along under the resident and overlap splits.
POOLING_MODULES = (nn.MaxPool2d, nn.AvgPool2d)

SCHEMES = ("biased", "even", "grid", "resident", "overlap")


@dataclass(frozen=True)
class LayerPart:
    """One device's share of one split layer: what it computes, receives and sends."""

    device: int
    rows: tuple[int, int]
    cols: tuple[int, int] | None
    fractions: dict[str, float]
    flops: float
    in_bytes: int
    out_bytes: int
    # what crosses the medium when it is not the whole input and output (resident rows,
    # graph.resident: the halo it receives, the rows of its band others read)
    medium_in: int | None = None
    medium_out: int | None = None

    @property
    def wire_in(self) -> int:
        return self.in_bytes if self.medium_in is None else self.medium_in

    @property
    def wire_out(self) -> int:
        return self.out_bytes if self.medium_out is None else self.medium_out


@dataclass(frozen=True)
class LayerSplit:
    """A split layer (``unit[0]``, with the elementwise layers ``unit[1:]`` run on its rows):
    ``kind`` is ``"rows"`` for convolutions and pooling, ``"neurons"`` for fully connected."""

    unit: tuple[str, ...]
    kind: str
    row_bounds: tuple[int, ...]
    col_bounds: tuple[int, ...]
    devices: tuple[int, ...]
    parts: tuple[LayerPart, ...]
    resident: bool = False  # its input stays on the devices that computed it (graph.resident)

    @property
    def scatter_bytes(self) -> int:
        return sum(p.wire_in for p in self.parts)

    @property
    def gather_bytes(self) -> int:
        return sum(p.wire_out for p in self.parts)


def layer_units(graph: Graph, blocks: bool = False) -> list[tuple[str, ...]]:
    """The splittable layers in order, each with the elementwise layers that only post-process
    it; everything else (flatten, residual adds, adaptive pooling) runs where the frame is.
    ``blocks``: a residual block (the layers between two places one tensor crosses, fed by
    that tensor alone, with an add or a concatenation of two branches) is one unit instead: a
    device computes its rows of the block's output, both branches, from its rows of the
    block's input and their halo, so the add never needs the gathered map (residual_blocks;
    the resident and overlap splits: MoDNN scatters and gathers every layer), and a
    convolution's unit takes along the pooling layer that alone reads it (_with_pooling)."""
    fx_nodes = {n.name: n for n in graph.module.graph.nodes}
    blocks_at = residual_blocks(graph) if blocks else {}
    units: list[tuple[str, ...]] = []
    taken: set[str] = set()
    for info in graph.nodes:
        if info.name in blocks_at and info.name not in taken:
            units.append(blocks_at[info.name])
            taken.update(blocks_at[info.name])
            continue
        if info.name in taken or _unit_kind(graph, info.name, fx_nodes) is None:
            continue
        unit = _with_followers(graph, [info.name], fx_nodes)
        if blocks:
            unit = _with_pooling(graph, unit, fx_nodes)
        taken.update(unit)
        units.append(tuple(unit))
    return units


def _with_pooling(graph: Graph, unit: list[str], fx_nodes: dict[str, fx.Node]) -> list[str]:
    """A convolution's unit with the pooling layer (and its followers) that alone reads it,
    for the splits that keep rows on the devices: a device pools the rows it computed (their
    halo grown by the pooling window) in the same task. As a unit of its own the pooling
    layer cost a whole task on every device, its call, codec and round trip on the medium,
    for almost no compute (vgg16: 5 of 21 tasks a frame)."""
    if _unit_kind(graph, unit[0], fx_nodes) != "rows" or unit[-1] in graph.outputs:
        return unit
    consumers = graph.consumers(unit[-1])
    if len(consumers) != 1:
        return unit
    pool = graph.node(consumers[0])
    node = fx_nodes[pool.name]
    if pool.inputs != (unit[-1],) or node.op != "call_module" or not isinstance(
            graph.module.get_submodule(str(node.target)), POOLING_MODULES):
        return unit
    merged = _with_followers(graph, [*unit, pool.name], fx_nodes)
    try:
        chain_block(graph, merged)
    except GraphError:
        return unit
    return merged


def residual_blocks(graph: Graph) -> dict[str, tuple[str, ...]]:
    """Residual blocks as layer-wise units, by their first layer: the layers after one place
    a single tensor crosses up to the next (blocks.single_value_cuts), when they start with a
    convolution or pooling layer, join two branches, and form a block fed by that one tensor
    that tiles can split (blocks.chain_block)."""
    fx_nodes = {n.name: n for n in graph.module.graph.nodes}
    order = [info.name for info in graph.nodes]
    where = {name: k for k, name in enumerate(order)}
    out: dict[str, tuple[str, ...]] = {}
    for a, b in itertools.pairwise(single_value_cuts(graph)):
        names = tuple(order[where[a] + 1:where[b] + 1])
        if len(names) < 2 or not any(len(graph.node(n).inputs) > 1 for n in names):
            continue
        if _unit_kind(graph, names[0], fx_nodes) != "rows" or graph.node(names[0]).inputs \
                != (a,):
            continue
        # the activation after the add runs on the same rows
        unit = _with_followers(graph, list(names), fx_nodes)
        try:
            chain_block(graph, unit)
        except GraphError:
            continue
        out[unit[0]] = tuple(unit)
    return out


def _with_followers(graph: Graph, unit: list[str], fx_nodes: dict[str, fx.Node]) -> list[str]:
    """``unit`` extended with the elementwise layers that only post-process its last one."""
    while True:
        consumers = graph.consumers(unit[-1])
        if len(consumers) != 1 or unit[-1] in graph.outputs:
            return unit
        follower = graph.node(consumers[0])
        if follower.inputs != (unit[-1],) or not _post_processes(graph, follower.name,
                                                                 fx_nodes, unit):
            return unit
        unit.append(follower.name)


def _unit_kind(graph: Graph, name: str, fx_nodes: dict[str, fx.Node]) -> str | None:
    node = fx_nodes[name]
    if node.op != "call_module":
        return None
    module = graph.module.get_submodule(str(node.target))
    if isinstance(module, nn.Linear):
        return "neurons"
    info = graph.node(name)
    if len(info.inputs) != 1:
        return None
    try:
        block_node = describe_node(graph, info, node, {info.inputs[0]})
    except NotFusable:
        return None
    return "rows" if block_node.window is not None else None


def _post_processes(graph: Graph, name: str, fx_nodes: dict[str, fx.Node],
                    unit: list[str]) -> bool:
    node = fx_nodes[name]
    if _unit_kind(graph, unit[0], fx_nodes) == "neurons":
        if node.op != "call_module":
            return False
        module = graph.module.get_submodule(str(node.target))
        return isinstance(module, ELEMENTWISE_MODULES) and not isinstance(module, nn.BatchNorm2d)
    try:
        block_node = describe_node(graph, graph.node(name), node, set(unit))
    except NotFusable:
        return False
    return block_node.window is None


def grid_shape(k: int) -> tuple[int, int]:
    """The most nearly square rows x columns grid of ``k`` parts (MeDNN's 2-D split); a prime
    ``k`` has only the one-dimensional one."""
    rows = max(d for d in range(1, math.isqrt(k) + 1) if k % d == 0)
    return k // rows, rows


def layerwise_splits(graph: Graph, speeds: Sequence[float], scheme: str = "biased",
                     units: Sequence[tuple[str, ...]] | None = None,
                     shares: Callable[[tuple[str, ...]], Sequence[float]] | None = None
                     ) -> list[LayerSplit]:
    """Every unit of ``graph`` (or the given ``units``) split across ``len(speeds)`` devices.

    ``biased`` sizes each device's rows or neurons by its speed (MoDNN); ``even`` splits
    equally; ``grid`` splits convolutions on a 2-D grid (and fully connected layers evenly);
    ``resident`` is ``biased`` with each device keeping its rows between split layers
    (:mod:`edgeweave.graph.resident`); ``overlap`` is the same splits, run as steps that
    compute a part's interior while its halo crosses (:mod:`edgeweave.graph.overlap`).
    ``shares(unit)``: each device's weight for that unit instead of its speed, for
    ``resident`` and ``overlap`` (the planner balances each layer's time, its fixed call cost
    included: :func:`edgeweave.plan.layerwise_search.balanced`)."""
    if scheme not in SCHEMES:
        raise GraphError(f"layer-wise scheme {scheme!r}: expected one of {', '.join(SCHEMES)}")
    if not speeds or any(s < 0 for s in speeds) or sum(speeds) <= 0:
        raise GraphError(f"device speeds {list(speeds)}: expected non-negative numbers with a "
                         "positive sum")
    out = []
    if units is None:
        units = layer_units(graph, blocks=scheme in ("resident", "overlap"))
    for unit in units:
        fx_node = next(n for n in graph.module.graph.nodes if n.name == unit[0])
        kind = _unit_kind(graph, unit[0], {unit[0]: fx_node})
        ours = scheme in ("resident", "overlap")
        out.append(_split(graph, unit, kind or "rows",
                          shares(unit) if ours and shares is not None else speeds,
                          "biased" if ours else scheme))
    if scheme in ("resident", "overlap"):
        from edgeweave.graph.resident import resident_splits  # it builds on this module

        return resident_splits(graph, out)
    return out


def _split(graph: Graph, unit: tuple[str, ...], kind: str, speeds: Sequence[float],
           scheme: str) -> LayerSplit:
    k = len(speeds)
    weights = speeds if scheme == "biased" else [1.0] * k
    if kind == "neurons":
        info = graph.node(unit[0])
        n_out = (info.out_shape or (1,))[-1]
        bounds = proportional_bounds(n_out, weights)
        parts = []
        for d in range(k):
            a, b = bounds[d], bounds[d + 1]
            if b > a:
                frac = (b - a) / n_out
                parts.append(LayerPart(d, (a, b), None, {u: frac for u in unit},
                                       sum(graph.node(u).flops for u in unit) * frac,
                                       info.in_bytes, graph.node(unit[-1]).out_bytes * (b - a)
                                       // n_out))
        return LayerSplit(unit, kind, tuple(bounds), (), tuple(p.device for p in parts),
                          tuple(parts))
    block = chain_block(graph, unit)
    _, height, width = block.output.shape
    if scheme == "grid":
        rows, cols = grid_shape(k)
        row_bounds, col_bounds = even_bounds(height, rows), even_bounds(width, cols)
    else:
        row_bounds, col_bounds = proportional_bounds(height, weights), [0, width]
    return row_split(graph, unit, row_bounds, col_bounds)


def row_split(graph: Graph, unit: tuple[str, ...], row_bounds: Sequence[int],
              col_bounds: Sequence[int]) -> LayerSplit:
    """A convolution or pooling unit cut on these grid lines, part ``d`` the ``d``-th cell
    in row-major order."""
    block = chain_block(graph, unit)
    # a device whose share rounds to nothing (or a grid larger than the map) gets no part
    pairs = [(d, t) for d, t in enumerate(tiles_for_bounds(block, row_bounds, col_bounds))
             if not t.output.empty]
    parts = []
    for device, tile in pairs:
        in_bytes = tile.input.area * block.input_shape[0] * block.input_elem_bytes
        parts.append(LayerPart(
            device, (tile.output.r0, tile.output.r1), (tile.output.c0, tile.output.c1),
            {n.name: tile.computes[n.name].area / n.map_area for n in block.nodes},
            tile_flops(block, tile.computes), in_bytes,
            block.output.bytes_of(tile.output.area)))
    return LayerSplit(unit, "rows", tuple(row_bounds), tuple(col_bounds),
                      tuple(p.device for p in parts), tuple(parts))


def unit_tiles(graph: Graph, split: LayerSplit) -> list[Tile]:
    """The tiles of a row or grid split, recomputed from its grid lines."""
    block = chain_block(graph, split.unit)
    tiles = tiles_for_bounds(block, split.row_bounds, split.col_bounds)
    return [t for t in tiles if not t.output.empty]


def run_layerwise(graph: Graph, splits: Sequence[LayerSplit], x: torch.Tensor) -> Any:
    """Run the model in-process with every split layer computed part by part and gathered:
    the reference a distributed layer-wise runtime must agree with."""
    runner = SplitRunner(graph, splits)
    with torch.no_grad():
        return runner.run(x)


class SplitRunner(fx.Interpreter):
    """Runs the model with every split layer computed part by part (:meth:`_parts`)."""

    def __init__(self, graph: Graph, splits: Sequence[LayerSplit]) -> None:
        super().__init__(graph.module)
        self.graph_ = graph
        self.first = {s.unit[0]: s for s in splits}
        # a unit's later layers are computed with it: each takes the unit's value, from the
        # layer before it in the unit (alive until then: a residual block's layers are not a
        # chain, but the one before is always read later or by it)
        self.inner = {name: before for s in splits
                      for before, name in itertools.pairwise(s.unit)}
        self.nodes = {node.name: node for node in graph.module.graph.nodes}

    def run_node(self, n: fx.Node) -> Any:
        split = self.first.get(n.name)
        if split is not None:
            source = self.env[next(iter(n.all_input_nodes))]
            return self._parts(split, source)
        if n.name in self.inner:  # computed with its unit: the unit's value passes through
            return self.env[self.nodes[self.inner[n.name]]]
        return super().run_node(n)

    def _parts(self, split: LayerSplit, source: torch.Tensor) -> torch.Tensor:
        graph = self.graph_
        if split.kind == "neurons":
            linear: Any = graph.module.get_submodule(str(self.nodes[split.unit[0]].target))
            pieces = []
            for part in split.parts:
                a, b = part.rows
                bias = None if linear.bias is None else linear.bias[a:b]
                piece = F.linear(source, linear.weight[a:b], bias)
                for name in split.unit[1:]:
                    piece = graph.module.get_submodule(str(self.nodes[name].target))(piece)
                pieces.append(piece)
            return torch.cat(pieces, dim=-1)
        block = chain_block(graph, split.unit)
        tiles = unit_tiles(graph, split)
        outputs = {}
        for tile in tiles:
            crop = source[:, :, tile.input.r0:tile.input.r1, tile.input.c0:tile.input.c1]
            outputs[tile.index], _ = TileModule(graph, block, tile)(crop)
        return stitch(block, tiles, outputs)
