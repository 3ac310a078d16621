"""The candidates a cluster plan chooses among, and the fused-tile ones' searches.

Split from :mod:`edgeweave.plan.multidevice` (which checks the flags, runs every method's search
and picks the best): this module holds what each search returns (:class:`Candidate`), what the
plan records about the search (:class:`Search`), how a frame's schedule is scored
(:func:`score_of`), and the two fused-tile searches: one fused block (DeepThings: every depth x
grid x reuse, tiles to devices) and several consecutive blocks (DeeperThings,
:mod:`edgeweave.plan.block_search`). Layer-wise has its own module (plan.layerwise_search).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from edgeweave.errors import PlanError
from edgeweave.graph.blocks import cut_depths, fused_block
from edgeweave.graph.capture import Graph
from edgeweave.plan.block_search import BlockPin, StagedChoice, staged_choice
from edgeweave.plan.cluster_cost import ClusterModel, mib
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
from edgeweave.plan.layerwise_search import LayerChoice
from edgeweave.plan.medium import Schedule
from edgeweave.plan.record import Plan
from edgeweave.plan.rest import Rest
from edgeweave.plan.stealing_price import StealingPrice, stealers_of, stealing_price

#: Grids up to this many tiles a side for each of several fused blocks (their search prices
#: every pair of cuts: 171 blocks for vgg16's 18 depths).
STAGED_GRID = 4


@dataclass
class Candidate:
    """One method's best configuration, priced for the whole frame."""

    method: str
    value: float
    latency_ms: float
    fps: float
    exact: bool
    note: str
    rest: Rest | None = None
    fused: FusedChoice | None = None
    layers: LayerChoice | None = None
    single: Plan | None = None
    staged: StagedChoice | None = None  # several fused blocks (DeeperThings)
    # the sub-cluster searched (plan.subclusters), when it leaves devices of the cluster out
    devices: list[str] | None = None


@dataclass
class Search:
    """What was searched, for the plan's record."""

    configs: int = 0
    exhaustive: bool = True
    exact: bool = False
    infeasible: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    calibration: dict | None = None  # RunCalibration.to_json() of the costs it priced with
    blocks: dict | None = None  # one fused block vs several: the best of each, predicted
    # the sub-clusters the fused tiles were also searched on, and which won (plan.subclusters)
    subsets: dict | None = None


def score_of(objective: str, rest: Rest, gateway: str) -> Callable[[Schedule], float]:
    """The objective of a whole frame from the cluster part's schedule: latency = cluster
    makespan + the rest's latency; throughput = the slowest pipeline stage (the medium, any
    device's busy time with the gateway's share of the rest, or a stage of the rest)."""
    if objective == "latency":
        return lambda s: s.makespan_ms + rest.latency_ms

    def bottleneck(s: Schedule) -> float:
        busy = dict(s.device_busy_ms)
        busy[gateway] = busy.get(gateway, 0.0) + rest.device_ms
        return max(s.medium_busy_ms, max(busy.values()), rest.other_stages_ms)

    return bottleneck


def choice_score(objective: str, rest: Rest, gateway: str, price: StealingPrice | None = None,
                 in_flight: int | None = None) -> Callable[[Schedule], float]:
    """:func:`score_of`, or for a configuration priced as work stealing with ``in_flight``
    frames (``price``, plan.stealing_price) its fluid bound, at least a frame's latency over the
    frames in flight (so among assignments the one with the shortest frame wins a tie)."""
    if price is None or in_flight is None:
        return score_of(objective, rest, gateway)
    return lambda s: price.value(s.makespan_ms + rest.latency_ms, in_flight)


