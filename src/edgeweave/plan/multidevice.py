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
* layer-wise: MoDNN's speed-biased split with each device's rows kept between split layers
  (graph.resident), each part's interior computed while its halo crosses (graph.overlap;
  with ``layer_split``, the same rows with a barrier at every split layer, MoDNN's
  scatter/gather of every layer, even rows or the 2-D grid) over the gateway plus the k
  fastest other devices, for every k and every cut of the model where one tensor crosses;
* the single-device plan with the gateway as the device.

This module checks the flags, runs each method's search and picks the best; the fused-tile
searches and what every search returns live in :mod:`edgeweave.plan.fused_candidates`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edgeweave.errors import PlanError
from edgeweave.graph.capture import Graph
from edgeweave.graph.layerwise import SCHEMES
from edgeweave.plan.block_search import BlockPin
from edgeweave.plan.cluster_cost import MIB, ClusterModel, mib
from edgeweave.plan.costs import CostModel
from edgeweave.plan.fused_candidates import (
    Candidate,
    Search,
    fused_candidates,
    staged_candidates,
)
from edgeweave.plan.fused_search import TileCache
from edgeweave.plan.layerwise_search import LayerChoice, layerwise_choices
from edgeweave.plan.partition import METHODS
from edgeweave.plan.planner import plan
from edgeweave.plan.record import Alternative, Plan
from edgeweave.plan.rest import Rest, place_rest
from edgeweave.plan.result import build_plan
from edgeweave.plan.run_calibration import RunCalibration
from edgeweave.plan.subclusters import speed_subsets
from edgeweave.profile.build import retarget
from edgeweave.profile.schema import Profile
from edgeweave.topology import Cluster, Fleet

