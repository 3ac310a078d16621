"""DeeperThings' consecutive fused blocks (Stahl et al. 2021): where to cut the fusable prefix
into blocks, each block's grid, and its tiles' devices.

One deep fused block (vgg16 at depth 15) has tiles whose input is nearly the whole frame: the
redundant halo FLOPs eat the parallelism; a shallow one leaves most of the model serial on the
gateway. Several blocks with a sync point between them (the tiles' outputs gathered and
stitched at the gateway, the next block's tiles cut from the stitched map and sent out again)
bound the halo's growth, at the price of that gather and re-scatter on the medium.

A frame's blocks run one after another. Each block between two cuts (a pair of fused depths)
is priced once, on its own, for every grid up to ``largest`` a side with data reuse on and off
(each block its own), its tiles to devices by :func:`~edgeweave.plan.fused_search.assign`
(exhaustive when few, else greedy), and a dynamic program picks 2..``max_blocks`` blocks:

* latency: a frame's cluster time is the sum of its blocks' makespans, so each block is priced
  by its makespan and the program keeps, for every k blocks ending at a depth, the path with the
  smallest sum (exact for the blocks' own choices);
* throughput: with frames in flight the blocks of different frames overlap, and frames/s is
  limited by the busiest resource over the whole frame: a device (the gateway with its share of
  the rest of the model), the shared medium, or a later stage of the rest
  (:func:`~edgeweave.plan.fused_candidates.score_of`, the figure ``throughput_fps`` is made
  of). Each block is priced by its own busiest resource, and the program keeps for every k
  blocks ending at a depth the few paths (:data:`THROUGHPUT_BEAM`) whose resources' summed busy
  times have the smallest maximum; not the sum of makespans, which would let a block that is
  fast end to end but loads one device (or the medium) the most win.

The chosen blocks' assignments are then improved by moving single tiles (for throughput, each
move judged on the whole frame's bottleneck). The search is not exact (each block's own best is
not always the frame's best and the assignments are greedy); the plan's search record says so.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

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
    later_tiles_and_work,
    memory_of,
    tiles_and_work,
)
from edgeweave.plan.medium import Schedule
from edgeweave.plan.rest import Rest

T = TypeVar("T")

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


#: Paths the throughput program keeps for every k blocks ending at one depth: the maximum of
#: summed busy times is not additive, so the best of k blocks need not extend the best of k-1.
THROUGHPUT_BEAM = 4


def _makespan(schedule: Schedule) -> float:
    return schedule.makespan_ms


def busiest_ms(schedule: Schedule) -> float:
    """The busiest resource of a schedule: a device's compute or the medium (what limits
    frames/s with frames in flight, before the rest of the model is added)."""
    return max(schedule.medium_busy_ms, max(schedule.device_busy_ms.values(), default=0.0))


def map_bytes(block: FusedBlock) -> int:
    """What the gateway holds around a block: its whole input and its stitched output."""
    return block.input_elem_bytes * math.prod(block.input_shape) + \
        block.output.bytes_of(block.output.map_area)


class BlockPricer:
    """Each block between two cuts priced once: its best grid and assignment by makespan
    (latency) or by its busiest resource (throughput)."""

    def __init__(self, graph: Graph, model: ClusterModel, names: Sequence[str],
                 largest: int, max_assignments: int, cache: TileCache | None,
                 objective: str = "latency"):
        self.graph, self.model, self.names = graph, model, list(names)
        self.objective = objective
        self.score = _makespan if objective == "latency" else busiest_ms
        self.largest, self.max_assignments = largest, max_assignments
        self.cache: TileCache = {} if cache is None else cache
        self.blocks: dict[tuple[int, int], FusedBlock] = {}
        self.priced: dict[tuple[int, int, tuple[int, int] | None, bool | None],
                          list[FusedChoice]] = {}
        self.configs = 0

    def block(self, start: int, end: int) -> FusedBlock:
        if (start, end) not in self.blocks:
            self.blocks[start, end] = fused_blocks(self.graph, [start, end])[1] if start \
                else fused_blocks(self.graph, [end])[0]
        return self.blocks[start, end]

    def allowed(self, block: FusedBlock, work) -> list[list[str]]:
        return allowed_devices(self.model, block, work, map_bytes(block), self.names)

    def options(self, start: int, end: int, grid: tuple[int, int] | None = None,
                reuse: bool | None = None) -> list[FusedChoice]:
        """The block from fused depth ``start`` to ``end`` in every grid and data reuse
        (``grid``, ``reuse`` if pinned) whose tiles some device holds, each with the assignment
        of the smallest score (makespan, or busiest resource for throughput)."""
        key = (start, end, grid, reuse)
        if key in self.priced:
            return self.priced[key]
        block = self.block(start, end)
        found: list[FusedChoice] = []
        grids = [grid] if grid is not None else grid_options(block, self.largest)
        for g, r in itertools.product(grids, [reuse] if reuse is not None else [False, True]):
            if r and g == (1, 1) and reuse is None:
                continue
            tiles, work = later_tiles_and_work(self.block(0, end), block, g, r, self.cache) \
                if start else tiles_and_work(block, g, r, self.cache)
            allowed = self.allowed(block, work)
            self.configs += 1
            if any(not a for a in allowed):
                continue
            chosen, schedule, value, exhaustive = assign(self.model, work, allowed, self.score,
                                                         self.max_assignments)
            found.append(FusedChoice(block, g, r, tiles, work, chosen, schedule, value,
                                     exhaustive, memory_of(self.model, block, work, chosen,
                                                           map_bytes(block), self.names)))
        self.priced[key] = found
        return found

    def best(self, start: int, end: int, grid: tuple[int, int] | None = None,
             reuse: bool | None = None) -> FusedChoice | None:
        """The option (:meth:`options`) with the smallest score (a tie: the shorter makespan,
        fewer tiles, then no reuse); None when no device can hold a tile."""
        return min(self.options(start, end, grid, reuse), default=None, key=lambda c: (
            round(c.value, 6), round(c.schedule.makespan_ms, 6), len(c.tiles), c.reuse))


def staged_choice(graph: Graph, model: ClusterModel, names: Sequence[str], objective_of,
                  rest_after: Callable[[list[str]], Rest | None], max_blocks: int = 3,
                  largest: int = 6, max_assignments: int = 16, cache: TileCache | None = None,
                  pins: Sequence[BlockPin] | None = None, objective: str = "latency"
                  ) -> tuple[StagedChoice | None, int]:
    """The best 2..``max_blocks`` consecutive fused blocks (module docstring), or exactly the
    ``pins`` (each block's end depth, grid and reuse); and how many block configurations were
    priced.
    ``objective_of(rest)`` scores a combined schedule for ``objective`` (latency or
    throughput). None: nothing fits (no device holds some tile, or the rest does not fit after
    the last block)."""
    pricer = BlockPricer(graph, model, names, largest, max_assignments, cache, objective)
    if pins is not None:
        ends = [d for d, _, _ in pins]
        fused_blocks(graph, ends)  # GraphError names bad or unordered depths
        priced = [pricer.best(a, b, g, r) for a, b, (_, g, r) in
                  zip([0, *ends[:-1]], ends, pins, strict=True)]
        chosen = None if any(c is None for c in priced) else \
            _finish(pricer, [c for c in priced if c is not None], rest_after, objective_of)
        return chosen, pricer.configs
    depths = sorted(cut_depths(graph))
    latency = objective == "latency"
    beam = 1 if latency else THROUGHPUT_BEAM

    def extend(start: int, end: int) -> list[FusedChoice]:
        """What a path may end with: the block's best (latency: its makespan adds up), or
        every grid and reuse of it (throughput: which is best depends on the path's load)."""
        if latency:
            c = pricer.best(start, end)
            return [] if c is None else [c]
        return pricer.options(start, end)

    def key(path: list[FusedChoice], end: int) -> tuple:
        """Latency: the sum of the blocks' makespans. Throughput: the frame's bottleneck were
        the path the whole prefix (the rest after ``end`` on the gateway included), then that
        sum, then the simpler path (fewer tiles, fewer blocks with data reuse)."""
        if latency:
            return sum(c.value for c in path), 0.0
        rest = rest_after(pricer.block(0, end).names)
        schedule = _busy(path)
        bottleneck = busiest_ms(schedule) if rest is None else objective_of(rest)(schedule)
        return (round(bottleneck, 6), round(schedule.makespan_ms, 6), *_simplicity(path))

    # paths[k-1][end]: up to ``beam`` (key, blocks) of k blocks covering the prefix to ``end``
    paths: list[dict[int, list[tuple[tuple[float, float], list[FusedChoice]]]]] = []
    paths.append({end: _kept([(key([c], end), [c]) for c in extend(0, end)], beam)
                  for end in depths})
    finished: list[StagedChoice] = []
    for _ in range(2, max_blocks + 1):
        layer: dict[int, list[tuple[tuple[float, float], list[FusedChoice]]]] = {}
        for end in depths:
            options = [(key([*path, c], end), [*path, c])
                       for start, kept in paths[-1].items() if start < end
                       for c in extend(start, end) for _key, path in kept]
            if options:
                layer[end] = _kept(options, beam)
        paths.append(layer)
        for kept in layer.values():
            for _key, path in kept:
                staged = _finish(pricer, path, rest_after, objective_of, improve_moves=False)
                if staged is not None:
                    finished.append(staged)
    # the best (throughput: the best few that differ) improved by moving tiles
    def rank(f: StagedChoice) -> tuple:
        return (f.value,) if latency else (round(f.value, 6), *_simplicity(f.stages))

    finished = [f for _key, f in _kept([((*rank(f), tuple(f.ends)), f) for f in finished],
                                       beam)]
    improved = [_finish(pricer, f.stages, rest_after, objective_of) for f in finished]
    return min((f for f in improved if f is not None), default=None, key=rank), pricer.configs


def _simplicity(path: Sequence[FusedChoice]) -> tuple[int, int]:
    """Of equally good paths the simpler runs better than priced: fewer tiles (each pays its
    calls again), fewer blocks with data reuse (copies of the shared pieces)."""
    return sum(len(c.tiles) for c in path), sum(c.reuse for c in path)


def _busy(path: Sequence[FusedChoice]) -> Schedule:
    """What :func:`combine` gives a path's schedules, without the tasks' times (the program
    ranks thousands of paths by their busy times alone)."""
    busy: dict[str, float] = {}
    for c in path:
        for device, ms in c.schedule.device_busy_ms.items():
            busy[device] = busy.get(device, 0.0) + ms
    return Schedule(sum(c.schedule.makespan_ms for c in path), (), (),
                    sum(c.schedule.medium_busy_ms for c in path), busy)


def _kept(options: list[tuple[tuple, T]], beam: int) -> list[tuple[tuple, T]]:
    """The ``beam`` options with the smallest keys, one of each key (to 9 digits: e.g. a
    block with and without data reuse that cost the same); a stable sort, so of equal keys
    the first found is kept (the smaller start, the fewer tiles, no reuse)."""
    out: list[tuple[tuple, T]] = []
    seen = set()
    for k, value in sorted(options, key=lambda o: o[0]):
        rounded = tuple(round(x, 9) if isinstance(x, float) else x for x in k)
        if rounded not in seen:
            seen.add(rounded)
            out.append((k, value))
            if len(out) == beam:
                break
    return out


def _finish(pricer: BlockPricer, path: list[FusedChoice], rest_after, objective_of,
            improve_moves: bool = True) -> StagedChoice | None:
    """The blocks of ``path`` priced for the whole frame (their assignments improved by
    single-tile moves first when ``improve_moves``); None when the rest does not fit."""
    names = [n for c in path for n in c.block.names]
    rest = rest_after(names)
    if rest is None:
        return None
    if improve_moves and pricer.objective == "latency":
        path = [_improved(pricer, c) for c in path]
    elif improve_moves:
        path = _improved_for_frame(pricer, path, objective_of(rest))
    # the gateway too, when it holds no tile (plan_cluster's gateway_tiles=False)
    memory = dict.fromkeys([*pricer.names, pricer.model.gateway], 0)
    for c in path:
        for device, nbytes in c.memory.items():
            memory[device] = max(memory[device], nbytes)
    memory[pricer.model.gateway] += rest.device_param_bytes
    if memory[pricer.model.gateway] > pricer.model.devices[pricer.model.gateway].limit_bytes:
        return None
    schedule = combine([c.schedule for c in path])
    return StagedChoice(path, rest, schedule, objective_of(rest)(schedule), memory)


def _copy(choice: FusedChoice) -> FusedChoice:
    return FusedChoice(choice.block, choice.grid, choice.reuse, choice.tiles, choice.work,
                       list(choice.assignment), choice.schedule, choice.value,
                       choice.exhaustive, dict(choice.memory))


def _improved(pricer: BlockPricer, choice: FusedChoice) -> FusedChoice:
    """A block's assignment improved by single-tile moves on its own makespan (latency: the
    frame's cluster time is the sum of its blocks')."""
    if choice.exhaustive:
        return choice
    copy = _copy(choice)
    improve(pricer.model, copy, pricer.allowed(choice.block, choice.work), _makespan)
    copy.memory = memory_of(pricer.model, copy.block, copy.work, copy.assignment,
                            map_bytes(copy.block), pricer.names)
    return copy


def _improved_for_frame(pricer: BlockPricer, path: list[FusedChoice], frame_score
                        ) -> list[FusedChoice]:
    """Each block's assignment improved by single-tile moves judged on the whole frame
    (``frame_score`` of the blocks' schedules end to end: the throughput bottleneck, which a
    block's own best can miss, e.g. when another block already loads the same device); a
    block exhaustive on its own is not exhaustive for the frame."""
    path = [_copy(c) for c in path]
    for i, choice in enumerate(path):
        before = [c.schedule for c in path[:i]]
        after = [c.schedule for c in path[i + 1:]]

        def score(s: Schedule, before=before, after=after) -> float:
            return frame_score(combine([*before, s, *after]))

        choice.value = score(choice.schedule)
        improve(pricer.model, choice, pricer.allowed(choice.block, choice.work), score)
        choice.value = busiest_ms(choice.schedule)  # the block's own score, as priced
        choice.memory = memory_of(pricer.model, choice.block, choice.work, choice.assignment,
                                  map_bytes(choice.block), pricer.names)
    return path