def fused_candidates(graph: Graph, model: ClusterModel, names: list[str], objective: str,
                     rest_after, search: Search, depth: int | None,
                     grid: tuple[int, int] | None, reuse: bool | None, max_assignments: int,
                     refine: int, pinned: bool, cache: TileCache | None, largest_grid: int,
                     in_flight: int | None = None, origins: Mapping[str, float] | None = None
                     ) -> list[Candidate]:
    """DeepThings' one fused block: the best depth x grid x reuse and tiles to devices
    (pinned choices kept), or none when nothing fits (an error naming why when pinned).
    ``in_flight`` (throughput only): price each configuration as work stealing with that many
    frames in flight (plan.stealing_price, the frames from ``origins``) instead
    of its tiles' fixed assignment."""
    if depth is None and not pinned and not cut_depths(graph):
        search.notes.append(f"no fused tiles: model {graph.name!r} has no fusable prefix")
        return []
    # no depth at all: fused_block(graph) names why the model has no fusable prefix
    depths: list[int | None] = [depth] if depth is not None else [*sorted(cut_depths(graph))]
    choices: list[tuple[FusedChoice, Rest, list[list[str]], int]] = []
    for d in depths or [None]:
        block = fused_block(graph, d)  # GraphError names the model and valid depths
        rest = rest_after(block.names)
        if rest is None:
            continue
        extra = rest.device_param_bytes + graph.node(block.input).out_bytes + \
            block.output.bytes_of(block.output.map_area)
        if extra > model.devices[model.gateway].limit_bytes:
            search.infeasible.append(
                f"fused depth {block.depth}: the gateway {model.gateway!r} needs "
                f"{mib(extra)} for the frame, the block's output and the rest's "
                f"weights, over its limit {mib(model.devices[model.gateway].limit_bytes)}")
            continue
        for g in [grid] if grid is not None else grid_options(block, largest_grid):
            for r in [reuse] if reuse is not None else [False, True]:
                if r and g == (1, 1) and reuse is None:
                    continue
                tiles, work = tiles_and_work(block, g, r, cache)
                allowed = allowed_devices(model, block, work, extra, names)
                search.configs += 1
                if any(not a for a in allowed):
                    search.infeasible.append(_too_big(model, block, g, work, allowed, extra,
                                                      names))
                    continue
                price = None if in_flight is None else stealing_price(
                    model, work, stealers_of(allowed), rest.device_ms, rest.other_stages_ms,
                    origins)
                score = choice_score(objective, rest, model.gateway, price, in_flight)
                chosen, schedule, value, exhaustive = assign(model, work, allowed, score,
                                                             max_assignments)
                search.exhaustive &= exhaustive
                memory = memory_of(model, block, work, chosen, extra, names)
                choices.append((FusedChoice(block, g, r, tiles, work, chosen, schedule, value,
                                            exhaustive, memory, price), rest, allowed, extra))
    if not choices:
        if pinned and search.infeasible:
            raise PlanError(search.infeasible[-1])
        return []
    choices.sort(key=lambda c: c[0].value)
    for choice, rest, allowed, extra in [c for c in choices if not c[0].exhaustive][:refine]:
        improve(model, choice, allowed,
                choice_score(objective, rest, model.gateway, choice.stealing, in_flight))
        choice.memory = memory_of(model, choice.block, choice.work, choice.assignment, extra,
                                  names)
    choice, rest, _, _ = min(choices, key=lambda c: _simpler_first(c[0]))
    latency = choice.schedule.makespan_ms + rest.latency_ms
    fps = 1000.0 / (choice.value if choice.stealing is not None else
                    score_of("throughput", rest, model.gateway)(choice.schedule))
    note = (f"fused depth {choice.block.depth}, grid {choice.grid[0]}x{choice.grid[1]}, reuse "
            f"{'on' if choice.reuse else 'off'}")
    if choice.stealing is not None:
        note += f", priced as work stealing with {in_flight} frames in flight"
    return [Candidate("fused-tiles", choice.value, latency, fps,
                      search.exhaustive and rest.exact, note, rest=rest, fused=choice)]


def staged_candidates(graph: Graph, model: ClusterModel, names: list[str], objective: str,
                      rest_after, search: Search, max_blocks: int, largest_grid: int,
                      cache: TileCache | None, pins: Sequence[BlockPin] | None
                      ) -> list[Candidate]:
    """DeeperThings' consecutive fused blocks (plan.block_search), best or pinned."""
    if pins is None and len(cut_depths(graph)) < 2:
        return []
    staged, configs = staged_choice(
        graph, model, names, lambda rest: score_of(objective, rest, model.gateway),
        rest_after, max_blocks, min(largest_grid, STAGED_GRID), cache=cache, pins=pins,
        objective=objective)
    search.configs += configs
    search.exhaustive = False
    search.notes.append(
        f"fused blocks (DeeperThings): {'the pinned blocks' if pins else f'2 to {max_blocks}'}"
        + (" priced by the sum of each block's best makespan" if objective == "latency" else
           " priced by the busiest resource (a device, the medium) of each block's best and of"
           " their sum over the frame")
        + " (every grid up to "
        f"{min(largest_grid, STAGED_GRID)}x{min(largest_grid, STAGED_GRID)}, reuse on/off, "
        "greedy assignment when many): not exact")
    if staged is None:
        if pins is not None:
            raise PlanError(f"--blocks: the pinned fused blocks do not fit the cluster's "
                            f"memory (a tile, or the rest of the model on the gateway "
                            f"{model.gateway!r})")
        return []
    latency = staged.schedule.makespan_ms + staged.rest.latency_ms
    fps = 1000.0 / score_of("throughput", staged.rest, model.gateway)(staged.schedule)
    note = "fused blocks " + " | ".join(
        f"depth {e} {c.grid[0]}x{c.grid[1]}{' reuse' if c.reuse else ''}"
        for e, c in zip(staged.ends, staged.stages, strict=True))
    return [Candidate("fused-tiles", staged.value, latency, fps, False, note,
                      rest=staged.rest, staged=staged)]


def _simpler_first(choice: FusedChoice) -> tuple[float, int, bool]:
    """A tie (float noise included) goes to fewer tiles, then no reuse: every tile runs each
    layer as a call of its own, with its crop padded and copied, and reuse adds the copies of
    the shared pieces; none of that is in the FLOP-priced compute (resnet18 on one device:
    a 1x2 grid with reuse priced equal to 1x1, and ran 30% slower)."""
    return round(choice.value, 6), len(choice.tiles), choice.reuse


def _too_big(model: ClusterModel, block, grid: tuple[int, int], work, allowed, extra: int,
             names: list[str]) -> str:
    k = next(i for i, a in enumerate(allowed) if not a)
    need = block.param_bytes + work[k].peak_bytes
    limits = ", ".join(f"{n} {mib(model.devices[n].limit_bytes)}" for n in names)
    return (f"fused depth {block.depth}, grid {grid[0]}x{grid[1]}: no device can hold tile "
            f"{work[k].index}: it needs {mib(need)} (block weights {mib(block.param_bytes)} + "
            f"feature maps {mib(work[k].peak_bytes)}; the gateway {model.gateway!r} also holds "
            f"{mib(extra)} for the rest of the model); memory limits: {limits} (the "
            "hardware's, or the cluster's memory_mb)")

