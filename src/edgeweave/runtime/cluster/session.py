"""One run of a cluster plan on local processes, as `edgeweave distribute` and the benchmark do.

Only this host is real, so the cluster is emulated as the device-edge-cloud runtime is
(:mod:`edgeweave.runtime.session`): each device is a worker process dilated to its hardware
(host GFLOP/s recorded with the profile / the device's), the shared Wi-Fi is one shaped link in
the gateway, and edge and cloud (if the plan sends the rest there) are local node servers at
this host's speed; the plan is made for exactly that fleet (:func:`plan_emulated`), so predicted
and measured compare like with like.

Frames come from data sources (cluster devices): each keeps one frame in flight (a camera
sending its next frame once the last is answered), so one source measures latency and several
measure throughput; or, with ``in_flight`` k > 1, pipelines as DeepThings' sources do (the next
frame sent once every tile of the last is taken, at most k unanswered: runtime.cluster.drive).

Slow motion (``time_scale``): a dilated device needs only 1/dilation of a core, but a task's
compute still waits for a core among this host's other processes, and when that wait passes the
stretch the device runs slower than its hardware (the worker counts it: ``overrun_tasks``). On a
loaded 2-core host that happened to most tasks. A run with ``time_scale`` s multiplies every
dilation by s and makes the medium s times slower (bandwidth / s, RTT x s), so the emulated
cluster is the same one played s times slower, with s times more room for the waits; every time
it reports is divided by s (frames/s multiplied). What is not dilated (the gateway's cropping,
encoding and stitching, gRPC) shrinks by s in the report. ``time_scale="auto"`` picks s from
the load average (:func:`slow_motion`).
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from edgeweave.errors import EdgeWeaveError
from edgeweave.graph import Graph
from edgeweave.heap import keep_heap
from edgeweave.plan import Plan, plan_cluster
from edgeweave.plan.partition import Partition
from edgeweave.plan.run_calibration import RunCalibration
from edgeweave.plan.sustained import sustained_fps
from edgeweave.profile import Profile
from edgeweave.profile.measure import PROFILE_THREADS, torch_threads
from edgeweave.runtime.cluster.calibrate import calibration_of, dummy_frames, ms_per_mib
from edgeweave.runtime.cluster.drive import check_in_flight, drive, with_sources
from edgeweave.runtime.cluster.gateway import FrameResult, TileGateway
from edgeweave.runtime.cluster.lab import ClusterLab, device_dilations
from edgeweave.runtime.cluster.layers import LayerGateway
from edgeweave.runtime.cluster.replay import replay_one, replay_sources
from edgeweave.runtime.lab import LocalLab
from edgeweave.runtime.session import emulated_fleet
from edgeweave.topology import Fleet


def plan_emulated(graph: Graph, profile: Profile, fleet: Fleet, **options: Any) -> Plan:
    """``plan_cluster`` for the fleet as the lab runs it (edge and cloud at this host's
    speed); ``options`` are plan_cluster's. Each layer is priced from its latency measured on
    this host, not the per-layer-type regression: the workers stretch this host's own CPU
    time, so that is what they take (as runtime.session.emulated_profile does for a lab; the
    regression put resnet18's rest 15% above what it ran in)."""
    measured = profile.model_copy(update={"latency_source": "measured"})
    return plan_cluster(graph, measured, emulated_fleet(fleet, profile), **options)


def plan_calibrated(graph: Graph, profile: Profile, fleet: Fleet, plan: Plan,
                    calibration: RunCalibration) -> Plan:
    """``plan`` priced again with ``calibration`` (plan.run_calibration): the same method,
    fused depth, grid, reuse, codecs, layer split, devices and objective, each tile's device
    chosen again at the calibrated prices. The runtime's cost per MiB a task carries is the
    calibration's when it measured one, else the plan's own (dropping it priced a layer-wise
    plan's 21 scatter/gathers of vgg16 as free).

    One exception to keeping the structure: a plan of several fused blocks (DeeperThings) is
    also compared with the best single block at the calibrated prices, and the cheaper runs.
    Several blocks are chosen on the profile's prices, often by a margin within their error
    (resnet18 on 2 and 4 emulated Pis: 1% better priced, 2% and 18% slower measured), and the
    calibration is what tells them apart."""
    part = plan.partition
    assert part is not None
    planned = (part.search.get("task_overhead") or {}).get("runtime_ms_per_mb")
    several = part.method == "fused-tiles" and len(part.stages()) > 1
    pins: dict[str, Any] = (
        dict(blocks=[(s.depth, s.grid, s.reuse) for s in part.stages()], max_blocks=1)
        if several else
        dict(depth=part.fused_depth, grid=tuple(part.grid) if part.grid else None,
             reuse=part.reuse, max_blocks=1) if part.method == "fused-tiles" else
        dict(layer_split=part.layer_split or "biased",
             layer_devices=len({d for la in part.layers for d in la.devices} | {part.gateway})))
    same: dict[str, Any] = dict(
        methods=(part.method,), devices=list(part.devices), cluster=part.cluster,
        objective=plan.objective, input_codec=part.input_codec,
        result_codec=part.result_codec, model_spec=part.model, calibration=calibration,
        ms_per_mb=float(planned or 0.0), gateway_tiles=part.gateway_tiles,
        in_flight=part.in_flight if part.scheduler == "stealing" else None)
    again = plan_emulated(graph, profile, fleet, **same, **pins)
    if not several:
        return again
    one = plan_emulated(graph, profile, fleet, **same, max_blocks=1)
    # a tie (float noise included) goes to the one block: fewer sync points
    return min((one, again), key=lambda p: round(_objective(p, plan.objective), 6))


def _objective(plan: Plan, objective: str) -> float:
    """What a cluster plan minimises, from its prediction: latency, or time per frame."""
    predicted = plan.partition.predicted if plan.partition else {}
    if objective == "latency":
        return float(predicted["latency_ms"])
    return 1000.0 / float(predicted["fps"])


@dataclass
class ClusterRun:
    """What a run measured."""

    plan: Plan
    scheduler: str
    sources: list[str]
    dilations: dict[str, float]
    results: list[FrameResult]
    wall_s: float
    workers: dict[str, dict[str, float]] = field(default_factory=dict)
    time_scale: float = 1.0  # dilations are device's x this; times below are divided by it
    # a calibration pass before the measured frames: what it measured, and the plan as priced
    # before it (``plan`` is then the plan priced from the calibration, the one that ran)
    calibration: RunCalibration | None = None
    uncalibrated: Plan | None = None
    in_flight: int = 1  # frames each source kept unanswered at most (runtime.cluster.drive)

    def _ms(self, values: Iterable[float]) -> float:
        return statistics.median(values) / self.time_scale

    @property
    def latency_ms(self) -> float:
        return self._ms(r.latency_ms for r in self.results)

    @property
    def fps(self) -> float:
        """Frames over the run's wall time: with frames in flight this counts the pipeline
        filling and draining too (a few frames: far below what it sustains)."""
        return (len(self.results) * self.time_scale / self.wall_s if self.wall_s > 0
                else float("nan"))

    @property
    def steady_fps(self) -> float:
        """Frames/s the run sustained (plan.sustained: the slope of the answers over time, the
        pipeline's filling left out). NaN with fewer than two answers or their times not
        recorded."""
        return self.time_scale * sustained_fps(r.submitted + r.latency_ms / 1000.0
                                               for r in self.results if r.submitted > 0)

    @property
    def task_overhead_ms(self) -> float:
        """The runtime's median cost per task besides compute and the medium (cropping,
        encoding, the RPC, decoding; FrameResult.task_overhead_ms). NaN when no task was
        measured."""
        values = [v for r in self.results for v in r.task_overhead_ms]
        return self._ms(values) if values else float("nan")

    @property
    def runtime_ms_per_mb(self) -> float:
        """That cost per MiB the measured tasks carried (task and result): what
        ``plan_cluster(ms_per_mb=...)`` takes. NaN when no task was measured."""
        per_mb = ms_per_mib(self.results, self.time_scale)
        return float("nan") if per_mb is None else per_mb

    @property
    def compute_vs_plan_pct(self) -> float | None:
        """How much longer the devices computed than the plan priced, over the tasks that ran
        on their planned device (``FrameResult.timeline``): the emulated hardware's drift
        (this host's CPU time per FLOP now vs when it was profiled), apart from the medium,
        the scheduling and the runtime's overhead. None for layer-wise or no such task."""
        part = self.plan.partition
        assert part is not None
        planned = {t.index: (t.device, t.compute_ms) for t in part.all_tiles()}
        pairs = [(t.compute_ms / self.time_scale, planned[t.tile][1]) for r in self.results
                 for t in r.timeline if t.tile in planned and planned[t.tile][0] == t.device]
        plan_ms = sum(p for _, p in pairs)
        return 100.0 * (sum(m for m, _ in pairs) / plan_ms - 1) if plan_ms > 0 else None

    def replayed_ms(self) -> float | None:
        """The plan's schedule model replayed with this run's compute (and, with several
        sources or frames in flight, its frames' arrivals): runtime.cluster.replay. None for
        layer-wise."""
        part = self.plan.partition
        assert part is not None
        if len(self.sources) > 1 or self.in_flight > 1:  # frames overlapped
            return replay_sources(part, self.results, self.time_scale)
        return replay_one(part, self.results, self.time_scale)

    @property
    def bytes_per_frame(self) -> float:
        return statistics.mean(r.medium_bytes for r in self.results)

    def device_work(self) -> dict[str, dict[str, float]]:
        """Per device: tasks and emulated compute per frame (mean), and its worker's memory."""
        names = sorted({d for r in self.results for d in r.tasks})
        n = max(1, len(self.results))
        out = {}
        for name in names:
            stats = self.workers.get(name, {})
            out[name] = {
                "tasks_per_frame": sum(r.tasks.get(name, 0) for r in self.results) / n,
                "compute_ms_per_frame": sum(r.compute_ms.get(name, 0.0)
                                            for r in self.results) / n / self.time_scale,
                "peak_rss_mb": stats.get("peak_rss_mb", float("nan")),
                "weights_mb": stats.get("weights_mb", float("nan")),
                # what its tasks took above the RSS after Setup, plus the weights it holds
                "task_memory_mb": stats.get("weights_mb", float("nan")) + stats.get(
                    "peak_rss_mb", float("nan")) - stats.get("setup_rss_mb", float("nan")),
                # tasks (warm-up included) the loaded host ran slower than the device would
                "overrun_tasks": stats.get("overrun_tasks", float("nan")),
                "core_wait_ms_per_task": stats.get("core_wait_ms", float("nan")) / max(
                    1.0, stats.get("tasks", 1.0)) / self.time_scale,
            }
        return out

    @property
    def emulation(self) -> dict[str, Any]:
        """How the devices were emulated, and whether this host kept up."""
        demand = sum(1.0 / (d * self.time_scale) for d in self.dilations.values())
        overruns = sum(w.get("overrun_tasks", 0.0) for w in self.workers.values())
        tasks = sum(w.get("tasks", 0.0) for w in self.workers.values())
        return {
            "how": "each device is a worker process on this host; a task is answered once its "
                   "thread-CPU time x the device's dilation (host GFLOP/s / the hardware's) "
                   "has passed, the stretch slept, so the devices need the sum of 1/dilation "
                   "of a core, not a core each; the shared Wi-Fi is one token bucket in the "
                   "gateway's process" + (
                       f"; played {self.time_scale:g}x slower (dilations and the medium), "
                       "times reported divided by that" if self.time_scale > 1 else ""),
            "time_scale": self.time_scale, "host_cores_needed": demand,
            "host_cores": os.cpu_count(), "overrun_tasks": overruns, "tasks": tasks,
            "faithful": overruns <= 0.05 * max(tasks, 1.0),
        }

    def to_json(self) -> dict[str, Any]:
        part = self.plan.partition
        # the devices the run was planned for (a calibrated plan keeps only those with a
        # worker: the ones the first plan gave work)
        planned_for = (self.uncalibrated or self.plan).partition
        assert part is not None and planned_for is not None
        return {
            "model": part.model, "method": part.method, "devices": len(planned_for.devices),
            "scheduler": self.scheduler, "sources": self.sources, "in_flight": self.in_flight,
            "latency_ms": self.latency_ms, "fps": self.fps, "steady_fps": self.steady_fps,
            "predicted_ms": part.predicted.get("latency_ms"),
            "uncalibrated_predicted_ms": (self.uncalibrated.partition.predicted.get(
                "latency_ms") if self.uncalibrated and self.uncalibrated.partition else None),
            "calibration": self.calibration.to_json() if self.calibration else None,
            "bytes_per_frame": self.bytes_per_frame,
            "peak_rss_mb": max((w.get("peak_rss_mb", 0.0) for w in self.workers.values()),
                               default=None),
            "frames": len(self.results), "dilations": self.dilations,
            "per_frame_ms": [r.latency_ms / self.time_scale for r in self.results],
            "cluster_ms": self._ms(r.cluster_ms for r in self.results),
            "rest_ms": self._ms(r.rest_ms for r in self.results),
            "predicted_cluster_ms": part.predicted.get("cluster_ms"),
            "predicted_rest_ms": part.predicted.get("rest_ms"),
            "compute_vs_plan_pct": self.compute_vs_plan_pct,
            "replayed_ms": self.replayed_ms(),
            "rest_wait_ms": self._ms(r.rest_wait_ms for r in self.results),
            "homes": sorted({r.home for r in self.results if r.home}),
            # the last frame's tasks as they ran (ms from its submission, slow motion undone)
            "timeline": [{k: (v / self.time_scale if k.endswith("_ms") else v)
                          for k, v in t.to_json().items()}
                         for t in (self.results[-1].timeline if self.results else [])],
            "stolen_per_frame": statistics.mean(r.stolen for r in self.results),
            "rerun": sum(r.rerun for r in self.results),
            "delivery_ms": self._ms(r.delivery_ms for r in self.results),
            "task_overhead_ms": self.task_overhead_ms,
            "runtime_ms_per_mb": self.runtime_ms_per_mb,
            "workers": sorted(d for d in self.dilations if has_worker(part, d)),
            "device_work": self.device_work(), "emulation": self.emulation,
        }


def run_cluster(graph: Graph, plan: Plan, profile: Profile, fleet: Fleet,
                frames: Sequence[torch.Tensor], *, scheduler: str = "stealing",
                sources: Sequence[str] | None = None, prefetch: int = 0, warmup: int = 1,
                models: tuple[str, ...] = (), timeout_s: float = 600.0,
                time_scale: float | str = 1.0, gather_at_source: bool | None = None,
                calibrate: int = 0, in_flight: int = 1) -> ClusterRun:
    """Start a worker per planned device (and edge/cloud servers if the rest goes there), run
    ``warmup`` frames, then ``frames`` from ``sources`` (the gateway by default), each source
    with up to ``in_flight`` frames unanswered (1: its next frame once the last is answered;
    more: once the last is taken, runtime.cluster.drive). Only the devices the plan gives
    work, and the data sources, get a worker: a device the optimiser left out (it would slow
    the frame, e.g. an rpi3 whose tile finishes after the others') does not steal tiles
    either. ``gather_at_source``:
    TileGateway's (where work stealing gathers a frame and runs its rest). ``calibrate`` > 0:
    after the warm-up, that many frames of dummy input run through the same workers and the
    plan is priced again from what they took (:func:`plan_calibrated`), before any measured
    frame; the run then uses the calibrated plan (a new gateway over the same workers if its
    tiles moved, and a worker started for a device it newly gives work) and predicts with
    it."""
    check_in_flight(in_flight, "in-flight frames per source")
    keep_heap()  # the gateway computes here, dilated, as the workers do (edgeweave.heap)
    part = plan.partition
    if part is None or part.method not in ("fused-tiles", "layer-wise"):
        raise EdgeWeaveError("the plan runs on one device (no multi-device partition to run); "
                             "`edgeweave infer` runs single-device plans")
    remote = any(tier != "device" for tier in plan.placement.values())
    if time_scale != "auto" and not (float(time_scale) == 1.0
                                     or (float(time_scale) > 1.0 and not remote)):
        raise EdgeWeaveError(f"time scale {time_scale}: expected 1 or more, and 1 when the "
                             "rest of the model runs on the edge or cloud (they are not "
                             "slowed down)")
    sources = list(sources or [part.gateway])
    plan = with_sources(plan, fleet, sources)  # a source the plan left out still sends frames
    part = plan.partition
    assert part is not None
    dilations = device_dilations(profile, fleet, working_devices(part, sources))
    scale = float(time_scale) if time_scale != "auto" else (
        1.0 if remote else slow_motion(dilations))
    slowed = {name: d * scale for name, d in dilations.items()}
    processes = worker_devices(part, sources)
    # the gateway computes in this process, dilated on its thread's CPU time: on one thread,
    # as the workers and the profile (intra-op threads' CPU time is not the caller's, so with
    # the host's 2 threads the gateway's compute was counted at about half)
    with torch_threads(PROFILE_THREADS), \
            (LocalLab(models=models) if remote else contextlib.nullcontext()) as edge_lab, \
            ClusterLab({d: slowed[d] for d in processes}, models=models,
                       token=edge_lab.token if edge_lab else "") as lab:
        common: dict[str, Any] = dict(token=lab.token, gateway_dilation=slowed[part.gateway],
                      edge_target=edge_lab.edge_target if edge_lab else None,
                      time_scale=scale)

        def gateway(plan: Plan) -> TileGateway | LayerGateway:
            made: TileGateway | LayerGateway = (
                TileGateway(graph, plan, scheduler=scheduler, prefetch=prefetch,
                            dilations=slowed, gather_at_source=gather_at_source, **common)
                if part.method == "fused-tiles" else LayerGateway(graph, plan, **common))
            try:
                for device, target in lab.targets.items():
                    made.join(device, target)
                for _ in range(warmup):
                    made.submit(frames[0], sources[0]).result(timeout=timeout_s)
            except BaseException:
                made.close()
                raise
            return made

        calibration, uncalibrated = None, None
        gw = gateway(plan)
        try:
            if calibrate > 0:
                # a plan priced as stealing across frames in flight is calibrated the way it
                # runs: its frames in flight, at least one dummy frame per stealer (one frame
                # at a time, three whole-frame tiles ran alone on a quiet host; resnet18's
                # 6-device stream then paid 75% more per MiB of a task than so calibrated)
                streamed = part.in_flight > 1 and bool(part.stealers)
                dummies = dummy_frames(frames[0].shape, max(calibrate, len(part.stealers))
                                       if streamed else calibrate)
                found = drive(gw, dummies, sources, timeout_s, in_flight if streamed else 1)
                calibration = calibration_of(plan, found, dilations, scale)
                uncalibrated, plan = plan, plan_calibrated(graph, profile, fleet, plan,
                                                           calibration)
                moved = plan.partition
                assert moved is not None
                for device in worker_devices(moved, sources):  # work moved to it: start it
                    if device not in lab.targets:
                        dilations.update(device_dilations(profile, fleet, [device]))
                        slowed[device] = dilations[device] * scale
                        lab.start(device, slowed[device])
                if _assignment(plan) != _assignment(uncalibrated):
                    gw.close()
                    gw = gateway(plan)
            start = time.perf_counter()
            results = drive(gw, frames, sources, timeout_s, in_flight)
            wall = time.perf_counter() - start
            workers = gw.pool.stats()
        finally:
            gw.close()
    return ClusterRun(plan, scheduler if part.method == "fused-tiles" else "layer-wise",
                      sources, dilations, results, wall, workers, scale, calibration,
                      uncalibrated, in_flight)


def _assignment(plan: Plan) -> tuple[tuple[Any, ...], ...]:
    """What a gateway was built for: its fused blocks (a calibrated plan may run one block
    instead of several), each tile's and part's device."""
    part = plan.partition
    assert part is not None
    return (tuple((s.depth, *s.grid, s.reuse) for s in part.stages())
            + tuple((t.index, t.device) for t in part.all_tiles())
            + tuple((k, d) for k, la in enumerate(part.layers) for d in la.devices))


def slow_motion(dilations: Mapping[str, float], load: float | None = None,
                cores: int | None = None) -> float:
    """The time scale that leaves a task's compute room to wait for a core: a process among
    ``load`` runnable ones on ``cores`` cores gets about cores / (load + 1) of one, so a burst
    of CPU time C takes about C (load + 1) / cores of wall time; the slowest-stretched device
    (the smallest dilation) must stretch C past three times that. 1 on an idle host."""
    load = os.getloadavg()[0] if load is None else load
    cores = cores or os.cpu_count() or 1
    need = 3.0 * (load + 1.0) / cores
    return max(1.0, float(math.ceil(need / min(dilations.values(), default=need))))


def has_worker(part: Partition, device: str) -> bool:
    """Whether ``device`` gets a worker process: every device but a layer-wise plan's gateway,
    which computes its own parts and its unsplit layers in-process (runtime.cluster.layers)
    and would send its worker nothing (it sat idle), and a fused-tile plan's gateway that
    holds no tile (``gateway_tiles`` false, DeepThings' gateway role: it directs the
    stealing, gathers, stitches and runs every frame's rest in its own process; a worker
    would steal tiles the plan gives the other devices)."""
    if device != part.gateway:
        return True
    return part.method == "fused-tiles" and part.gateway_tiles


def worker_devices(part: Partition, sources: Sequence[str]) -> list[str]:
    """The working devices (:func:`working_devices`) that get a worker process."""
    return [d for d in working_devices(part, sources) if has_worker(part, d)]


def working_devices(part: Partition, sources: Sequence[str]) -> list[str]:
    """The devices the plan gives tiles or split-layer parts, the gateway, the data sources and
    the devices a plan priced as stealing across frames in flight counts on (its
    ``stealers``), in the cluster's order."""
    used = {t.device for t in part.all_tiles()} | {d for la in part.layers for d in la.devices}
    used |= {part.gateway, *sources, *part.stealers}
    return [d for d in part.devices if d in used]
