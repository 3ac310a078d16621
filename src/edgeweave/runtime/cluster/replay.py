"""The plan's schedule model replayed with what a run measured (ClusterRun.replayed_ms).

Measured latency against the replay isolates the cost model's structure (the shared medium,
each device's queue, the reuse dependencies, the runtime's per-task cost: plan.medium) from the
emulated hardware's speed on this host, which the replay takes from the run.

* One data source (:func:`replay_one`): the plan's tiles, each at its median emulated compute
  on the device that ran it in the last frame, then the median rest.
* Several sources (:func:`replay_sources`): their frames overlap, so every frame is replayed on
  one clock: it arrives when it was submitted, its tiles run on the devices that ran them, in
  the order they were handed out, at their measured compute, each crop from the frame's source
  and each result to where the frame was gathered (a hop between a device and itself costs
  nothing), and its rest is one more task on that device after its tiles (a device runs its
  tiles or a rest, one at a time). The replayed latency is the median frame's answer less its
  arrival. What it cannot replay: the scheduler's choices themselves (it takes who ran what,
  and when it was handed out, from the run).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import replace

from edgeweave.plan.medium import Task, simulate
from edgeweave.plan.partition import Partition, TileAssignment
from edgeweave.runtime.cluster.frames import FrameResult

MIB = 2**20


def _per_mb(part: Partition) -> float:
    return float(part.search.get("task_overhead", {}).get("runtime_ms_per_mb", 0.0))


def _order(part: Partition) -> tuple[list[TileAssignment], dict[int, int], dict[int, int]]:
    """Every block's tiles in the order devices run them (block by block, level 0 first),
    each tile's position, and its block (a block's tiles wait for all of the one before:
    several fused blocks, DeeperThings)."""
    flat = part.all_tiles()
    tiles: list[TileAssignment] = []
    block: dict[int, int] = {}
    start = 0
    for b, stage in enumerate(part.stages()):
        mine = sorted(flat[start:start + len(stage.tiles)], key=lambda t: (t.level, t.index))
        tiles += mine
        block.update((t.index, b) for t in mine)
        start += len(stage.tiles)
    return tiles, {t.index: k for k, t in enumerate(tiles)}, block


def _after(tile: TileAssignment, position: dict[int, int], block: dict[int, int],
           base: int = 0) -> tuple[int, ...]:
    """What a tile waits for: the level-0 tiles whose halo it reuses, and every tile of the
    block before its own."""
    before = {position[i] for i, b in block.items() if b == block[tile.index] - 1}
    return tuple(sorted({base + k for k in before} | {
        base + position[p.source] for ps in tile.reused.values() for p in ps}))


def replay_one(part: Partition, results: Sequence[FrameResult], time_scale: float
               ) -> float | None:
    """One source's frames (module docstring); None when the last frame's tiles are not the
    plan's."""
    if part.method != "fused-tiles" or not results:
        return None
    ran = {t.tile: t.device for t in results[-1].timeline}
    computes: dict[int, list[float]] = {}
    for r in results:
        for t in r.timeline:
            computes.setdefault(t.tile, []).append(t.compute_ms / time_scale)
    tiles, position, block = _order(part)
    if set(ran) != set(position):
        return None
    per_mb = _per_mb(part)
    tasks = [Task(ran[t.index], statistics.median(computes[t.index])
                  + per_mb * (t.in_bytes + t.out_bytes) / MIB, t.in_bytes, t.out_bytes,
                  _after(t, position, block))
             for t in tiles]
    schedule = simulate(tasks, part.gateway, part.medium.mbps, part.medium.rtt_ms)
    return schedule.makespan_ms + statistics.median(r.rest_ms for r in results) / time_scale


def replay_sources(part: Partition, results: Sequence[FrameResult], time_scale: float
                   ) -> float | None:
    """Several sources' frames on one clock (module docstring); None when a frame's arrival
    was not recorded or its tiles are not the plan's."""
    if part.method != "fused-tiles" or not results or any(r.submitted <= 0 for r in results):
        return None
    tiles, position, block = _order(part)
    by_index = {t.index: t for t in tiles}
    first = min(r.submitted for r in results)
    per_mb = _per_mb(part)
    # (when it was handed out, frame, task) in one list: a device runs its tasks in that order
    entries: list[tuple[float, int, Task]] = []
    arrivals: list[float] = []
    rests: list[int] = []
    for k, r in enumerate(results):
        if {t.tile for t in r.timeline} != set(position):
            return None
        arrive = (r.submitted - first) * 1000.0 / time_scale
        arrivals.append(arrive)
        home = r.home or part.gateway
        base = len(entries)
        ran = {t.tile: t for t in r.timeline}
        for tile in tiles:
            t = ran[tile.index]
            entries.append((arrive + t.sent_ms / time_scale, k, Task(
                t.device, t.compute_ms / time_scale
                + per_mb * (tile.in_bytes + tile.out_bytes) / MIB, tile.in_bytes,
                tile.out_bytes, _after(by_index[tile.index], position, block, base),
                home if block[tile.index] else r.source, home, arrive)))
        stitched = arrive + r.cluster_ms / time_scale
        entries.append((stitched, k, Task(home, r.rest_ms / time_scale, 0, 0,
                                          tuple(range(base, base + len(tiles))), home, home,
                                          arrive)))
        rests.append(len(entries) - 1)
    # order by hand-out time; dependencies renumbered to the new positions
    order = sorted(range(len(entries)), key=lambda i: (entries[i][0], i))
    new = {old: k for k, old in enumerate(order)}
    tasks = [replace(entries[i][2], after=tuple(new[a] for a in entries[i][2].after))
             for i in order]
    schedule = simulate(tasks, part.gateway, part.medium.mbps, part.medium.rtt_ms)
    return statistics.median(schedule.done_ms[new[i]] - arrivals[k]
                             for k, i in enumerate(rests))
