"""The measured half of benchmarks/multi_device.py: plans run on real worker processes.

Every row is one :func:`~edgeweave.runtime.cluster.session.run_cluster`: a worker process per
device, dilated to its hardware (rpi4 / rpi3 from the host GFLOP/s recorded with the profile),
the shared Wi-Fi one shaped link in the gateway, frames from real data sources. The plan is made
for exactly that fleet (no edge or cloud: every frame stays on the devices), so its predicted
latency and the measured one compare like with like. ``speedup_vs_one`` is measured against the
same model run through the same runtime on one emulated device (devices = 1). Only the devices
the plan gives work (and the data sources) get a worker. Runs are in slow motion when the host
is loaded (``--time-scale``, runtime.cluster.session: dilations and the medium slowed together,
times divided back); each row says its time scale and how many tasks the host still could not
emulate faithfully (``overrun_tasks``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch

from edgeweave.graph import Graph
from edgeweave.graph.blocks import fused_block
from edgeweave.graph.reuse import reuse_savings
from edgeweave.plan.fused_search import TileCache
from edgeweave.plan.partition import Partition
from edgeweave.profile import Profile
from edgeweave.runtime.cluster import loaded
from edgeweave.runtime.cluster.gateway import GATEWAY_LOCAL
from edgeweave.runtime.cluster.session import ClusterRun, plan_emulated, run_cluster
from edgeweave.topology import Fleet

FleetOf = Callable[[int], Fleet]  # n -> the first n devices of the cluster
TIME_SCALE: float | str = "auto"  # run_cluster's time_scale (--time-scale)
MAX_DEVICES = 6  # the plan rows' 1..N devices: the fleet's cluster's size, at most 6 (--fleet)
CALIBRATE = 3  # run_cluster's calibrate: dummy frames priced into the plan first (--calibrate)
#: Codecs on the medium for every plan (--input-codec, --result-codec; plan.cluster_cost).
CODECS: dict[str, str] = {}


def _frames(graph: Graph, n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(graph.input_shape, generator=g) for _ in range(n)]


def _row(run: ClusterRun, **extra: Any) -> dict[str, Any]:
    """The issue's keys first, then what explains them."""
    doc = run.to_json()
    part = run.plan.partition
    assert part is not None
    work = run.device_work()
    predicted = doc["predicted_ms"]
    row = {
        "model": doc["model"], "method": doc["method"], "devices": doc["devices"],
        # the devices that computed something: a plan may leave some of the fleet idle
        # (layer-wise keeps a slow rpi3 out; resnet18's whole split on its gateway)
        "devices_computing": sum(1 for name, w in work.items()
                                 if w["tasks_per_frame"] > 0 and name != GATEWAY_LOCAL),
        "scheduler": doc["scheduler"], "latency_ms": doc["latency_ms"], "fps": doc["fps"],
        # frames/s sustained: the pipeline's filling left out (ClusterRun.steady_fps)
        "steady_fps": doc["steady_fps"],
        "speedup_vs_one": None, "predicted_ms": predicted,
        # the plan as priced from the profile alone, before the calibration pass
        "uncalibrated_predicted_ms": doc["uncalibrated_predicted_ms"],
        "calibration": doc["calibration"],
        "peak_rss_mb": doc["peak_rss_mb"], "bytes_per_frame": doc["bytes_per_frame"],
        "predicted_fps": run.plan.predicted.get("throughput_fps"),
        "measured_vs_predicted_pct": (100.0 * (doc["latency_ms"] / predicted - 1)
                                      if predicted else None),
        "measured_vs_uncalibrated_pct": (
            100.0 * (doc["latency_ms"] / doc["uncalibrated_predicted_ms"] - 1)
            if doc["uncalibrated_predicted_ms"] else None),
        "task_memory_mb": max((w["task_memory_mb"] for w in work.values()
                               if w["task_memory_mb"] == w["task_memory_mb"]), default=None),
        "predicted_memory_mb": max(x.memory_bytes for x in part.load) / 2**20,
        "fused_depth": part.fused_depth, "grid": part.grid, "reuse": part.reuse,
        # the fused blocks (DeeperThings: several, each with its own grid)
        "blocks": blocks_of(part),
        "split_layers": len(part.layers), "sources": doc["sources"], "frames": doc["frames"],
        "cluster_ms": doc["cluster_ms"], "rest_ms": doc["rest_ms"],
        "predicted_cluster_ms": doc["predicted_cluster_ms"],
        "predicted_rest_ms": doc["predicted_rest_ms"],
        "compute_vs_plan_pct": doc["compute_vs_plan_pct"], "rest_wait_ms": doc["rest_wait_ms"],
        # the plan's schedule replayed with this run's compute (ClusterRun.replayed_ms)
        "replayed_ms": doc["replayed_ms"],
        "measured_vs_replayed_pct": (100.0 * (doc["latency_ms"] / doc["replayed_ms"] - 1)
                                     if doc["replayed_ms"] else None),
        "homes": doc["homes"], "timeline": doc["timeline"],
        "stolen_per_frame": doc["stolen_per_frame"], "rerun": doc["rerun"],
        "dilations": doc["dilations"], "workers": doc["workers"],
        "time_scale": run.time_scale, "overrun_tasks": doc["emulation"]["overrun_tasks"],
        "emulation_faithful": doc["emulation"]["faithful"],
        "host_cores_needed": doc["emulation"]["host_cores_needed"],
        "delivery_ms": doc["delivery_ms"], "layer_split": part.layer_split,
        "task_overhead_ms": doc["task_overhead_ms"], "task_codec_ms": doc["task_codec_ms"],
        "runtime_ms_per_mb": doc["runtime_ms_per_mb"],
        "planned_ms_per_mb": part.search.get("task_overhead", {}).get("runtime_ms_per_mb"),
        "device_work": work, "per_frame_ms": doc["per_frame_ms"],
        "load": os.getloadavg()[0],  # this host's 1-minute load average as the run ended
    }
    row.update(extra)
    # frames/s as the plan prices this run: one frame at a time from one source is 1000 /
    # its latency; frames overlapped (in flight, several sources) the plan's busiest
    # resource (exact for the single-source pipeline it prices, a bound for several sources)
    piped = run.in_flight > 1 or len(run.sources) > 1
    row["predicted_fps_of_run"] = (row["predicted_fps"] if piped else
                                   1000.0 / predicted if predicted else None)
    row["predicted_fps_basis"] = ("the plan's busiest resource (frames overlapped)" if piped
                                  else "1000 / predicted_ms (one frame at a time)")
    row["measured_vs_predicted_fps_pct"] = (
        100.0 * (row["fps"] / row["predicted_fps_of_run"] - 1)
        if row["predicted_fps_of_run"] else None)
    print(f"measured {row['model']} {row['method']} x{row['devices']} {row['scheduler']}"
          f" ({row.get('in_flight', 1)} in flight): "
          f"{row['latency_ms']:.0f} ms (predicted {predicted:.0f}, "
          f"{row['measured_vs_predicted_pct']:+.0f}%; uncalibrated "
          f"{_pct(row['measured_vs_uncalibrated_pct'])}), {row['fps']:.2f} fps, "
          f"time scale {run.time_scale:g}, {row['overrun_tasks']:.0f} overrun task(s), "
          f"compute vs plan {_pct(row['compute_vs_plan_pct'])}, measured vs replayed "
          f"{_pct(row['measured_vs_replayed_pct'])}, load {row['load']:.2f}",
          file=sys.stderr, flush=True)
    return row