CLUSTER_OBJECTIVES = ("latency", "throughput")


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
    layer_split: str = "overlap",
    layer_devices: int | None = None,
    ms_per_mb: float = 0.0,
    calibration: RunCalibration | None = None,
    max_blocks: int = 3,
    blocks: Sequence[BlockPin] | None = None,
    gateway_tiles: bool = True,
    in_flight: int | None = None,
    sources: Sequence[str] | None = None,
) -> Plan:
    """The best plan for one frame of ``graph`` across ``fleet``'s cluster (module docstring).

    ``depth``, ``grid`` and ``reuse`` pin the fused-tile choices (grids searched up to
    ``largest_grid`` a side); ``devices`` restricts the
    cluster to some of its devices (the gateway must be one); ``model_spec`` is the specifier
    workers rebuild the model from (the graph's name by default); ``cache`` keeps tiles across
    calls for the same graph; ``input_codec`` and ``result_codec`` are what the frame's crops
    and computed feature maps cross the medium in (plan.medium_codecs.MEDIUM_CODECS);
    ``layer_split`` is how layer-wise cuts a convolution (graph.layerwise.SCHEMES) and
    ``layer_devices`` pins how many devices it uses (the gateway and the fastest others);
    ``ms_per_mb`` is the runtime's measured cost per MiB a task carries (plan.cluster_cost);
    ``calibration`` (plan.run_calibration) scales each device's compute and the rest's on the
    gateway by what a calibration pass measured, and its cost per MiB replaces ``ms_per_mb``.
    ``max_blocks`` bounds DeeperThings' consecutive fused blocks (1: one block only);
    ``blocks`` pins them (each block's end depth, grid and data reuse). Every task also
    pays the per-call cost the profile's tile calibration measured
    (profile.tile_calibration); a profile without one prices tasks at their FLOP share, and
    the plan's search notes say so. ``gateway_tiles=False`` gives the gateway no tile
    (DeepThings' gateway role, fused tiles only): it holds the frame, gathers and stitches,
    and runs the rest; the tiles go to the other devices and the prediction prices exactly
    that (the throughput objective's busiest resource is then the medium, a tile device, or
    the gateway's rest). ``in_flight`` k (throughput only): the frames are pipelined k deep
    and the tiles stolen, so a fused-tile plan is priced as work stealing sustains it across
    frames (plan.stealing_price: the tiles spread over every device that may hold them,
    and a frame's latency / k) instead of by its tiles' fixed assignment, and every device
    with a share gets a worker (``Partition.stealers``); one fused block only. The frames
    then come from ``sources`` in turn (cluster devices; the gateway by default: DeepThings'
    several data sources, whose own tiles' crops need not cross the medium).
    Unless ``devices`` pins them (or ``in_flight`` prices stealing, whose split may give a
    device nothing), the fused tiles are also searched without the cluster's
    slowest hardware classes (plan.subclusters, every other pin kept) and the best plan wins;
    its ``partition.devices`` is then the sub-cluster it was searched on. Pinned devices are
    kept: a user who names them, or a plan priced again for workers already running on them
    (runtime.cluster.session.plan_calibrated)."""
    if objective not in CLUSTER_OBJECTIVES:
        raise PlanError(f"--objective: {objective!r} is not supported for a cluster plan; use "
                        f"one of {', '.join(CLUSTER_OBJECTIVES)}")
    if layer_split not in SCHEMES:
        raise PlanError(f"--layer-split: {layer_split!r}; expected one of {', '.join(SCHEMES)}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise PlanError(f"--method: {', '.join(unknown) or 'none given'}; expected some of "
                        f"{', '.join(METHODS)}")
    if in_flight is not None and objective != "throughput":
        raise PlanError(f"--in-flight {in_flight}: frames in flight are priced for --objective "
                        f"throughput (got {objective!r})")
    if in_flight is not None and not 1 <= in_flight <= 64:
        raise PlanError(f"--in-flight {in_flight}: expected 1 to 64 frames in flight")
    if in_flight is not None and blocks is not None and len(blocks) > 1:
        raise PlanError(f"--in-flight {in_flight}: work stealing across frames is priced for "
                        f"one fused block; {len(blocks)} blocks were pinned")
    chosen = fleet.cluster(cluster)
    origins = _origins(chosen, in_flight, sources)
    names = _devices(chosen, devices)
    tile_names = _tile_devices(chosen, names, methods, gateway_tiles)
    if layer_devices is not None and not 1 <= layer_devices <= len(names):
        raise PlanError(f"--layer-devices {layer_devices}: expected 1 to {len(names)} (the "
                        f"devices of cluster {chosen.name!r} in use)")
    prof = retarget(profile, fleet.tier_path(chosen.gateway_name), fleet.name)
    _check_profile(graph, prof)
    cm = CostModel(prof)
    if calibration is not None and calibration.ms_per_mb is not None:
        ms_per_mb = calibration.ms_per_mb
    model = ClusterModel(prof, fleet, chosen, input_codec, result_codec, ms_per_mb,
                         calibration.compute_scale if calibration else None, graph)
    rest_scale = calibration.rest_scale if calibration else 1.0
    if cache is None:  # the one-block and several-block searches tile the same prefixes
        cache = {}
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

    def fused(tiles: list[str], search: Search) -> tuple[list[Candidate], list[Candidate]]:
        """The fused-tile searches on devices ``tiles``: one block, and several."""
        if "fused-tiles" not in methods:
            return [], []
        if blocks is not None:
            return [], staged_candidates(graph, model, tiles, objective, rest_after, search,
                                         len(blocks), largest_grid, cache, blocks)
        pinned = depth is not None or grid is not None or tuple(methods) == ("fused-tiles",)
        one = fused_candidates(graph, model, tiles, objective, rest_after, search, depth,
                               grid, reuse, max_assignments, refine, pinned, cache,
                               largest_grid, in_flight, origins)
        if in_flight is not None or max_blocks < 2 or depth is not None or \
                grid is not None or reuse:
            return one, []
        return one, staged_candidates(graph, model, tiles, objective, rest_after, search,
                                      max_blocks, largest_grid, cache, None)

    one, more = fused(tile_names, search)
    if in_flight is not None and "fused-tiles" in methods:
        search.notes.append(
            f"fused tiles priced as work stealing with {in_flight} frames in flight: the "
            "tiles spread over the devices as many frames allow (a linear programme) and a "
            f"frame's latency / {in_flight}; one fused block only (several blocks are "
            "priced by fixed assignments)" + (
                f"; the frames from {', '.join(sources)} in turn (a crop crosses the medium "
                "unless its frame's source runs the tile)" if sources else ""))
    searched = [(names, one + more)]
    # frames in flight: the stealing price already gives a slow device no share when that is
    # best (its linear programme is exact for a configuration), so leaving it out gains nothing
    leave_out = devices is None and "fused-tiles" in methods and in_flight is None
    for subset in speed_subsets(model, names) if leave_out else []:
        sub = Search()  # its notes and obstacles repeat the whole cluster's
        try:
            found = fused(_tile_devices(chosen, subset, methods, gateway_tiles), sub)
        except PlanError:  # a pinned configuration that fits the whole cluster only
            found = [], []
        search.configs += sub.configs
        search.exhaustive &= sub.exhaustive
        for c in found[0] + found[1]:
            c.devices = subset
        one, more = one + found[0], more + found[1]
        searched.append((subset, found[0] + found[1]))
    candidates += one + more
    if "fused-tiles" in methods and blocks is None and in_flight is None and max_blocks >= 2 \
            and depth is None and grid is None and not reuse:
        search.blocks = _blocks_record(one, more, max_blocks)
    if "layer-wise" in methods:
        candidates += [_from_layers(c) for c in
                       layerwise_choices(graph, cm, model, names, objective, rest_after, search,
                                         layer_split, layer_devices)]
    if not candidates:
        raise PlanError(_nothing_fits(graph, search))
    # the simpler method wins a tie (float noise included): single, then layer-wise, then
    # tiles, and of tiles the plan on fewer devices
    rank = {"single": 0, "layer-wise": 1, "fused-tiles": 2}
    best = min(candidates, key=lambda c: (round(c.value, 6), rank[c.method],
                                          len(c.devices or names)))
    if len(searched) > 1:
        search.subsets = _subsets_record(searched, best, names, search)
    single = next((c.single for c in candidates if c.single is not None), None)
    if single is None:
        single = plan(prof, "latency")
    alternatives = _alternatives(candidates, single)
    # exact: the optimum of the whole space searched, so every method's search must be
    search.exact = all(c.exact for c in candidates) and search.exhaustive
    if not gateway_tiles:
        search.notes.append(f"the gateway {chosen.gateway_name!r} holds no tile: it gathers, "
                            "stitches and runs the rest (DeepThings' gateway role)")
    made = build_plan(graph, prof, cm, model, chosen, best.devices or names, best, single,
                      alternatives, objective, search, model_spec or graph.name, in_flight)
    part = made.partition
    update: dict[str, Any] = {}
    if part is not None and not gateway_tiles:
        update["gateway_tiles"] = False
    if part is not None and sources and part.stealers:  # priced from these sources
        update["sources"] = list(sources)
    if part is None or not update:
        return made
    return made.model_copy(update={"partition": part.model_copy(update=update)})


