"""Overlapping a run of resident layers' compute with its halo (layer-wise with rows kept on
the devices, :mod:`edgeweave.graph.resident`).

With resident rows every split layer still waits for the last one: the edge rows each device
returns cross the medium, through the gateway, to its neighbours, and only then does any
device compute its next part. Most of a part needs no halo, though: its interior rows read only
rows its own device kept. So every part after the first split of a run is cut into *steps*,
run in this order on its device: the interior (it waits for nothing), then the top and the
bottom edge (the rows that read halo, or that the neighbours read). While a device computes
its interior, the edges its neighbours computed last cross the medium; the per-layer barrier
becomes a dependency of one device's edges on its neighbours' previous edges (``Step.after``).
The first split of a run is one step per part (its whole input is sent), and the run's last
split returns every row (the gathered map), still cut into steps.

A step is plain geometry, recomputed from the split's grid lines on both sides of the wire: the
planner prices the steps as a task graph on the shared medium, the gateway issues them, and a
worker checks the rows it is asked to compute against its part.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from edgeweave.graph.blocks import FusedBlock, chain_block
from edgeweave.graph.capture import Graph
from edgeweave.graph.layerwise import LayerSplit, SplitRunner, unit_tiles
from edgeweave.graph.resident import Hop, hops, kept_and_halo, merge, rows_count
from edgeweave.graph.tile_exec import TileModule, stitch
from edgeweave.graph.tiles import Tile, axis_intervals, tiles_for_bounds

Rows = tuple[int, int]


@dataclass(frozen=True)
class Step:
    """One task of one device in a run of resident layers (module docstring).

    ``split`` indexes the run's split layers as given to :func:`run_steps`, ``part`` the
    split's parts; ``rows`` are the output rows it computes and ``tile`` their regions. Its
    input rows are ``keep`` (kept on its device by the split before; None when it keeps none,
    e.g. the run's first split) and ``halo`` (sent with the task, the whole input when
    ``keep`` is None). It returns ``back`` (absolute rows; every row when the split is
    gathered) and, when ``kept``, leaves its output on the device for the next split.
    ``after``: the steps (indices in the run) whose returned rows its halo reads."""

    split: int
    part: int
    device: int
    rows: Rows
    tile: Tile
    keep: Rows | None
    halo: tuple[Rows, ...]
    back: tuple[Rows, ...]
    kept: bool
    after: tuple[int, ...]
    fractions: dict[str, float]
    in_bytes: int  # raw bytes of its halo (or crop), as LayerPart.in_bytes
    out_bytes: int  # raw bytes of the rows it returns


@dataclass(frozen=True)
class Run:
    """Split layers ``first..last`` (inclusive), each after the first resident, as steps in
    the order the devices run them (a device runs its steps in list order)."""

    first: int
    last: int
    steps: tuple[Step, ...]


def run_bounds(splits: Sequence[LayerSplit]) -> list[tuple[int, int]]:
    """``(first, last)`` of every run of two or more split layers each reading the rows the
    one before left on the devices (``LayerSplit.resident``)."""
    out = []
    i = 0
    while i < len(splits):
        j = i
        while j + 1 < len(splits) and splits[j + 1].resident:
            j += 1
        if j > i:
            out.append((i, j))
        i = j + 1
    return out


def overlap_runs(graph: Graph, splits: Sequence[LayerSplit],
                 cut: Callable[[int, int], bool] | None = None) -> list[Run]:
    """Every run of ``splits`` (:func:`run_bounds`) cut into steps (:func:`run_steps`)."""
    every = hops(graph, splits)
    return [run_steps(graph, splits, first, last, every, cut)
            for first, last in run_bounds(splits)]


def run_steps(graph: Graph, splits: Sequence[LayerSplit], first: int, last: int,
              every: Sequence[Hop | None] | None = None,
              cut: Callable[[int, int], bool] | None = None) -> Run:
    """Split layers ``first..last`` cut into steps; ``every``: :func:`~edgeweave.graph.
    resident.hops` of ``splits`` when the caller has it. The split after ``last`` (if any)
    does not read ``last``'s rows where they are: ``last`` is gathered. ``cut(i, p)``: whether
    part ``p`` of split ``i`` is cut into interior and edges (default: every part after the
    first split); an uncut part is one step, which waits for its halo."""
    every = hops(graph, splits) if every is None else every
    steps: list[Step] = []
    returned: list[int] = []  # the steps of the split before that return rows
    for i in range(first, last + 1):
        split = splits[i]
        block = chain_block(graph, split.unit)
        hop_in = every[i] if i > first else None
        hop_out = every[i + 1] if i < last else None
        if i > first and hop_in is None:
            raise ValueError(f"split layer {split.unit[0]!r} does not read the rows of the "
                             "one before where they were left")
        mine = []
        for p, (part, tile) in enumerate(zip(split.parts, unit_tiles(graph, split),
                                             strict=True)):
            keep = None if hop_in is None else hop_in.keep[p]
            wanted = None if hop_out is None else hop_out.back[p]
            pieces = [(tile.output.r0, tile.output.r1)] if i == first or (
                cut is not None and not cut(i, p)) else _pieces(block, tile, keep, wanted)
            for rows in pieces:
                step = _step(graph, block, i, p, part.device, rows, tile, keep, wanted,
                             [steps[s] for s in returned], returned)
                mine.append(len(steps))
                steps.append(step)
        returned = [s for s in mine if steps[s].back]
    return Run(first, last, tuple(steps))


def _pieces(block: FusedBlock, tile: Tile, keep: Rows | None,
            wanted: Sequence[Rows] | None) -> list[Rows]:
    """A part's output rows as [interior, top edge, bottom edge] (the empty ones left out):
    edge rows read halo (input rows outside ``keep``) or are ``wanted`` by other parts; the
    whole part as one step when it has no interior, or its interior is not one run of rows."""
    o0, o1 = tile.output.r0, tile.output.r1
    edge = [False] * (o1 - o0)
    for r in range(o0, o1):
        i0, i1 = axis_intervals(block, 0, r, r + 1)[block.input]
        edge[r - o0] = keep is None or i0 < keep[0] or i1 > keep[1]
    for a, b in wanted or ():
        for r in range(max(a, o0), min(b, o1)):
            edge[r - o0] = True
    inner = [r for r in range(o0, o1) if not edge[r - o0]]
    if not inner or inner[-1] - inner[0] + 1 != len(inner):
        return [(o0, o1)]
    a, b = inner[0], inner[-1] + 1
    return [r for r in ((a, b), (o0, a), (b, o1)) if r[1] > r[0]]


def _step(graph: Graph, block: FusedBlock, i: int, p: int, device: int, rows: Rows,
          part_tile: Tile, keep: Rows | None, wanted: Sequence[Rows] | None,
          before: Sequence[Step], before_ids: Sequence[int]) -> Step:
    c0, c1 = part_tile.output.c0, part_tile.output.c1
    tile = tiles_for_bounds(block, rows, (c0, c1))[0]
    r = tile.input
    mine, halo = kept_and_halo((r.r0, r.r1), keep)
    if wanted is None:
        back: tuple[Rows, ...] = (rows,)
    else:
        back = merge([(max(a, rows[0]), min(b, rows[1])) for a, b in wanted
                       if min(b, rows[1]) > max(a, rows[0])])
    after = tuple(sid for sid, s in zip(before_ids, before, strict=True)
                  if any(min(b, hb) > max(a, ha) for a, b in s.back for ha, hb in halo))
    channels = block.input_shape[0]
    return Step(i, p, device, rows, tile, mine, halo, back, wanted is not None, after,
                {n.name: tile.computes[n.name].area / n.map_area for n in block.nodes},
                rows_count(halo) * channels * r.width * block.input_elem_bytes,
                block.output.bytes_of(rows_count(back) * (c1 - c0)))


def run_overlapped(graph: Graph, splits: Sequence[LayerSplit], x: torch.Tensor) -> Any:
    """Run the model in-process step by step as the devices would (:func:`overlap_runs`):
    a step's input is built from its device's own output rows and only the rows its ``after``
    steps returned, NaN elsewhere, so a dependency or halo row the geometry forgot poisons
    the output (the reference the runtime's overlapped gateway is checked against)."""
    with torch.no_grad():
        return _OverlapRunner(graph, splits).run(x)


class _OverlapRunner(SplitRunner):
    def __init__(self, graph: Graph, splits: Sequence[LayerSplit]) -> None:
        super().__init__(graph, splits)
        self.splits = list(splits)
        self.index = {s.unit[0]: k for k, s in enumerate(splits)}
        self.runs = {run.first: run for run in overlap_runs(graph, splits)}
        self.inside = {k for run in self.runs.values() for k in range(run.first + 1,
                                                                      run.last + 1)}

    def _parts(self, split: LayerSplit, source: torch.Tensor) -> torch.Tensor:
        k = self.index[split.unit[0]]
        if k in self.inside:  # computed with its run: the run's output passes through
            return source
        run = self.runs.get(k)
        if run is None:
            return super()._parts(split, source)
        graph = self.graph_
        # per split: each device's output rows (NaN where it computed none) and each step's
        # returned rows
        own: dict[tuple[int, int], torch.Tensor] = {}
        sent: dict[int, torch.Tensor] = {}
        shapes = {i: chain_block(graph, self.splits[i].unit).output.shape
                  for i in range(run.first, run.last + 1)}
        for sid, step in enumerate(run.steps):
            block = chain_block(graph, self.splits[step.split].unit)
            r = step.tile.input
            if step.split == run.first:
                crop = source[:, :, r.r0:r.r1, r.c0:r.c1]
            else:
                have = torch.full((source.shape[0], *shapes[step.split - 1]), float("nan"))
                for a in step.after:
                    for r0, r1 in run.steps[a].back:
                        have[:, :, r0:r1] = sent[a][:, :, r0:r1]
                if step.keep is not None:
                    k0, k1 = step.keep
                    band = own[(step.split - 1, step.device)]
                    have[:, :, k0:k1] = band[:, :, k0:k1]
                crop = have[:, :, r.r0:r.r1, r.c0:r.c1]
            out, _ = TileModule(graph, block, step.tile)(crop)
            key = (step.split, step.device)
            if key not in own:
                own[key] = torch.full((out.shape[0], *shapes[step.split]), float("nan"))
            c0, c1 = step.tile.output.c0, step.tile.output.c1
            own[key][:, :, step.rows[0]:step.rows[1], c0:c1] = out
            sent[sid] = own[key].clone()
        last = self.splits[run.last]
        tiles = unit_tiles(graph, last)
        outputs = {}
        for t, part in zip(tiles, last.parts, strict=True):
            band = own[(run.last, part.device)]
            outputs[t.index] = band[:, :, t.output.r0:t.output.r1, t.output.c0:t.output.c1]
        return stitch(chain_block(graph, last.unit), tiles, outputs)
