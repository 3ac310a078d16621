"""Choosing a fused depth, a grid, data reuse and each tile's device (DeepThings' partition,
priced as DeeperThings does: compute, memory and the shared medium together).

Every (depth, grid, reuse) is enumerated. For each, tiles go to devices: exhaustively over every
assignment when there are few enough (``max_assignments``), else by a greedy earliest-finish
list schedule; the best few greedy configurations are then improved by moving single tiles
while the simulated schedule gets better. Only the exhaustive case is exact (for the
work-sharing schedule the medium model simulates); :attr:`FusedChoice.exhaustive` says which.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edgeweave.graph.blocks import FusedBlock
from edgeweave.graph.reuse import reuse_tiles
from edgeweave.graph.tiles import Tile, restrict, tile_grid
from edgeweave.plan.cluster_cost import (
    ClusterModel,
    TileWork,
    compute_table,
    tile_tasks,
    tile_work,
)
from edgeweave.plan.medium import Schedule
from edgeweave.plan.stealing_price import StealingPrice
from edgeweave.topology import serialize_ms

#: A schedule's value for the objective (lower is better), given the gateway's extra busy time.
Score = Callable[[Schedule], float]


@dataclass
class FusedChoice:
    """One priced configuration of fused tiles."""

    block: FusedBlock
    grid: tuple[int, int]
    reuse: bool
    tiles: list[Tile]
    work: list[TileWork]
    assignment: list[str]
    schedule: Schedule
    value: float
    exhaustive: bool
    memory: dict[str, int]
    # priced as work stealing with frames in flight (plan.stealing_price), else None
    stealing: StealingPrice | None = None


def grid_options(block: FusedBlock, largest: int = 6) -> list[tuple[int, int]]:
    """Every grid up to ``largest x largest`` that fits the block's output map."""
    _, height, width = block.output.shape
    return [(r, c) for r in range(1, min(height, largest) + 1)
            for c in range(1, min(width, largest) + 1)]


#: Tiles and their work per (model, block input, block output, grid, reuse): device-independent,
#: so a caller planning one model on many clusters passes one cache to every call.
TileCache = dict[tuple[str, str, str, tuple[int, int], bool], tuple[list[Tile], list[TileWork]]]


def tiles_and_work(block: FusedBlock, grid: tuple[int, int], reuse: bool,
                   cache: TileCache | None = None, frame_input: bool = True
                   ) -> tuple[list[Tile], list[TileWork]]:
    """``frame_input``: the block reads the frame (cluster_cost.tile_work)."""
    key = (block.model, block.input, block.output.name, grid, reuse)
    if cache is not None and key in cache:
        return cache[key]
    tiles = reuse_tiles(block, grid) if reuse else tile_grid(block, grid)
    found = (tiles, tile_work(block, tiles, frame_input))
    if cache is not None:
        cache[key] = found
    return found


def later_tiles_and_work(prefix: FusedBlock, block: FusedBlock, grid: tuple[int, int],
                         reuse: bool, cache: TileCache) -> tuple[list[Tile], list[TileWork]]:
    """Tiles and work of ``block``, a later block of several (its input a computed map),
    cut from the tiles of ``prefix``, the prefix of the model that ends where ``block`` does
    (graph.tiles.restrict: the same tiles, walked back once for every block ending there)."""
    key = (block.model, block.input, block.output.name, grid, reuse)
    if key not in cache:
        tiles = restrict(tiles_and_work(prefix, grid, reuse, cache)[0], block)
        cache[key] = (tiles, tile_work(block, tiles, frame_input=False))
    return cache[key]


def allowed_devices(model: ClusterModel, block: FusedBlock, work: Sequence[TileWork],
                    gateway_extra: int, devices: Sequence[str]) -> list[list[str]]:
    """For each tile, the devices that can hold the block's weights and the tile's feature
    maps (and, on the gateway, what it holds for the rest of the model)."""
    out = []
    for w in work:
        fits = []
        for name in devices:
            need = block.param_bytes + w.peak_bytes + (gateway_extra if name == model.gateway
                                                       else 0)
            if need <= model.devices[name].limit_bytes:
                fits.append(name)
        out.append(fits)
    return out


def memory_of(model: ClusterModel, block: FusedBlock, work: Sequence[TileWork],
              assignment: Sequence[str], gateway_extra: int, devices: Sequence[str]
              ) -> dict[str, int]:
    memory = dict.fromkeys(devices, 0)
    for w, name in zip(work, assignment, strict=True):
        memory[name] = max(memory[name], block.param_bytes + w.peak_bytes)
    memory[model.gateway] = memory.get(model.gateway, 0) + gateway_extra
    return memory


#: A bound is trusted to this many ms (it and the simulation add the same times in another
#: order).
BOUND_SLACK_MS = 1e-9


