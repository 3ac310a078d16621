"""`plan_cluster(graph, profile, fleet, ...)`: one inference across a cluster of devices.

Chooses the method (DeepThings' fused tiles, MoDNN's layer-wise split, or the single-device
plan of :func:`edgeweave.plan.plan`), the fused depth, the grid, data reuse, each tile's device,
and where the rest of the model runs (on the gateway, the edge or the cloud, as the single-device
planner decides), minimising latency or the slowest pipeline stage (frames/s) under every
device's memory limit, priced by the profile (every device's layer latencies) and the shared
medium. The space searched, and whether the answer is exact in it, is written into the plan
(``partition.search``):

* fused tiles: every depth x every grid up to 6x6 that fits x reuse on/off; tiles to devices
  exhaustively when the assignments are few (``max_assignments``), else greedy + local moves;
  and DeeperThings' 2..``max_blocks`` consecutive fused blocks, each with its own grid
  (:mod:`edgeweave.plan.block_search`: not exact);
* layer-wise: MoDNN's speed-biased split (or, with ``layer_split``, even rows or the 2-D grid)
  over the gateway plus the k fastest other devices, for every k and every cut of the model
  where one tensor crosses;
* the single-device plan with the gateway as the device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from edgeweave.errors import PlanError
from edgeweave.graph.blocks import cut_depths, fused_block
from edgeweave.graph.capture import Graph
from edgeweave.graph.layerwise import SCHEMES
from edgeweave.plan.block_search import BlockPin, StagedChoice, staged_choice
from edgeweave.plan.cluster_cost import MIB, ClusterModel, mib
from edgeweave.plan.costs import CostModel
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
from edgeweave.plan.layerwise_search import LayerChoice, layerwise_choices
from edgeweave.plan.medium import Schedule
from edgeweave.plan.partition import METHODS
from edgeweave.plan.planner import plan
from edgeweave.plan.record import Alternative, Plan
from edgeweave.plan.rest import Rest, place_rest
from edgeweave.plan.result import build_plan
from edgeweave.plan.run_calibration import RunCalibration
from edgeweave.profile.build import retarget
from edgeweave.profile.schema import Profile
from edgeweave.topology import Cluster, Fleet

CLUSTER_OBJECTIVES = ("latency", "throughput")
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


def plan_cluster(
    graph: Graph,
    profile: Profile,
    fleet: Fleet,
    cluster: str | None = None,
    objective: str = "latency",
    methods: Sequence[str] = METHODS,
    depth: int | None = None,
    grid: tuple[int, int] | None = None,
    reuse: bool | None = None,
    devices: Sequence[str] | None = None,
    max_assignments: int = 256,
    refine: int = 8,
    model_spec: str | None = None,
    cache: TileCache | None = None,
    largest_grid: int = 6,
    input_codec: str = "none",
    result_codec: str = "none",
    layer_split: str = "biased",
    layer_devices: int | None = None,
    ms_per_mb: float = 0.0,
    calibration: RunCalibration | None = None,
    max_blocks: int = 3,
    blocks: Sequence[BlockPin] | None = None,
) -> Plan:
    """The best plan for one frame of ``graph`` across ``fleet``'s cluster (module docstring).

    ``depth``, ``grid`` and ``reuse`` pin the fused-tile choices (grids searched up to
    ``largest_grid`` a side); ``devices`` restricts the
    cluster to some of its devices (the gateway must be one); ``model_spec`` is the specifier
    workers rebuild the model from (the graph's name by default); ``cache`` keeps tiles across
    calls for the same graph; ``input_codec`` and ``result_codec`` are what the frame's crops
    and computed feature maps cross the medium in (plan.cluster_cost.MEDIUM_CODECS);
    ``layer_split`` is how layer-wise cuts a convolution (graph.layerwise.SCHEMES) and
    ``layer_devices`` pins how many devices it uses (the gateway and the fastest others);
    ``ms_per_mb`` is the runtime's measured cost per MiB a task carries (plan.cluster_cost);
    ``calibration`` (plan.run_calibration) scales each device's compute and the rest's on the
    gateway by what a calibration pass measured, and its cost per MiB replaces ``ms_per_mb``.
    ``max_blocks`` bounds DeeperThings' consecutive fused blocks (1: one block only);
    ``blocks`` pins them (each block's end depth, grid and data reuse). Every task also
    pays the per-call cost the profile's tile calibration measured
    (profile.tile_calibration); a profile without one prices tasks at their FLOP share, and
    the plan's search notes say so."""
    if objective not in CLUSTER_OBJECTIVES:
        raise PlanError(f"--objective: {objective!r} is not supported for a cluster plan; use "
                        f"one of {', '.join(CLUSTER_OBJECTIVES)}")
    if layer_split not in SCHEMES:
        raise PlanError(f"--layer-split: {layer_split!r}; expected one of {', '.join(SCHEMES)}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise PlanError(f"--method: {', '.join(unknown) or 'none given'}; expected some of "
                        f"{', '.join(METHODS)}")
    chosen = fleet.cluster(cluster)
    names = _devices(chosen, devices)
    if layer_devices is not None and not 1 <= layer_devices <= len(names):
        raise PlanError(f"--layer-devices {layer_devices}: expected 1 to {len(names)} (the "
                        f"devices of cluster {chosen.name!r} in use)")
    prof = retarget(profile, fleet.tier_path(chosen.gateway_name), fleet.name)
    _check_profile(graph, prof)
    cm = CostModel(prof)
    if calibration is not None and calibration.ms_per_mb is not None:
        ms_per_mb = calibration.ms_per_mb
    model = ClusterModel(prof, fleet, chosen, input_codec, result_codec, ms_per_mb,
                         calibration.compute_scale if calibration else None)
    rest_scale = calibration.rest_scale if calibration else 1.0
    search = Search()
    if calibration is not None:
        search.calibration = calibration.to_json()
        search.notes.append("priced from a calibration pass: each device's compute and the "
                            "rest's on the gateway scaled by what they took (plan.run_"
                            "calibration)")
    if not model.calibrated and tuple(methods) != ("single",):
        search.notes.append("tasks priced at their FLOP share: the profile has no tile "
                            "calibration (the per-call cost each task pays again)")
    rests: dict[str, Rest | None] = {}
    gateway_limit = model.devices[model.gateway].limit_bytes

    def rest_after(prefix: list[str]) -> Rest | None:
        """The rest after ``prefix``, or None when its weights do not fit on the gateway."""
        if prefix[-1] not in rests:
            try:
                placed = place_rest(cm, prefix, objective, gateway_limit)
                rests[prefix[-1]] = placed.scaled(rest_scale) if rest_scale != 1.0 else placed
            except PlanError:
                search.infeasible.append(
                    f"the rest of the model after {prefix[-1]!r} does not fit: its weights on "
                    f"the gateway {model.gateway!r} would exceed its memory limit "
                    f"{mib(gateway_limit)} and no edge or cloud on its path can take them")
                rests[prefix[-1]] = None
        return rests[prefix[-1]]

    candidates: list[Candidate] = []
    if "single" in methods:
        candidates += _single(prof, objective, model, search)
    if blocks is not None and len(blocks) == 1:  # one pinned block: its depth, grid, reuse
        (depth, grid, reuse), blocks = blocks[0], None
    if "fused-tiles" in methods and blocks is None:
        pinned = depth is not None or grid is not None or tuple(methods) == ("fused-tiles",)
        one = _fused(graph, model, names, objective, rest_after, search, depth, grid,
                     reuse, max_assignments, refine, pinned, cache, largest_grid)
        candidates += one
        if max_blocks >= 2 and depth is None and grid is None and not reuse:
            more = _staged(graph, model, names, objective, rest_after, search, max_blocks,
                           largest_grid, cache, None)
            candidates += more
            search.blocks = {"one_block_ms": one[0].latency_ms if one else None,
                             "multi_block_ms": more[0].latency_ms if more else None,
                             "multi_block": more[0].note if more else None,
                             "max_blocks": max_blocks}
    elif "fused-tiles" in methods and blocks is not None:
        candidates += _staged(graph, model, names, objective, rest_after, search, len(blocks),
                              largest_grid, cache, blocks)
    if "layer-wise" in methods:
        candidates += [_from_layers(c) for c in
                       layerwise_choices(graph, cm, model, names, objective, rest_after, search,
                                         layer_split, layer_devices)]
    if not candidates:
        raise PlanError(_nothing_fits(graph, search))
    # the simpler method wins a tie (float noise included): single, then layer-wise, then tiles
    rank = {"single": 0, "layer-wise": 1, "fused-tiles": 2}
    best = min(candidates, key=lambda c: (round(c.value, 6), rank[c.method]))
    single = next((c.single for c in candidates if c.single is not None), None)
    if single is None:
        single = plan(prof, "latency")
    alternatives = _alternatives(candidates, single)
    # exact: the optimum of the whole space searched, so every method's search must be
    search.exact = all(c.exact for c in candidates) and search.exhaustive
    return build_plan(graph, prof, cm, model, chosen, names, best, single, alternatives,
                      objective, search, model_spec or graph.name)


def _devices(cluster: Cluster, devices: Sequence[str] | None) -> list[str]:
    if devices is None:
        return list(cluster.devices)
    for name in devices:
        if name not in cluster.devices:
            raise PlanError(f"--devices: unknown device {name!r} in cluster {cluster.name!r} "
                            f"(its devices: {', '.join(cluster.devices)})")
    if cluster.gateway_name not in devices:
        raise PlanError(f"--devices: the gateway {cluster.gateway_name!r} of cluster "
                        f"{cluster.name!r} must be one of them (it holds the frame)")
    return [name for name in cluster.devices if name in devices]


def _check_profile(graph: Graph, profile: Profile) -> None:
    want = {n.name for n in graph.nodes}
    have = {n.name for n in profile.nodes}
    if want != have:
        missing = sorted(want - have)[:3]
        raise PlanError(f"profile of {profile.model!r} does not match model {graph.name!r} "
                        f"(e.g. no node {missing[0]!r}); profile the same model and input shape"
                        if missing else f"profile of {profile.model!r} has extra nodes")


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


def _single(prof: Profile, objective: str, model: ClusterModel, search: Search
            ) -> list[Candidate]:
    limit_mb = model.devices[model.gateway].limit_bytes / MIB
    try:
        result = plan(prof, objective, device_mem_mb=limit_mb)
    except PlanError as exc:
        search.infeasible.append(f"single device: {exc}")
        return []
    search.configs += 1
    total = float(result.predicted["total_ms"])
    fps = float(result.predicted["throughput_fps"])
    value = total if objective == "latency" else 1000.0 / fps
    return [Candidate("single", value, total, fps, result.exact, f"{result.mode} on the "
                      f"gateway's path ({result.algorithm})", single=result)]


def _fused(graph: Graph, model: ClusterModel, names: list[str], objective: str, rest_after,
           search: Search, depth: int | None, grid: tuple[int, int] | None,
           reuse: bool | None, max_assignments: int, refine: int, pinned: bool,
           cache: TileCache | None, largest_grid: int) -> list[Candidate]:
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
        score = score_of(objective, rest, model.gateway)
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
                chosen, schedule, value, exhaustive = assign(model, work, allowed, score,
                                                             max_assignments)
                search.exhaustive &= exhaustive
                memory = memory_of(model, block, work, chosen, extra, names)
                choices.append((FusedChoice(block, g, r, tiles, work, chosen, schedule, value,
                                            exhaustive, memory), rest, allowed, extra))
    if not choices:
        if pinned and search.infeasible:
            raise PlanError(search.infeasible[-1])
        return []
    choices.sort(key=lambda c: c[0].value)
    for choice, rest, allowed, extra in [c for c in choices if not c[0].exhaustive][:refine]:
        improve(model, choice, allowed, score_of(objective, rest, model.gateway))
        choice.memory = memory_of(model, choice.block, choice.work, choice.assignment, extra,
                                  names)
    choice, rest, _, _ = min(choices, key=lambda c: _simpler_first(c[0]))
    latency = choice.schedule.makespan_ms + rest.latency_ms
    fps = 1000.0 / score_of("throughput", rest, model.gateway)(choice.schedule)
    note = (f"fused depth {choice.block.depth}, grid {choice.grid[0]}x{choice.grid[1]}, reuse "
            f"{'on' if choice.reuse else 'off'}")
    return [Candidate("fused-tiles", choice.value, latency, fps,
                      search.exhaustive and rest.exact, note, rest=rest, fused=choice)]


def _staged(graph: Graph, model: ClusterModel, names: list[str], objective: str, rest_after,
            search: Search, max_blocks: int, largest_grid: int, cache: TileCache | None,
            pins: Sequence[BlockPin] | None) -> list[Candidate]:
    """DeeperThings' consecutive fused blocks (plan.block_search), best or pinned."""
    if pins is None and len(cut_depths(graph)) < 2:
        return []
    staged, configs = staged_choice(
        graph, model, names, lambda rest: score_of(objective, rest, model.gateway),
        rest_after, max_blocks, min(largest_grid, STAGED_GRID), cache=cache, pins=pins)
    search.configs += configs
    search.exhaustive = False
    search.notes.append(
        f"fused blocks (DeeperThings): {'the pinned blocks' if pins else f'2 to {max_blocks}'}"
        " priced by the sum of each block's best makespan (every grid up to "
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


def _from_layers(choice: LayerChoice) -> Candidate:
    return Candidate("layer-wise", choice.value, choice.latency_ms, choice.fps, choice.exact,
                     choice.note, rest=choice.rest, layers=choice)


def _nothing_fits(graph: Graph, search: Search) -> str:
    """Why nothing fits: the first reason of each kind (single device, the rest of the model,
    fused tiles, layer-wise), so the user sees every method's obstacle once."""
    firsts: dict[str, str] = {}
    for reason in search.infeasible:
        firsts.setdefault(reason.split(" ")[0], reason)
    detail = "; ".join(firsts.values()) or "; ".join(search.notes) or "no method ran"
    return f"model {graph.name!r}: no cluster plan fits: {detail}"


def _alternatives(candidates: list[Candidate], single: Plan) -> list[Alternative]:
    out = [Alternative(mode=f"cluster-{c.method}", available=True, total_ms=c.latency_ms,
                       throughput_fps=c.fps, meets_constraints=True, note=c.note)
           for c in candidates if c.method != "single"]
    return out + list(single.alternatives)