def blocks_of(part: Partition) -> str | None:
    """A fused-tile plan's blocks for a table: ``10:3x2r | 14:2x4`` (each block's end depth
    from the model's input, its grid, ``r`` when it has data reuse)."""
    if part.method != "fused-tiles":
        return None
    return " | ".join(f"{s.depth}:{s.grid[0]}x{s.grid[1]}{'r' if s.reuse else ''}"
                      for s in part.stages())


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.0f}%"


def ms_per_mb_of(rows: Sequence[dict[str, Any]]) -> float:
    """The runtime's measured cost per MiB a task carries (the first row that measured it;
    0 if none)."""
    values = [r["runtime_ms_per_mb"] for r in rows if r.get("runtime_ms_per_mb") is not None
              and r["runtime_ms_per_mb"] == r["runtime_ms_per_mb"]]
    return values[0] if values else 0.0


def speedup_runs(graph: Graph, profile: Profile, fleet_of: FleetOf, counts: Sequence[int],
                 layerwise: Sequence[int], frames: int, cache: TileCache,
                 prefetch: int = 1, in_flight: Sequence[int] = (1,),
                 max_blocks: Sequence[int] = (3,)) -> list[dict[str, Any]]:
    """Fused tiles with work stealing on 1..n devices, layer-wise on 2..4; one source, with
    each of ``in_flight`` frames unanswered (runtime.cluster.drive). The first run (fewest
    devices) measures the runtime's cost per MiB a task carries, which every later plan is
    priced with (``ms_per_mb``). Against one device with one frame in flight:
    ``speedup_vs_one`` is its latency over the row's with one frame in flight (the papers'
    single-source speedup), its frames/s under the row's with more (pipelining trades latency
    for frames/s; ``speedup_basis`` says which); ``fps_speedup_vs_one`` is the frames/s
    ratio in every row. Fused tiles run once per ``max_blocks`` (1: one fused block,
    DeepThings; more: up to that many consecutive blocks, DeeperThings), one device once.

    One device runs the model twice: as a fused tile on its worker process, and (a layer-wise
    plan with nothing to split) in the gateway's own process, as a device alone would. The
    speedups are over the faster (``one_device_basis`` names it): through the worker,
    mobilenet_v2 measured 218 ms against 161-171 ms in process, and a layer-wise row that
    computed on the gateway alone then showed 1.3x "over one device"."""
    xs = _frames(graph, frames)
    rows: list[dict[str, Any]] = []
    runs = [("fused-tiles", n, mb) for mb in max_blocks for n in sorted(counts)
            if n > 1 or mb == max_blocks[0]]
    runs += [("layer-wise", n, 1) for n in sorted({*layerwise, *(c for c in counts if c == 1)})]
    for method, n, mb in runs:
        fleet = fleet_of(n)
        plan = plan_emulated(graph, profile, fleet, methods=(method,), cache=cache,
                             ms_per_mb=ms_per_mb_of(rows), max_blocks=mb, **CODECS)
        for k in in_flight:
            run = run_cluster(graph, plan, profile, fleet, xs, scheduler="stealing",
                              prefetch=prefetch, time_scale=TIME_SCALE,
                              calibrate=CALIBRATE, in_flight=k)
            rows.append(_row(run, prefetch=prefetch, in_flight=k, max_blocks=mb))
    speedups(rows)
    return rows


