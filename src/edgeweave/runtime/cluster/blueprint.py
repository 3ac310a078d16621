"""What a cluster worker builds from a plan's partition, and how gateway and worker agree on it.

Nothing runnable crosses. The gateway sends the partition as plain data (a ``ClusterSpec``: the
fused depth, grid, data reuse and a digest of the tile regions; or, layer-wise, the split layers'
grid lines and which parts the worker computes) and the weights as a Deploy stream (a recipe
naming the model and its nodes, then raw weight slices: :mod:`edgeweave.runtime.recipe`). The
worker resolves the model in its own trusted registry, recomputes the tiles, refuses a plan whose
regions differ, and derives every weight's name, dtype and shape from its own module before a
byte arrives, so the upload is bounded by what it expects. Weights are named by the fx targets of
the block's modules (``features.0.weight``); a fully connected layer split by output neurons
sends each worker only its rows (``classifier.0.weight[0:2048]``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from edgeweave.codec.wire import dtype_name
from edgeweave.errors import GraphError
from edgeweave.graph.blocks import FusedBlock
from edgeweave.graph.capture import Graph
from edgeweave.graph.layerwise import LayerSplit, layer_units, unit_tiles
from edgeweave.graph.reuse import level1_tile, reuse_tiles
from edgeweave.graph.tiles import Tile, tile_grid
from edgeweave.runtime.proto import cluster_pb2 as cpb
from edgeweave.runtime.recipe import StagePackage, StageRecipe, WeightSpec, deploy_stream

if TYPE_CHECKING:  # the plan layer is the gateway's: a worker never imports it (~100 MB)
    from edgeweave.plan.partition import Partition

#: Tiles per side a worker builds: the planner searches up to 6x6; a peer's grid is also
#: bounded by the block's output map.
MAX_GRID = 16
#: Parts of one split layer, and split layers, a worker accepts.
MAX_PARTS = 64
MAX_LAYERS = 512
#: Consecutive fused blocks a worker builds (the planner offers up to 3).
MAX_BLOCKS = 8
METHODS = ("fused-tiles", "layer-wise")

Spec = tuple[str, tuple[int, ...]]


def fused_tiles(block: FusedBlock, grid: tuple[int, int], reuse: bool) -> list[Tile]:
    """The plan's tiles as the graph layer computes them (with data reuse: the checkerboard's
    levels, every level-0 tile finished first)."""
    rows, cols = grid
    if not (1 <= rows <= MAX_GRID and 1 <= cols <= MAX_GRID):
        raise GraphError(f"grid {rows}x{cols}: a worker builds at most {MAX_GRID}x{MAX_GRID}")
    return reuse_tiles(block, grid) if reuse else tile_grid(block, grid)


def regions_digest(tiles: Sequence[Tile]) -> str:
    """sha256 over every tile's regions (what it holds, computes, reuses and shares per layer),
    so a worker can check it computes exactly the tiles the gateway stitches."""
    doc = [[t.index, t.row, t.col, t.level, list(t.output), list(t.input),
            sorted((k, list(v)) for k, v in t.holds.items()),
            sorted((k, list(v)) for k, v in t.computes.items()),
            sorted((k, [[p.source, *p.region] for p in v]) for k, v in t.reused.items()),
            sorted((k, [list(r) for r in v]) for k, v in t.shares.items())]
           for t in sorted(tiles, key=lambda t: t.index)]
    return hashlib.sha256(json.dumps(doc, separators=(",", ":")).encode()).hexdigest()


def stages_digest(stages: Sequence[Sequence[Tile]]) -> str:
    """:func:`regions_digest` of one block's tiles; of several consecutive blocks, sha256 over
    each block's in order."""
    if len(stages) == 1:
        return regions_digest(stages[0])
    doc = json.dumps([regions_digest(tiles) for tiles in stages])
    return hashlib.sha256(doc.encode()).hexdigest()


def stage_grids(spec: cpb.ClusterSpec
                ) -> tuple[list[int], list[tuple[int, int]], list[bool]]:
    """A fused-tile spec's blocks: each one's end depth, grid and data reuse (one block: the
    spec's fused depth, grid and reuse). GraphError when a peer asks for too many."""
    if len(spec.blocks) > MAX_BLOCKS:
        raise GraphError(f"{len(spec.blocks)} fused blocks: a worker builds at most "
                         f"{MAX_BLOCKS}")
    if not spec.blocks:
        return [spec.fused_depth], [(spec.grid_rows, spec.grid_cols)], [spec.reuse]
    return ([b.depth for b in spec.blocks], [(b.grid_rows, b.grid_cols) for b in spec.blocks],
            [b.reuse for b in spec.blocks])


def reuse_sources(tiles: Sequence[Tile]) -> dict[int, tuple[int, ...]]:
    """Per level-1 tile, the level-0 tiles whose shared halo it reuses when all are done."""
    return {t.index: tuple(sorted({p.source for ps in t.reused.values() for p in ps}))
            for t in tiles if t.level == 1}


