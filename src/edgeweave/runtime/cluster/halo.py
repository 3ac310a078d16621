"""The gateway's side of resident rows (layer-wise, :mod:`edgeweave.graph.resident`).

Between two split layers whose rows stay on the devices, the gateway holds only part of the
map: the edge rows each device returned for its neighbours, and the whole output of every part
it computed itself (its own, and any a lost device left to it). :class:`Rows` is that map with
a mark per row, so the halo forwarded to a device is sliced from it, and a lost part is
recomputed here only from rows the gateway really holds; a part whose input rows are not all
here (its device kept them and died) makes the gateway recompute the run of resident layers
from its start (:func:`recompute`), which it scattered itself.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from edgeweave.errors import EdgeWeaveError
from edgeweave.graph import Graph
from edgeweave.graph.blocks import chain_block
from edgeweave.graph.layerwise import LayerPart, LayerSplit, unit_tiles
from edgeweave.graph.regions import Region
from edgeweave.graph.resident import Hop, hops
from edgeweave.graph.tile_exec import stitch
from edgeweave.plan.partition import LayerAssignment, Partition
from edgeweave.runtime import dilation, tensors
from edgeweave.runtime.cluster.blueprint import LayerSpec, Spec
from edgeweave.runtime.cluster.layer_exec import LayerExecutor
from edgeweave.runtime.proto import cluster_pb2 as cpb


@dataclass
class Rows:
    """A split layer's output as the gateway holds it: ``map`` full size, the rows ``have``
    marks filled (NaN elsewhere, so a row forwarded by mistake shows)."""

    map: torch.Tensor
    have: torch.Tensor

    @classmethod
    def empty(cls, like: torch.Tensor, shape: Sequence[int]) -> Rows:
        return cls(like.new_full((like.shape[0], *shape), float("nan")),
                   torch.zeros(shape[1], dtype=torch.bool))

    def put(self, first: int, rows: torch.Tensor) -> None:
        self.map[:, :, first:first + rows.shape[2]] = rows
        self.have[first:first + rows.shape[2]] = True

    def holds(self, r0: int, r1: int) -> bool:
        return bool(self.have[r0:r1].all())

    def rows(self, r0: int, r1: int) -> torch.Tensor:
        return self.map[:, :, r0:r1]


def plan_hops(graph: Graph, part: Partition) -> list[Hop | None]:
    """Each split layer's :class:`~edgeweave.graph.resident.Hop` where the plan keeps its
    input on the devices (``LayerAssignment.resident``), else None; an error if the plan keeps
    one the geometry cannot (its input is read elsewhere, or split in columns)."""
    ids = {name: k for k, name in enumerate(part.devices)}
    splits = [placed(graph, la, ids) for la in part.layers]
    out = []
    for la, hop in zip(part.layers, hops(graph, splits), strict=True):
        if la.resident and hop is None:
            raise EdgeWeaveError(f"the plan keeps split layer {la.unit[0]!r}'s input on the "
                                 "devices, but that input is not the previous split layer's "
                                 "rows alone; plan it again")
        out.append(hop if la.resident else None)
    return out


def placed(graph: Graph, la: LayerAssignment, ids: dict[str, int]) -> LayerSplit:
    """A plan's split layer with each part's device and output rows (what hops reads)."""
    split = LayerSplit(tuple(la.unit), la.kind, tuple(la.row_bounds), tuple(la.col_bounds),
                       (), ())
    if la.kind == "rows":
        rows = [(t.output.r0, t.output.r1) for t in unit_tiles(graph, split)]
    else:
        rows = [(0, 0)] * len(la.devices)
    parts = tuple(LayerPart(ids[d], r, None, {}, 0.0, 0, 0)
                  for d, r in zip(la.devices, rows, strict=True))
    return LayerSplit(split.unit, split.kind, split.row_bounds, split.col_bounds,
                      tuple(p.device for p in parts), parts)


def flat(pairs: Sequence[tuple[int, int]]) -> list[int]:
    """Row pairs as ``Task.back`` carries them."""
    return [x for pair in pairs for x in pair]


def recompute(graph: Graph, local: LayerExecutor, specs: Sequence[LayerSpec], first: int,
              last: int, x: torch.Tensor) -> torch.Tensor:
    """Split layers ``first..last`` computed here, every part, from ``first``'s input ``x``:
    the whole output of ``last`` (a device that kept rows of the run died)."""
    for i in range(first, last + 1):
        block = chain_block(graph, specs[i].unit)
        tiles = unit_tiles(graph, specs[i].split())
        x = stitch(block, tiles, {t.index: local.run(i, p, x[
            :, :, t.input.r0:t.input.r1, t.input.c0:t.input.c1]) for p, t in enumerate(tiles)})
    return x


def local_input(source: torch.Tensor | Rows, tiles: list, p: int) -> torch.Tensor | None:
    """Part ``p``'s input: its rows (and halo) of a split convolution's input, or the whole
    vector of a fully connected layer split by neurons (no tiles); None when the gateway
    does not hold all of its rows (a device kept them)."""
    if not tiles:
        assert isinstance(source, torch.Tensor)
        return source
    return region_input(source, tiles[p].input)


def region_input(source: torch.Tensor | Rows, r: Region) -> torch.Tensor | None:
    """The input region ``r`` of a part (or a step of it), None when the gateway does not
    hold all of its rows."""
    if isinstance(source, Rows):
        return source.rows(r.r0, r.r1)[:, :, :, r.c0:r.c1] if source.holds(r.r0, r.r1) else None
    return source[:, :, r.r0:r.r1, r.c0:r.c1]


def send_values(source: torch.Tensor | Rows, tiles: list, p: int, hop: Hop | None,
                msg: cpb.Task) -> dict[str, torch.Tensor] | None:
    """What part ``p``'s task carries (:func:`task_values`; a fully connected layer's part:
    the whole vector)."""
    if not tiles:
        assert isinstance(source, torch.Tensor)
        return {"crop": source}
    return task_values(source, tiles[p].input, None if hop is None else hop.keep[p], msg)


def task_values(source: torch.Tensor | Rows | None, r: Region, keep: tuple[int, int] | None,
                msg: cpb.Task) -> dict[str, torch.Tensor] | None:
    """What a task reading input region ``r`` carries: its crop, or (``keep``: its device
    kept those rows of the input) the halo above and below them, marking ``msg`` resident.
    None when the gateway lacks some of those rows (``source`` None: it holds none yet, which
    a task with nothing but kept rows does not need)."""
    if keep is None:
        crop = None if source is None else region_input(source, r)
        return None if crop is None else {"crop": crop}
    assert not isinstance(source, torch.Tensor)
    msg.resident, msg.keep_r0, msg.keep_r1 = True, keep[0], keep[1]
    out = {}
    for name, (a, b) in (("above", (r.r0, keep[0])), ("below", (keep[1], r.r1))):
        if b > a:
            if source is None or not source.holds(a, b):
                return None
            out[name] = source.rows(a, b)[:, :, :, r.c0:r.c1]
    return out


def pack(msg: cpb.Task, values: dict[str, torch.Tensor], codec: str, factor: float = 1.0,
         spin: bool = False) -> tuple[int, float]:
    """Encode a layer-wise task's tensors into ``msg``: its crop, or (resident) the halo
    pieces; returns their payload bytes and the ms encoding took on the gateway's device
    (``factor``: its dilation, as for its compute)."""
    start = time.perf_counter()
    mark = dilation.start()
    encoded = tensors.encode(values, list(values), codec)
    if msg.resident:
        msg.pieces.extend(encoded)
    else:
        msg.crop.CopyFrom(encoded[0])
    dilation.finish(mark, factor, spin=spin)
    return sum(len(m.payload) for m in encoded), (time.perf_counter() - start) * 1000.0


def decoded(result: cpb.TaskResult, spec: Spec, factor: float = 1.0,
            spin: bool = False) -> torch.Tensor:
    """A layer-wise result's output, checked against ``spec`` and decoded on the gateway's
    device (``factor``: its dilation; the decoding is its CPU's work, as its compute is)."""
    mark = dilation.start()
    out = tensors.decode([result.output], {"output": spec}.get, 0)["output"]
    dilation.finish(mark, factor, spin=spin)
    return out