def speedups(rows: list[dict[str, Any]]) -> None:
    """Each row's speedups over one device (:func:`speedup_runs`): over the fastest row on one
    device with one frame in flight, named in ``one_device_basis``."""
    one = min((r for r in rows if r["devices"] == 1 and r["in_flight"] == 1),
              key=lambda r: r["latency_ms"], default=None)
    for row in rows:
        row["one_device_basis"] = one["method"] if one else None
        piped = row["in_flight"] > 1
        row["fps_speedup_vs_one"] = row["fps"] / one["fps"] if one else None
        row["speedup_vs_one"] = (row["fps_speedup_vs_one"] if piped else
                                 one["latency_ms"] / row["latency_ms"] if one else None)
        row["speedup_basis"] = "fps" if piped else "latency"


#: The schedulers compared with every device a data source: (name in the rows, scheduler,
#: prefetch, gather at the source, what it does).
SCHEDULER_RUNS = (
    ("stealing", "stealing", 1, False,
     "DeepThings work stealing: a frame's tiles stay at its data source; an idle device asks "
     "the gateway for a victim (round-robin over sources) and fetches a tile from it (input: "
     "one hop, victim to thief); results to the gateway, which merges every source's frames "
     "and runs their rest (as DeepThings' gateway does); a device holds 1 + prefetch tasks"),
    ("stealing, gathered at source", "stealing", 1, True,
     "the same stealing, each frame gathered at its data source, which runs its rest (its "
     "own tiles' results never cross the medium; an rpi3 source runs the rest the plan "
     "priced on the gateway)"),
    ("sharing", "sharing", 1, None,
     "DeepThings work sharing (centralized): a source hands all of a frame's tiles to the "
     "gateway (one hop each), which keeps one first-come-first-served queue; an idle device "
     "asks the gateway and gets its head (the same readiness, plan preference and 1 + "
     "prefetch as stealing; input: two hops, source to gateway to device); results to the "
     "gateway, which runs every frame's rest"),
    ("static", "static", 0, None,
     "the plan's assignment pushed up front (no load balancing): every tile to its planned "
     "device as soon as its frame arrives, input one hop from the source, results to the "
     "gateway, which runs every frame's rest"),
)


