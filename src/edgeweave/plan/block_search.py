"""DeeperThings' consecutive fused blocks (Stahl et al. 2021): where to cut the fusable prefix
into blocks, each block's grid, and its tiles' devices.

One deep fused block (vgg16 at depth 15) has tiles whose input is nearly the whole frame: the
redundant halo FLOPs eat the parallelism; a shallow one leaves most of the model serial on the
gateway. Several blocks with a sync point between them (the tiles' outputs gathered and
stitched at the gateway, the next block's tiles cut from the stitched map and sent out again)
bound the halo's growth, at the price of that gather and re-scatter on the medium.

A frame's blocks run one after another, so its cluster time is the sum of its blocks'
makespans: each block between two cuts (a pair of fused depths) is priced once, on its own, for
every grid up to ``largest`` a side with data reuse on and off (each block its own), its tiles
to devices by :func:`~edgeweave.plan.fused_search.assign` (exhaustive when few, else greedy),
and a dynamic program picks the 2..``max_blocks`` blocks with the smallest sum plus the rest of
the model after the last. The chosen blocks' assignments are then improved by moving single
tiles. The search is not exact (each block's own best makespan is not always the frame's best
and the assignments are greedy); the plan's search record says so.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edgeweave.graph.blocks import FusedBlock, cut_depths, fused_blocks
from edgeweave.graph.capture import Graph
from edgeweave.plan.cluster_cost import ClusterModel
from edgeweave.plan.fused_search import (
    FusedChoice,
    TileCache,
    allowed_devices,
    assign,
    grid_options,
    improve,
    memory_of,
    tiles_and_work,
)
from edgeweave.plan.medium import Schedule
from edgeweave.plan.rest import Rest

#: A pinned block: the fused depth it ends at, its grid and whether it reuses halo (data reuse).
BlockPin = tuple[int, tuple[int, int], bool]


@dataclass
class StagedChoice:
    """Consecutive fused blocks, priced for the whole frame."""

    stages: list[FusedChoice]
    rest: Rest
    schedule: Schedule  # the blocks' schedules one after another
    value: float
    memory: dict[str, int]

    @property
    def ends(self) -> list[int]:
        """The fused depth (from the model's input) each block ends at."""
        out, depth = [], 0
        for stage in self.stages:
            depth += stage.block.depth
            out.append(depth)
        return out


def combine(schedules: Sequence[Schedule]) -> Schedule:
    """Blocks run one after another (a sync point between them): their schedules end to end."""
    offset, medium = 0.0, 0.0
    done: list[float] = []
    start: list[float] = []
    busy: dict[str, float] = {}
    for s in schedules:
        done += [offset + d for d in s.done_ms]
        start += [offset + t for t in s.start_ms]
        for device, ms in s.device_busy_ms.items():
            busy[device] = busy.get(device, 0.0) + ms
        medium += s.medium_busy_ms
        offset += s.makespan_ms
    return Schedule(offset, tuple(done), tuple(start), medium, busy)


def _makespan(schedule: Schedule) -> float:
    return schedule.makespan_ms


def map_bytes(block: FusedBlock) -> int:
    """What the gateway holds around a block: its whole input and its stitched output."""
    return block.input_elem_bytes * math.prod(block.input_shape) + \
        block.output.bytes_of(block.output.map_area)


class BlockPricer:
    """Each block between two cuts priced once: its best grid and assignment by makespan."""

    def __init__(self, graph: Graph, model: ClusterModel, names: Sequence[str],
                 largest: int, max_assignments: int, cache: TileCache | None):
        self.graph, self.model, self.names = graph, model, list(names)
        self.largest, self.max_assignments, self.cache = largest, max_assignments, cache
        self.priced: dict[tuple[int, int, tuple[int, int] | None, bool | None],
                          FusedChoice | None] = {}
        self.configs = 0

    def block(self, start: int, end: int) -> FusedBlock:
        return fused_blocks(self.graph, [start, end])[1] if start else \
            fused_blocks(self.graph, [end])[0]

    def allowed(self, block: FusedBlock, work) -> list[list[str]]:
        return allowed_devices(self.model, block, work, map_bytes(block), self.names)

    def best(self, start: int, end: int, grid: tuple[int, int] | None = None,
             reuse: bool | None = None) -> FusedChoice | None:
        """The block from fused depth ``start`` to ``end``: the grid and data reuse
        (``grid``, ``reuse`` if pinned) and assignment with the smallest makespan (a tie: fewer
        tiles, then no reuse); None when no device can hold a tile."""
        key = (start, end, grid, reuse)
        if key in self.priced:
            return self.priced[key]
        block = self.block(start, end)
        found: FusedChoice | None = None
        grids = [grid] if grid is not None else grid_options(block, self.largest)
        for g, r in itertools.product(grids, [reuse] if reuse is not None else [False, True]):
            if r and g == (1, 1) and reuse is None:
                continue
            tiles, work = tiles_and_work(block, g, r, self.cache, frame_input=start == 0)
            allowed = self.allowed(block, work)
            self.configs += 1
            if any(not a for a in allowed):
                continue
            chosen, schedule, value, exhaustive = assign(self.model, work, allowed, _makespan,
                                                         self.max_assignments)
            if found is None or (round(value, 6), len(tiles), r) < (
                    round(found.value, 6), len(found.tiles), found.reuse):
                found = FusedChoice(block, g, r, tiles, work, chosen, schedule, value,
                                    exhaustive, memory_of(self.model, block, work, chosen,
                                                          map_bytes(block), self.names))
        self.priced[key] = found
        return found


def staged_choice(graph: Graph, model: ClusterModel, names: Sequence[str], objective_of,
                  rest_after: Callable[[list[str]], Rest | None], max_blocks: int = 3,
                  largest: int = 6, max_assignments: int = 16, cache: TileCache | None = None,
                  pins: Sequence[BlockPin] | None = None) -> tuple[StagedChoice | None, int]:
    """The best 2..``max_blocks`` consecutive fused blocks (module docstring), or exactly the
    ``pins`` (each block's end depth, grid and reuse); and how many block configurations were
    priced.
    ``objective_of(rest)`` scores a combined schedule for the objective. None: nothing fits
    (no device holds some tile, or the rest does not fit after the last block)."""
    pricer = BlockPricer(graph, model, names, largest, max_assignments, cache)
    if pins is not None:
        ends = [d for d, _, _ in pins]
        fused_blocks(graph, ends)  # GraphError names bad or unordered depths
        priced = [pricer.best(a, b, g, r) for a, b, (_, g, r) in
                  zip([0, *ends[:-1]], ends, pins, strict=True)]
        chosen = None if any(c is None for c in priced) else \
            _finish(pricer, [c for c in priced if c is not None], rest_after, objective_of)
        return chosen, pricer.configs
    depths = sorted(cut_depths(graph))
    # best[k][end]: (sum of makespans, blocks) of k blocks covering the prefix to ``end``
    best: list[dict[int, tuple[float, list[FusedChoice]]]] = [{}]
    first = {}
    for end in depths:
        c = pricer.best(0, end)
        if c is not None:
            first[end] = (c.value, [c])
    best.append(first)
    found: StagedChoice | None = None
    for _ in range(2, max_blocks + 1):
        layer: dict[int, tuple[float, list[FusedChoice]]] = {}
        for end in depths:
            for start, (total, path) in best[-1].items():
                if start >= end:
                    continue
                c = pricer.best(start, end)
                if c is not None and (end not in layer or total + c.value < layer[end][0]):
                    layer[end] = (total + c.value, [*path, c])
        best.append(layer)
        for _total, path in layer.values():
            staged = _finish(pricer, path, rest_after, objective_of, improve_moves=False)
            if staged is not None and (found is None or staged.value < found.value):
                found = staged
    if found is not None:
        found = _finish(pricer, found.stages, rest_after, objective_of)
    return found, pricer.configs


def _finish(pricer: BlockPricer, path: list[FusedChoice], rest_after, objective_of,
            improve_moves: bool = True) -> StagedChoice | None:
    """The blocks of ``path`` priced for the whole frame (their assignments improved by
    single-tile moves first when ``improve_moves``); None when the rest does not fit."""
    names = [n for c in path for n in c.block.names]
    rest = rest_after(names)
    if rest is None:
        return None
    if improve_moves:
        path = [_improved(pricer, c) for c in path]
    memory = dict.fromkeys(pricer.names, 0)
    for c in path:
        for device, nbytes in c.memory.items():
            memory[device] = max(memory[device], nbytes)
    memory[pricer.model.gateway] += rest.device_param_bytes
    if memory[pricer.model.gateway] > pricer.model.devices[pricer.model.gateway].limit_bytes:
        return None
    schedule = combine([c.schedule for c in path])
    return StagedChoice(path, rest, schedule, objective_of(rest)(schedule), memory)


def _improved(pricer: BlockPricer, choice: FusedChoice) -> FusedChoice:
    if choice.exhaustive:
        return choice
    copy = FusedChoice(choice.block, choice.grid, choice.reuse, choice.tiles, choice.work,
                       list(choice.assignment), choice.schedule, choice.value,
                       choice.exhaustive, dict(choice.memory))
    improve(pricer.model, copy, pricer.allowed(choice.block, choice.work), _makespan)
    copy.memory = memory_of(pricer.model, copy.block, copy.work, copy.assignment,
                            map_bytes(copy.block), pricer.names)
    return copy
