"""The papers' own setups for benchmarks/multi_device.py's speedup, measured on worker processes.

DeepThings (Zhao et al. 2018; its C sources, zoranzhao/DeepThings) runs a *gateway* of its own
beside the N edge devices: the edge devices compute the fused tiles (stealing them from the data
source's queue), and the gateway collects their results, merges each frame's tiles, runs the
layers after the fused ones and directs the stealing. A data source partitions its next frame
as soon as its queue of the last one is empty, without waiting for the answer, so frames
pipeline: the edge devices steal the next frame's tiles while the gateway finishes the last.
Its 1.7-3.5x on 2-6 edge devices is frames/s of such a stream.

:func:`gateway_runs` measures that: the first N devices of the pi-cluster fleet compute the
tiles, and one more emulated rpi4 (``gw``, *not* counted in ``devices``) is the gateway: it holds
no tile (``plan_cluster(gateway_tiles=False)``; the runtime starts no worker for it), runs every
frame's rest in its own process dilated to an rpi4, and frames enter there (a camera on the
gateway: every tile's crop crosses the medium, where DeepThings' source device keeps its own
tiles' crops; ours moves a little more). The plan maximises frames/s (``--objective
throughput``: the busiest of the medium, any edge device, the gateway's rest), so the
throughput planner may move layers from the tiles to the gateway's rest; each row says how
much the gateway computed per frame. The baseline is one emulated rpi4 running the whole model
through the same runtime with one frame in flight (no gateway: ``setup`` one-device).
``predicted_fps`` is the calibrated plan's frames/s (the throughput objective's busiest
resource), ``measured_vs_predicted_fps_pct`` the error.

``stream`` (setup ``stealing-stream``): the same stream on the N devices alone, but planned for
what work stealing does with frames in flight (``plan_cluster(in_flight=k)``,
plan.stealing_price): the tiles of many frames spread over every device, so the planner may
choose a coarse grid, down to one tile a frame (each device a whole frame's fused block, no
halo, one crop and one map on the air). k is ``2N + 2`` frames (at most 16) unless given:
enough that a frame's latency under load does not cap the stream (Little's law). With one
device among the counts, ``speedup_vs_one_stream`` is each row's frames/s over that one-device
stream's: what the devices add beyond the pipelining itself (on one device the stream already
overlaps the gateway's cropping, transfers and rest with the next frame's compute).
``simulated_fps`` (and ``simulated_median_ms``) is the same stream replayed in the simulator
(sim.stream: the run's calibrated plan, its tiles stolen by whichever device is free, the same
frames in flight and count), ``measured_vs_simulated_pct`` the run's sustained frames/s
against it (``measured_vs_simulated_latency_pct``: its median latency): the price is a fluid
bound, the replay what queues of whole tiles sustain at the plan's prices, the run what the
devices did.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import _multi_device_runs as runs
from _multi_device_runs import _frames, _row, ms_per_mb_of
from edgeweave.errors import EdgeWeaveError
from edgeweave.graph import Graph
from edgeweave.plan.fused_search import TileCache
from edgeweave.plan.multidevice import plan_cluster
from edgeweave.profile import Profile
from edgeweave.runtime.cluster.session import plan_emulated, run_cluster
from edgeweave.sim.stream import replay_stream
from edgeweave.topology import Fleet, load_fleet

#: The extra gateway's name in :func:`cluster_fleet` (not one of the pi-cluster's devices).
GATEWAY = "gw"
GATEWAY_HARDWARE = "rpi4"


def cluster_fleet(n: int, fleet: str = "pi-cluster", mbps: float | None = None,
                  extra_gateway: bool = False, memory_mb: float | None = None) -> Fleet:
    """The first ``n`` devices of ``fleet``'s cluster on its shared Wi-Fi (``mbps`` overrides
    its bandwidth), no edge or cloud: every frame stays on the devices, as in the papers'
    setups. The first device is the gateway, or with ``extra_gateway`` an extra rpi4 ``gw``
    on the same medium (DeepThings' gateway role). ``memory_mb`` caps what the model may use
    on every device but the gateway (the cluster's ``memory_mb``: DeepThings' devices had
    less than 23 MB each); the gateway keeps its own, since it holds the rest of the model."""
    base = load_fleet(fleet)
    cluster = base.cluster()
    if n > len(cluster.devices):
        raise EdgeWeaveError(f"the fleet {fleet!r}'s cluster {cluster.name!r} has "
                             f"{len(cluster.devices)} devices, not {n}")
    names = cluster.devices[:n]
    medium = cluster.medium.model_dump()
    if mbps is not None:
        medium["mbps"] = mbps
    nodes = [{"name": x, "tier": "device", "hardware": base.node(x).hardware.name}
             for x in names]
    if extra_gateway:
        nodes.insert(0, {"name": GATEWAY, "tier": "device", "hardware": GATEWAY_HARDWARE})
    devices = [x["name"] for x in nodes]
    capped = {x: memory_mb for x in devices[1:]} if memory_mb is not None else {}
    return Fleet.from_dict({
        "name": f"{fleet}-{'gateway' if extra_gateway else 'local'}-{n}", "nodes": nodes,
        "clusters": [{"name": cluster.name, "devices": devices, "gateway": devices[0],
                      "medium": medium, "memory_mb": capped}]})


def one_device_run(graph: Graph, profile: Profile, fleet_of: Callable[[int], Fleet],
                   frames: int, cache: TileCache, ms_per_mb: float = 0.0) -> dict[str, Any]:
    """The baseline: one emulated rpi4 (the cluster's first device) running the whole model
    through the same runtime, one frame in flight, the faster of two ways
    (``one_device_basis``): its tile on its worker and the rest in the gateway's process at
    the same device's speed, or all of it in the gateway's process (a layer-wise plan with
    nothing to split; _multi_device_runs.speedup_runs says why)."""
    fleet = fleet_of(1)
    found = []
    for method in ("fused-tiles", "layer-wise"):
        plan = plan_emulated(graph, profile, fleet, methods=(method,), cache=cache,
                             ms_per_mb=ms_per_mb, **runs.CODECS)
        run = run_cluster(graph, plan, profile, fleet, _frames(graph, frames),
                          scheduler="stealing", prefetch=1, time_scale=runs.TIME_SCALE,
                          calibrate=runs.CALIBRATE)
        found.append(_row(run, in_flight=1, setup="one-device", gateway=None,
                          extra_devices=0, one_device_basis=method,
                          speedup_basis="the baseline: one emulated rpi4 runs the whole "
                                        "model, one frame in flight"))
    row = min(found, key=lambda r: r["latency_ms"])
    row["speedup_vs_one"] = row["wall_speedup_vs_one"] = 1.0
    row["predicted_fps"] = 1000.0 / row["predicted_ms"]
    _fps_error(row)
    return row


def gateway_runs(graph: Graph, profile: Profile, fleet_of: Callable[[int], Fleet],
                 counts: Sequence[int], frames: int, cache: TileCache,
                 one: dict[str, Any], in_flight: int | None = 2, max_blocks: int = 3,
                 extra_gateway: bool = True, stream: bool = False) -> list[dict[str, Any]]:
    """DeepThings' setup (module docstring) on each of ``counts`` edge devices, frames
    pipelined ``in_flight`` deep, against ``one`` (:func:`one_device_run`'s row). Without
    ``extra_gateway`` the same stream on the N devices alone (``fleet_of`` then gives the
    first N devices): the first is the gateway and may hold tiles beside every frame's rest
    (setup ``single-source-pipelined``: no extra device). ``stream``: on the N devices alone,
    planned as work stealing across the frames in flight (module docstring; ``in_flight``
    None: 2N + 2)."""
    ms_per_mb = ms_per_mb_of([one])
    setup = ("stealing-stream" if stream else
             "deepthings-gateway" if extra_gateway else "single-source-pipelined")
    rows = []
    for n in sorted(counts):
        fleet = fleet_of(n)
        k = in_flight if in_flight is not None else min(16, 2 * n + 2)
        plan = plan_emulated(graph, profile, fleet, methods=("fused-tiles",), cache=cache,
                             ms_per_mb=ms_per_mb, max_blocks=max_blocks, objective="throughput",
                             gateway_tiles=not extra_gateway,
                             in_flight=k if stream else None, **runs.CODECS)
        part = plan.partition
        assert part is not None
        # a stream sustains its rate only past the pipeline's filling: 3 windows at least
        count = max(frames, 3 * k) if stream else frames
        run = run_cluster(graph, plan, profile, fleet, _frames(graph, count),
                          scheduler="stealing", sources=[part.gateway], prefetch=1,
                          time_scale=runs.TIME_SCALE, calibrate=runs.CALIBRATE,
                          in_flight=k)
        row = _row(run, in_flight=k, max_blocks=max_blocks)
        part = run.plan.partition
        assert part is not None
        gw_load = next(x for x in part.load if x.name == part.gateway)
        who = (f"{n} edge devices computing the tiles plus one extra {GATEWAY_HARDWARE} "
               "gateway running the rest (not counted in devices)" if extra_gateway else
               f"{n} devices, the first the gateway (its tiles and every frame's rest), no "
               "extra device") + (", the plan priced as work stealing across the frames in "
                                  "flight" if stream else "")
        row.update(
            devices=n, setup=setup,
            gateway=f"{part.gateway} ({gw_load.hardware}{', extra' if extra_gateway else ''})",
            extra_devices=int(extra_gateway), devices_with_gateway=n + int(extra_gateway),
            objective=run.plan.objective, gateway_tiles=part.gateway_tiles,
            gateway_tasks=gw_load.tasks, stealers=list(part.stealers),
            stealing_shares=part.predicted.get("stealing_shares"),
            speedup_vs_one=row["steady_fps"] / one["steady_fps"],
            wall_speedup_vs_one=row["fps"] / one["fps"],
            predicted_speedup_vs_one=(row["predicted_fps"] or 0.0) / one["predicted_fps"],
            # what the gateway computed per frame besides any tiles: the rest, measured
            gateway_rest_ms=row["rest_ms"],
            speedup_basis=(f"steady_fps (frames/s sustained: answers after the first over the "
                           f"time from the first answer to the last): {who}, {k} "
                           "frames in flight, over one rpi4 running the whole model with one "
                           "frame in flight (its steady_fps); wall_speedup_vs_one: the same "
                           "with fps over the whole run, the pipeline's filling included"))
        _fps_error(row)
        simulated = ""
        if stream:  # the same stream in the simulator, at the run's calibrated plan's prices
            replay = replay_stream(part, count, in_flight=k)
            row.update(simulated_fps=replay.fps, simulated_median_ms=replay.median_ms,
                       simulated_tasks=replay.tasks,
                       measured_vs_simulated_pct=100.0 * (row["steady_fps"] / replay.fps - 1),
                       measured_vs_simulated_latency_pct=100.0 * (
                           row["latency_ms"] / replay.median_ms - 1))
            simulated = (f", simulated {replay.fps:.3f} "
                         f"({row['measured_vs_simulated_pct']:+.0f}%; median latency "
                         f"{row['latency_ms']:.0f} ms, simulated {replay.median_ms:.0f})")
        print(f"  {setup} {graph.name} x{n}{'+gw' if extra_gateway else ''}: "
              f"{row['steady_fps']:.3f} fps sustained, {row['fps']:.3f} over the run "
              f"(predicted {row['predicted_fps']:.3f}, "
              f"{row['measured_vs_predicted_fps_pct']:+.0f}%{simulated}), "
              f"x{row['speedup_vs_one']:.2f} vs one device, gateway rest "
              f"{row['rest_ms']:.0f} ms/frame", file=sys.stderr, flush=True)
        rows.append(row)
    alone = next((r for r in rows if r["devices"] == 1), None)
    if stream and alone is not None:  # the stream's own gain on one device left out
        for row in rows:
            row["speedup_vs_one_stream"] = row["steady_fps"] / alone["steady_fps"]
    return rows


def _fps_error(row: dict[str, Any]) -> None:
    """The row's sustained frames/s against what the plan prices its run at
    (``predicted_fps_of_run``, set by :func:`_multi_device_runs._row` with the error of the
    frames/s over the whole run, kept as ``measured_vs_predicted_wall_fps_pct``): the price
    is a steady state, which the sustained figure measures."""
    predicted = row["predicted_fps_of_run"]
    row["measured_vs_predicted_wall_fps_pct"] = row["measured_vs_predicted_fps_pct"]
    row["measured_vs_predicted_fps_pct"] = (100.0 * (row["steady_fps"] / predicted - 1)
                                            if predicted else None)


def gateway_plan_rows(graph: Graph, profile: Profile, fleet_of: Callable[[int], Fleet],
                      local_of: Callable[[int], Fleet], cache: TileCache, source: str,
                      ms_per_mb: float = 0.0, max_blocks: int = 3) -> list[dict[str, Any]]:
    """Where a frame's time goes, PREDICTED, for 1..6 devices: the single-source plans (the
    gateway one of the N tile devices; latency and throughput objectives) and DeepThings'
    gateway setup (an extra rpi4 gateway with no tile; throughput): per plan the medium's
    busy time, the busiest tile device's compute, the rest on the gateway, and the frames/s
    the busiest of them allows. ``source``: the profile's (measured: priced as the runs are,
    plan_emulated; analytic: FLOPs alone, plan_cluster)."""
    planner = plan_emulated if source == "measured" else plan_cluster
    one = planner(graph, profile, local_of(1), methods=("single",), cache=cache,
                  ms_per_mb=ms_per_mb, **runs.CODECS).partition
    assert one is not None
    one_ms, one_fps = one.predicted["latency_ms"], one.predicted["fps"]
    rows = []
    for n in range(1, runs.MAX_DEVICES + 1):
        setups = [("single-source", local_of(n), "latency", True),
                  ("single-source", local_of(n), "throughput", True),
                  ("deepthings-gateway", fleet_of(n), "throughput", False)]
        for setup, fleet, objective, gateway_tiles in setups:
            if n == 1 and gateway_tiles:
                continue  # one device alone is the baseline
            plan = planner(graph, profile, fleet, methods=("fused-tiles",), cache=cache,
                           ms_per_mb=ms_per_mb, max_blocks=max_blocks, objective=objective,
                           gateway_tiles=gateway_tiles, **runs.CODECS)
            part = plan.partition
            assert part is not None
            pred = part.predicted
            tiles = {x.name: x.compute_ms for x in part.load}
            gateway_tiles_ms = tiles.pop(part.gateway, 0.0)
            rows.append({
                "model": graph.name, "setup": setup, "objective": objective, "devices": n,
                "extra_devices": 0 if gateway_tiles else 1, "profile": source,
                "predicted_ms": pred["latency_ms"], "predicted_fps": pred["fps"],
                "predicted_speedup_vs_one": one_ms / pred["latency_ms"],
                "predicted_fps_speedup_vs_one": pred["fps"] / one_fps,
                "medium_busy_ms": pred.get("medium_busy_ms"),
                "busiest_tile_device_ms": max(tiles.values(), default=0.0),
                "gateway_tiles_ms": gateway_tiles_ms, "gateway_rest_ms": pred.get("rest_ms"),
                "gateway_busy_ms": gateway_tiles_ms + float(pred.get("rest_ms") or 0.0),
                "cluster_ms": pred.get("cluster_ms"), "blocks": runs.blocks_of(part),
                "rest_mode": part.rest_mode})
    return rows