def scheduler_runs(graph: Graph, profile: Profile, fleet_of: FleetOf, n: int, frames: int,
                   cache: TileCache, ms_per_mb: float = 0.0) -> list[dict[str, Any]]:
    """Work stealing vs work sharing (and the static plan) on the same plan, every one of
    ``n`` heterogeneous devices a data source with one frame in flight (DeepThings'
    multi-source setup; :data:`SCHEDULER_RUNS` says what each does). Each device runs one
    thing at a time: its tiles or a frame's rest (runtime.cluster.rest.RestLanes). One fused
    block, as DeepThings has: the calibration pass of each run then keeps its depth, grid and
    reuse (runtime.cluster.session.plan_calibrated). With several blocks each run's calibration
    chose between them and the best single block on its own, so the rows could compare
    different partitions (vgg16: static ran 15:1x3r | 18:1x2 beside stealing's 15:1x3r)."""
    fleet = fleet_of(n)
    plan = plan_emulated(graph, profile, fleet, methods=("fused-tiles",), cache=cache,
                         ms_per_mb=ms_per_mb, max_blocks=1, **CODECS)
    part = plan.partition
    assert part is not None
    xs = _frames(graph, frames)
    rows = []
    for label, scheduler, prefetch, at_source, what in SCHEDULER_RUNS:
        run = run_cluster(graph, plan, profile, fleet, xs, scheduler=scheduler,
                          sources=list(fleet.cluster().devices),  # a device the plan
                          prefetch=prefetch, time_scale=TIME_SCALE,  # leaves out sends too
                          gather_at_source=at_source, calibrate=CALIBRATE)
        rows.append(_row(run, prefetch=prefetch, hardware=[x.hardware for x in part.load],
                         scheduler_does=what))
        rows[-1]["scheduler"] = label
        rows[-1].update(loaded_price(graph, run, rows[-1]))
    stealing = rows[0]["fps"]
    for row in rows:
        row["stealing_fps_vs_this"] = stealing / row["fps"] if row["fps"] else None
    return rows