def assign(model: ClusterModel, work: Sequence[TileWork], allowed: Sequence[Sequence[str]],
           score: Score, max_assignments: int) -> tuple[list[str], Schedule, float, bool]:
    """The best assignment found: ``(devices, schedule, value, exhaustive)``.

    Exhaustively, an assignment is simulated only when its bound could beat the best so far:
    ``score`` of its busy times (every device's compute, the medium's transfers) with the
    largest of them as the makespan, which no schedule beats. So ``score`` must not decrease
    with the makespan and must depend on nothing else of the schedule but the busy times (true
    of latency, makespan plus a constant, and of the throughput bottleneck)."""
    count = math.prod(len(a) for a in allowed)
    table = compute_table(model, work, allowed)
    traffic = [model.task_bytes(w) for w in work]
    mbps = model.medium.mbps
    ser = [serialize_ms(i, mbps) + serialize_ms(o, mbps) for i, o in traffic]
    if count <= max_assignments:
        best: tuple[list[str], Schedule, float] | None = None
        for combo in itertools.product(*allowed):
            if best is not None and score(_bound(model, combo, table, traffic, ser)) >= \
                    best[2] + BOUND_SLACK_MS:
                continue
            schedule = model.simulate(tile_tasks(model, work, combo, table))
            value = score(schedule)
            if best is None or value < best[2]:
                best = (list(combo), schedule, value)
        assert best is not None
        return best[0], best[1], best[2], True
    # too many to try: the better of two heuristics, earliest finish (latency) and the
    # least busiest resource (frames/s), simulated; earliest finish alone left the throughput
    # objective's plan on more devices priced below its plan on fewer
    found = []
    for chosen in (greedy(model, work, allowed, table),
                   balanced(model, allowed, table, traffic, ser, score)):
        schedule = model.simulate(tile_tasks(model, work, chosen, table))
        found.append((score(schedule), chosen, schedule))
    value, chosen, schedule = min(found, key=lambda f: f[0])
    return chosen, schedule, value, False


def balanced(model: ClusterModel, allowed: Sequence[Sequence[str]],
             table: dict[tuple[int, str], float], traffic: Sequence[tuple[int, int]],
             ser: Sequence[float], score: Score) -> list[str]:
    """Each tile, in order, to the device that leaves ``score`` of the busy times so far
    (:func:`_bound`'s: every device's tasks and the medium's transfers) lowest."""
    busy: dict[str, float] = {}
    medium = 0.0
    chosen: list[str] = []
    for k, options in enumerate(allowed):
        overhead = model.runtime_ms(*traffic[k])  # the runtime's cost: the same on any device
        best: tuple[float, str] | None = None
        for name in options:
            trial = dict(busy)
            trial[name] = trial.get(name, 0.0) + table[(k, name)] + overhead
            air = medium + (ser[k] if name != model.gateway else 0.0)
            value = score(Schedule(max(air, *trial.values()), (), (), air, trial))
            if best is None or value < best[0]:
                best = (value, name)
        assert best is not None
        name = best[1]
        busy[name] = busy.get(name, 0.0) + table[(k, name)] + overhead
        medium += ser[k] if name != model.gateway else 0.0
        chosen.append(name)
    return chosen


def _bound(model: ClusterModel, combo: Sequence[str], table: dict[tuple[int, str], float],
           traffic: Sequence[tuple[int, int]], ser: Sequence[float]) -> Schedule:
    """An assignment's busy times without simulating it: each device's tasks (compute plus the
    runtime's cost for their bytes, as :meth:`ClusterModel.task` prices them) and the medium's
    transfers (every task off the gateway, in and out); the makespan is at least the largest."""
    busy: dict[str, float] = {}
    medium = 0.0
    for k, device in enumerate(combo):
        busy[device] = busy.get(device, 0.0) + table[(k, device)] + model.runtime_ms(*traffic[k])
        if device != model.gateway:
            medium += ser[k]
    return Schedule(max(medium, *busy.values()), (), (), medium, busy)


def greedy(model: ClusterModel, work: Sequence[TileWork], allowed: Sequence[Sequence[str]],
           table: dict[tuple[int, str], float]) -> list[str]:
    """Earliest-finish list scheduling: each tile, in order, to the device that would return
    its result first, counting the medium as one queue (a fast estimate of the simulation)."""
    mbps, half_rtt = model.medium.mbps, model.medium.rtt_ms / 2
    medium = 0.0
    free = dict.fromkeys(model.names, 0.0)
    back: dict[int, float] = {}
    chosen = []
    for k, (w, options) in enumerate(zip(work, allowed, strict=True)):
        ready = max((back[s] for s in w.after), default=0.0)
        in_bytes, out_bytes = model.task_bytes(w)
        best: tuple[float, str, float] | None = None
        for name in options:
            local = name == model.gateway
            arrive = ready if local else max(medium, ready) + serialize_ms(in_bytes, mbps) \
                + half_rtt
            end = max(free[name], arrive) + table[(k, name)]
            done = end if local else end + serialize_ms(out_bytes, mbps) + half_rtt
            if best is None or done < best[0]:
                best = (done, name, end)
        assert best is not None
        done, name, end = best
        if name != model.gateway:
            medium = max(medium, ready) + serialize_ms(in_bytes + out_bytes, mbps)
        free[name] = end
        back[w.index] = done
        chosen.append(name)
    return chosen


def improve(model: ClusterModel, choice: FusedChoice, allowed: Sequence[Sequence[str]],
            score: Score, passes: int = 3) -> FusedChoice:
    """Move single tiles to other devices while the simulated value improves."""
    current = list(choice.assignment)
    value, schedule = choice.value, choice.schedule
    table = compute_table(model, choice.work, allowed)
    for _ in range(passes):
        better = False
        for k, options in enumerate(allowed):
            for name in options:
                if name == current[k]:
                    continue
                trial = [*current[:k], name, *current[k + 1:]]
                trial_schedule = model.simulate(tile_tasks(model, choice.work, trial, table))
                trial_value = score(trial_schedule)
                if trial_value < value - 1e-9:
                    current, value, schedule, better = trial, trial_value, trial_schedule, True
        if not better:
            break
    choice.assignment, choice.value, choice.schedule = current, value, schedule
    return choice