def tile_variant(block: FusedBlock, base: Sequence[Tile], tiles: Sequence[Tile], index: int,
                 done: Sequence[int]) -> Tile:
    """Tile ``index`` as dispatched: a level-1 tile reuses only the halo of the level-0 tiles
    in ``done`` (its neighbours that had finished) and computes the rest itself (DeepThings'
    fallback); other tiles are the plan's. GraphError when ``done`` names tiles it cannot
    reuse from (a peer's claim)."""
    if not 0 <= index < len(tiles):
        raise GraphError(f"tile {index}: the grid has tiles 0 to {len(tiles) - 1}")
    tile = tiles[index]
    sources = reuse_sources(tiles).get(index, ())
    wanted = tuple(sorted(set(done)))
    if len(wanted) != len(done) or not set(wanted) <= set(sources):
        raise GraphError(f"tile {index} reuses the halo of tiles {list(sources)} only; got "
                         f"{list(done)[:8]}")
    if tile.level != 1 or wanted == sources:
        return tile
    return level1_tile(block, base[index], {k: tiles[k].shares for k in wanted})


def piece_names(tile: Tile) -> list[tuple[str, str, int]]:
    """``(wire name, layer, k)`` of every reused piece, in the tile's reused order."""
    return [(f"{layer}/{k}", layer, k) for layer, pieces in tile.reused.items()
            for k in range(len(pieces))]


def share_names(tile: Tile) -> list[tuple[str, str, int]]:
    """``(wire name, layer, k)`` of every halo piece a level-0 tile shares."""
    return [(f"{layer}/{k}", layer, k) for layer, regions in tile.shares.items()
            for k in range(len(regions))]


def value_dtype(graph: Graph, name: str) -> str:
    """The wire dtype name of a value of the captured graph."""
    node = next(n for n in graph.module.graph.nodes if n.name == name)
    meta = node.meta.get("tensor_meta")
    return dtype_name(getattr(meta, "dtype", torch.float32), context=f"value {name!r}")


def block_recipe(model: str, input_shape: Sequence[int], blocks: Sequence[FusedBlock]
                 ) -> StageRecipe:
    """The recipe a fused-tile worker's weights are hashed with: every block's nodes, from
    the first block's input to the last block's output."""
    return StageRecipe(model, tuple(input_shape), tuple(n for b in blocks for n in b.names),
                       (blocks[0].input,), (blocks[-1].output.name,))


def module_weights(graph: Graph, names: Sequence[str]) -> list[tuple[WeightSpec, torch.Tensor]]:
    """Parameters and buffers of the modules the named nodes call, named by fx target, in name
    order (meta tensors on a worker: it lists what it expects before any byte arrives)."""
    fx_nodes = {n.name: n for n in graph.module.graph.nodes}
    state: dict[str, torch.Tensor] = {}
    for name in names:
        node = fx_nodes[name]
        if node.op != "call_module":
            continue
        for key, tensor in graph.module.get_submodule(str(node.target)).state_dict().items():
            state[f"{node.target}.{key}"] = tensor
    return [(WeightSpec(k, dtype_name(t.dtype, context=f"weight {k!r}"), tuple(t.shape)), t)
            for k, t in sorted(state.items())]


@dataclass(frozen=True)
class LayerSpec:
    """One split layer (MoDNN) as a worker receives it: the unit, its grid lines, its parts."""

    unit: tuple[str, ...]
    kind: str
    row_bounds: tuple[int, ...]
    col_bounds: tuple[int, ...]
    parts: tuple[int, ...]

    def split(self) -> LayerSplit:
        return LayerSplit(self.unit, self.kind, self.row_bounds, self.col_bounds, (), ())

    def to_proto(self) -> cpb.SplitLayer:
        return cpb.SplitLayer(unit=list(self.unit), kind=self.kind,
                              row_bounds=list(self.row_bounds),
                              col_bounds=list(self.col_bounds), parts=list(self.parts))

    @classmethod
    def from_proto(cls, msg: cpb.SplitLayer) -> LayerSpec:
        return cls(tuple(msg.unit), msg.kind, tuple(msg.row_bounds), tuple(msg.col_bounds),
                   tuple(msg.parts))


def neuron_interval(bounds: Sequence[int], part: int) -> tuple[int, int]:
    """The output neurons of part ``part``: the part-th non-empty interval of the bounds (a
    device whose share rounds to nothing has no part)."""
    spans = [(a, b) for a, b in itertools.pairwise(bounds) if b > a]
    return spans[part]