def loaded_price(graph: Graph, run: ClusterRun, row: dict[str, Any]) -> dict[str, Any]:
    """A run's prediction with its frames overlapped (runtime.cluster.loaded: its frames
    replayed by its scheduler on a simulated clock), in place of one frame's alone, and the
    row's errors against it."""
    price = loaded.loaded_price(graph, run)
    out: dict[str, Any] = {"predicted_one_frame_ms": price.one_frame_ms,
                           "frames_in_system": price.frames, "predicted_basis": price.basis}
    if price.forecast is None and price.period_ms is None:
        return out
    out["predicted_period_ms"] = price.period_ms
    if price.forecast is not None:
        out["predicted_tasks_per_frame"] = price.forecast.tasks_per_frame
    out["predicted_ms"] = price.latency_ms
    out["predicted_fps_of_run"] = price.fps
    out["measured_vs_predicted_pct"] = 100.0 * (row["latency_ms"] / price.latency_ms - 1)
    out["measured_vs_predicted_fps_pct"] = 100.0 * (row["fps"] / price.fps - 1) \
        if price.fps else None
    fps = (f"{price.fps:.2f} fps ({out['measured_vs_predicted_fps_pct']:+.0f}%)"
           if price.fps else "no frames/s (fewer than two answers apart)")
    print(f"  ... with {price.frames} frames in the system: predicted {price.latency_ms:.0f} "
          f"ms ({out['measured_vs_predicted_pct']:+.0f}%), {fps}", file=sys.stderr, flush=True)
    return out


def reuse_runs(graph: Graph, profile: Profile, fleet_of: FleetOf, n: int, frames: int,
               cache: TileCache, ms_per_mb: float = 0.0) -> list[dict[str, Any]]:
    """The best fused-tile plan with data reuse, and the same depth and grid without it: FLOPs
    of its tiles (analytic) and measured latency, stealing, one source."""
    fleet = fleet_of(n)
    xs = _frames(graph, frames)
    best = plan_emulated(graph, profile, fleet, methods=("fused-tiles",), reuse=True,
                         cache=cache, ms_per_mb=ms_per_mb, max_blocks=1, **CODECS).partition
    assert best is not None and best.grid is not None and best.fused_depth is not None
    flops = reuse_savings(fused_block(graph, best.fused_depth), best.grid)
    rows = []
    for reuse in (False, True):
        plan = plan_emulated(graph, profile, fleet, methods=("fused-tiles",), reuse=reuse,
                             depth=best.fused_depth, grid=best.grid, cache=cache,
                             ms_per_mb=ms_per_mb, max_blocks=1, **CODECS)
        run = run_cluster(graph, plan, profile, fleet, xs, scheduler="stealing", prefetch=1,
                          time_scale=TIME_SCALE, calibrate=CALIBRATE)
        rows.append(_row(run, tile_flops=flops["flops_with_reuse" if reuse
                                               else "flops_without_reuse"]))
    return rows


def layer_split_runs(graph: Graph, profile: Profile, fleet_of: FleetOf, n: int, frames: int,
                     ms_per_mb: float = 0.0) -> list[dict[str, Any]]:
    """Layer-wise on exactly ``n`` devices (pinned: on a slow medium the optimiser would keep
    the model on one), MoDNN's speed-biased 1-D split vs the 2-D grid vs speed-biased rows kept
    on the devices between split layers (graph.resident), and those rows with each device's
    interior computed while its edges' halo crosses (graph.overlap), each at its best cut:
    bytes per frame on the medium and the delivery time (the split layers' time less the
    busiest device's compute), measured."""
    fleet = fleet_of(n)
    xs = _frames(graph, frames)
    rows = []
    for split in ("biased", "grid", "resident", "overlap"):
        plan = plan_emulated(graph, profile, fleet, methods=("layer-wise",), layer_split=split,
                             layer_devices=n, ms_per_mb=ms_per_mb, **CODECS)
        run = run_cluster(graph, plan, profile, fleet, xs, time_scale=TIME_SCALE,
                          calibrate=CALIBRATE)
        rows.append(_row(run, predicted_medium_ms=run.plan.partition.predicted.get(
            "medium_busy_ms")))
    return rows