def _origins(cluster: Cluster, in_flight: int | None, sources: Sequence[str] | None
             ) -> dict[str, float] | None:
    """The share of the frames each data source produces (plan.stealing_price), checked."""
    if sources is None:
        return None
    if in_flight is None:
        raise PlanError("--sources: frames from several sources are priced with frames in "
                        "flight; give --in-flight with --objective throughput")
    unknown = [s for s in sources if s not in cluster.devices]
    if unknown or not sources:
        raise PlanError(f"--sources: {', '.join(map(repr, unknown)) or 'none given'}; expected "
                        f"devices of cluster {cluster.name!r} ({', '.join(cluster.devices)})")
    return {s: list(sources).count(s) / len(sources) for s in sources}


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


def _tile_devices(cluster: Cluster, names: list[str], methods: Sequence[str],
                  gateway_tiles: bool) -> list[str]:
    """The devices fused tiles may go to: every device in use, or all but the gateway."""
    if gateway_tiles:
        return names
    if tuple(methods) != ("fused-tiles",):
        raise PlanError("--no-gateway-tiles: a gateway without tiles applies to fused tiles "
                        f"only; use --method fused-tiles (got {', '.join(methods)})")
    others = [n for n in names if n != cluster.gateway_name]
    if not others:
        raise PlanError(f"--no-gateway-tiles: cluster {cluster.name!r} has no device besides "
                        f"its gateway {cluster.gateway_name!r} to compute the tiles")
    return others


def _check_profile(graph: Graph, profile: Profile) -> None:
    want = {n.name for n in graph.nodes}
    have = {n.name for n in profile.nodes}
    if want != have:
        missing = sorted(want - have)[:3]
        raise PlanError(f"profile of {profile.model!r} does not match model {graph.name!r} "
                        f"(e.g. no node {missing[0]!r}); profile the same model and input shape"
                        if missing else f"profile of {profile.model!r} has extra nodes")


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


def _blocks_record(one: list[Candidate], more: list[Candidate], max_blocks: int) -> dict:
    """One fused block vs several: the best of each over every (sub-)cluster searched."""
    a = min(one, key=lambda c: c.value, default=None)
    b = min(more, key=lambda c: c.value, default=None)
    return {"one_block_ms": a.latency_ms if a else None,
            "multi_block_ms": b.latency_ms if b else None,
            "one_block_fps": a.fps if a else None, "multi_block_fps": b.fps if b else None,
            "multi_block": b.note if b else None, "max_blocks": max_blocks}


def _subsets_record(searched: list[tuple[list[str], list[Candidate]]], best: Candidate,
                    names: list[str], search: Search) -> dict:
    """Which sub-clusters the fused tiles were searched on (plan.subclusters), each one's best
    fused-tile plan, and which devices the chosen plan uses; a note says the same."""
    rows = []
    for devices, found in searched:
        top = min(found, key=lambda c: c.value, default=None)
        rows.append({"devices": devices, "value": top.value if top else None,
                     "latency_ms": top.latency_ms if top else None,
                     "fps": top.fps if top else None})
    chosen = best.devices or names
    left_out = [n for n in names if n not in chosen]
    search.notes.append(
        "fused tiles also searched without the slowest devices (a hardware class at a time: "
        + "; ".join(f"on {', '.join(d)}" for d, _ in searched[1:]) + "): "
        + (f"the plan leaves out {', '.join(left_out)}" if left_out else
           "the plan on every device won"))
    return {"searched": rows, "chosen": chosen, "left_out": left_out}
