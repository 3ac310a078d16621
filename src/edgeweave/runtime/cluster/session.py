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
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from edgeweave.errors import EdgeWeaveError
from edgeweave.graph import Graph
from edgeweave.heap import keep_heap
from edgeweave.plan import Plan, plan_cluster
from edgeweave.plan.run_calibration import RunCalibration
from edgeweave.profile import Profile
from edgeweave.profile.measure import PROFILE_THREADS, torch_threads
from edgeweave.runtime.cluster.calibrate import calibration_of, dummy_frames
from edgeweave.runtime.cluster.cluster_run import (
    ClusterRun,
    worker_devices,
    working_devices,
)
from edgeweave.runtime.cluster.drive import check_in_flight, drive, with_sources
from edgeweave.runtime.cluster.gateway import TileGateway
from edgeweave.runtime.cluster.lab import ClusterLab, device_dilations
from edgeweave.runtime.cluster.layers import LayerGateway
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
    fused depth, grid, reuse, codecs, layer split, devices and objective, each tile's device,
    and a layer-wise split's rows and steps, chosen again at the calibrated prices. The
    runtime's cost per MiB a task carries is the calibration's when it measured one, else the
    plan's own (dropping it priced a layer-wise plan's 21 scatter/gathers of vgg16 as free).

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
        in_flight=part.in_flight if part.scheduler == "stealing" else None,
        sources=part.sources or None)
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
    tiles, a split layer's rows or its steps moved: :func:`assignment`, and a worker started
    for a device it newly gives work) and predicts with it."""
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
                if assignment(plan) != assignment(uncalibrated):
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
                      uncalibrated, in_flight, prefetch, bool(gather_at_source))


def assignment(plan: Plan) -> tuple[tuple[Any, ...], ...]:
    """What a gateway was built for: its fused blocks (a calibrated plan may run one block
    instead of several), each tile's device; each split layer's grid lines and part devices,
    and its steps (the calibrated prices move a layer-wise split's rows toward the devices
    that ran faster, and cut other parts into interior and edges: vgg16 on 4 emulated Pis, one
    layer's rows 14/14/14/14 became 10/15/15/16 and 125 steps 115, which the gateway built for
    the first plan did not run)."""
    part = plan.partition
    assert part is not None
    return (tuple((s.depth, *s.grid, s.reuse) for s in part.stages())
            + tuple((t.index, t.device) for t in part.all_tiles())
            + tuple((k, tuple(la.devices), tuple(la.row_bounds), tuple(la.col_bounds),
                     tuple((s.part, s.device, tuple(s.rows)) for s in la.steps))
                    for k, la in enumerate(part.layers)))


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