def check_layer(graph: Graph, spec: LayerSpec) -> LayerSpec:
    """A peer's split layer: a unit this model really has, grid lines that cover its output
    exactly, and parts that exist. GraphError names the first problem."""
    units = {u: kind for u, kind in _units(graph)}
    if spec.unit not in units or units[spec.unit] != spec.kind:
        raise GraphError(f"split layer {list(spec.unit)[:4]} ({spec.kind}) is not one of model "
                         f"{graph.name!r}'s splittable layers")
    last = graph.node(spec.unit[-1]).out_shape or ()
    sizes = (last[-1],) if spec.kind == "neurons" else tuple(last[2:4])
    bounds = (spec.row_bounds,) if spec.kind == "neurons" else (spec.row_bounds, spec.col_bounds)
    for axis, (lines, size) in enumerate(zip(bounds, sizes, strict=True)):
        if not (2 <= len(lines) <= MAX_PARTS + 1 and lines[0] == 0 and lines[-1] == size
                and all(b >= a for a, b in itertools.pairwise(lines))):
            raise GraphError(f"split layer {spec.unit[0]!r}: grid lines {list(lines)[:8]} along "
                             f"axis {axis} must rise from 0 to {size} in at most {MAX_PARTS} "
                             "parts")
    if spec.kind == "neurons" and spec.col_bounds:
        raise GraphError(f"split layer {spec.unit[0]!r}: a neuron split has no column lines")
    count = len(unit_tiles(graph, spec.split())) if spec.kind == "rows" else sum(
        1 for a, b in itertools.pairwise(spec.row_bounds) if b > a)
    if len(set(spec.parts)) != len(spec.parts) or any(not 0 <= p < count for p in spec.parts):
        raise GraphError(f"split layer {spec.unit[0]!r} has parts 0 to {count - 1}; got "
                         f"{list(spec.parts)[:8]}")
    return spec


def _units(graph: Graph) -> list[tuple[tuple[str, ...], str]]:
    fx_nodes = {n.name: n for n in graph.module.graph.nodes}
    out = []
    # a layer, or a residual block as one unit (the resident and overlap splits)
    for unit in dict.fromkeys([*layer_units(graph), *layer_units(graph, blocks=True)]):
        node = fx_nodes[unit[0]]
        linear = node.op == "call_module" and isinstance(
            graph.module.get_submodule(str(node.target)), torch.nn.Linear)
        out.append((unit, "neurons" if linear else "rows"))
    return out


def layer_weights(graph: Graph, layers: Sequence[LayerSpec]
                  ) -> list[tuple[WeightSpec, torch.Tensor]]:
    """The weights a layer-wise worker holds: the whole kernel of every convolution it computes
    rows of, and only its rows of every fully connected layer it computes neurons of."""
    out: dict[str, tuple[WeightSpec, torch.Tensor]] = {}
    fx_nodes = {n.name: n for n in graph.module.graph.nodes}
    for layer in layers:
        if not layer.parts:
            continue
        plain = layer.unit if layer.kind == "rows" else layer.unit[1:]
        out.update((spec.name, (spec, t)) for spec, t in module_weights(graph, plain))
        if layer.kind != "neurons":
            continue
        target = str(fx_nodes[layer.unit[0]].target)
        linear = graph.module.get_submodule(target)
        for part in layer.parts:
            a, b = neuron_interval(layer.row_bounds, part)
            for key in ("weight", "bias"):
                full = getattr(linear, key)
                if full is None:
                    continue
                name = f"{target}.{key}[{a}:{b}]"
                piece = full[a:b]
                out[name] = (WeightSpec(name, dtype_name(full.dtype), tuple(piece.shape)), piece)
    return [out[k] for k in sorted(out)]


def layer_recipe(model: str, input_shape: Sequence[int], layers: Sequence[LayerSpec]
                 ) -> StageRecipe:
    """The recipe a layer-wise worker's weights are hashed with: the nodes it computes."""
    nodes = tuple(n for layer in layers if layer.parts for n in layer.unit)
    return StageRecipe(model, tuple(input_shape), nodes, (), ())


def layer_specs(partition: Partition, device: str) -> list[LayerSpec]:
    """Every split layer of a layer-wise plan, with the parts ``device`` computes (a worker
    keeps the layer's index, so layers it has no part in are listed too)."""
    return [LayerSpec(tuple(la.unit), la.kind, tuple(la.row_bounds), tuple(la.col_bounds),
                      tuple(p for p, d in enumerate(la.devices) if d == device))
            for la in partition.layers]


def cluster_spec(partition: Partition, device: str, digest: str = "") -> cpb.ClusterSpec:
    """The plain data of ``partition`` a worker for ``device`` needs."""
    spec = cpb.ClusterSpec(method=partition.method, device=device)
    if partition.method == "fused-tiles":
        stages = partition.stages()
        assert partition.fused_depth is not None
        spec.fused_depth = partition.fused_depth
        spec.grid_rows, spec.grid_cols = stages[0].grid
        spec.reuse = partition.reuse
        spec.regions_digest = digest
        if len(stages) > 1:
            spec.blocks.extend(cpb.FusedStage(depth=s.depth, grid_rows=s.grid[0],
                                              grid_cols=s.grid[1], reuse=s.reuse)
                               for s in stages)
    else:
        spec.layers.extend(x.to_proto() for x in layer_specs(partition, device))
    return spec


def setup_stream(spec: cpb.ClusterSpec, package: StagePackage) -> Iterator[cpb.SetupRequest]:
    """A Setup call: the spec with the head of the weights' Deploy stream, then the slices."""
    first = True
    for msg in deploy_stream(package, f"{spec.method}:{spec.device}", 0):
        yield cpb.SetupRequest(spec=spec, weights=msg) if first else \
            cpb.SetupRequest(weights=msg)
        first = False

