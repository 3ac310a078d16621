"""One run of a cluster plan on local processes, as `edgeweave distribute` and the benchmark do.

Only this host is real, so the cluster is emulated as the device-edge-cloud runtime is
(:mod:`edgeweave.runtime.session`): each device is a worker process dilated to its hardware
(host GFLOP/s recorded with the profile / the device's), the shared Wi-Fi is one shaped link in
the gateway, and edge and cloud (if the plan sends the rest there) are local node servers at
this host's speed; the plan is made for exactly that fleet (:func:`plan_emulated`), so predicted
and measured compare like with like.

Frames come from data sources (cluster devices): each keeps one frame in flight (a camera
sending its next frame once the last is answered), so one source measures latency and several
measure throughput.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from edgeweave.errors import EdgeWeaveError
from edgeweave.graph import Graph
from edgeweave.plan import Plan, plan_cluster
from edgeweave.profile import Profile
from edgeweave.runtime.cluster.gateway import FrameResult, TileGateway
from edgeweave.runtime.cluster.lab import ClusterLab, device_dilations
from edgeweave.runtime.cluster.layers import LayerGateway
from edgeweave.runtime.lab import LocalLab
from edgeweave.runtime.session import emulated_fleet
from edgeweave.topology import Fleet


def plan_emulated(graph: Graph, profile: Profile, fleet: Fleet, **options: Any) -> Plan:
    """``plan_cluster`` for the fleet as the lab runs it (edge and cloud at this host's
    speed); ``options`` are plan_cluster's."""
    return plan_cluster(graph, profile, emulated_fleet(fleet, profile), **options)


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

    @property
    def latency_ms(self) -> float:
        return statistics.median(r.latency_ms for r in self.results)

    @property
    def fps(self) -> float:
        return len(self.results) / self.wall_s if self.wall_s > 0 else float("nan")

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
                                            for r in self.results) / n,
                "peak_rss_mb": stats.get("peak_rss_mb", float("nan")),
                "weights_mb": stats.get("weights_mb", float("nan")),
                # what its tasks took above the RSS after Setup, plus the weights it holds
                "task_memory_mb": stats.get("weights_mb", float("nan")) + stats.get(
                    "peak_rss_mb", float("nan")) - stats.get("setup_rss_mb", float("nan")),
            }
        return out

    def to_json(self) -> dict[str, Any]:
        part = self.plan.partition
        assert part is not None
        return {
            "model": part.model, "method": part.method, "devices": len(part.devices),
            "scheduler": self.scheduler, "sources": self.sources,
            "latency_ms": self.latency_ms, "fps": self.fps,
            "predicted_ms": part.predicted.get("latency_ms"),
            "bytes_per_frame": self.bytes_per_frame,
            "peak_rss_mb": max((w.get("peak_rss_mb", 0.0) for w in self.workers.values()),
                               default=None),
            "frames": len(self.results), "dilations": self.dilations,
            "per_frame_ms": [r.latency_ms for r in self.results],
            "cluster_ms": statistics.median(r.cluster_ms for r in self.results),
            "rest_ms": statistics.median(r.rest_ms for r in self.results),
            "stolen_per_frame": statistics.mean(r.stolen for r in self.results),
            "rerun": sum(r.rerun for r in self.results),
            "device_work": self.device_work(),
        }


def run_cluster(graph: Graph, plan: Plan, profile: Profile, fleet: Fleet,
                frames: Sequence[torch.Tensor], *, scheduler: str = "stealing",
                sources: Sequence[str] | None = None, prefetch: int = 0, warmup: int = 1,
                models: tuple[str, ...] = (), timeout_s: float = 600.0) -> ClusterRun:
    """Start a worker per planned device (and edge/cloud servers if the rest goes there), run
    ``warmup`` frames, then ``frames`` from ``sources`` (the gateway by default), each source
    with one frame in flight."""
    part = plan.partition
    if part is None or part.method not in ("fused-tiles", "layer-wise"):
        raise EdgeWeaveError("the plan runs on one device (no multi-device partition to run); "
                             "`edgeweave infer` runs single-device plans")
    sources = list(sources or [part.gateway])
    dilations = device_dilations(profile, fleet, part.devices)
    remote = any(tier != "device" for tier in plan.placement.values())
    with (LocalLab(models=models) if remote else contextlib.nullcontext()) as edge_lab, \
            ClusterLab(dict(dilations), models=models,
                       token=edge_lab.token if edge_lab else "") as lab:
        common = dict(token=lab.token, gateway_dilation=dilations[part.gateway],
                      edge_target=edge_lab.edge_target if edge_lab else None)
        if part.method == "fused-tiles":
            gw: TileGateway | LayerGateway = TileGateway(graph, plan, scheduler=scheduler,
                                                         prefetch=prefetch, **common)
        else:
            gw = LayerGateway(graph, plan, **common)
        try:
            for device, target in lab.targets.items():
                gw.join(device, target)
            for _ in range(warmup):
                gw.submit(frames[0], sources[0]).result(timeout=timeout_s)
            start = time.perf_counter()
            results = _drive(gw, frames, sources, timeout_s)
            wall = time.perf_counter() - start
            workers = gw.pool.stats()
        finally:
            gw.close()
    return ClusterRun(plan, scheduler if part.method == "fused-tiles" else "layer-wise",
                      sources, dilations, results, wall, workers)


def _drive(gw: TileGateway | LayerGateway, frames: Sequence[torch.Tensor],
           sources: Sequence[str], timeout_s: float) -> list[FrameResult]:
    """Frames dealt round-robin to the sources; each source sends its next frame when its
    last is answered."""
    mine = {s: [x for k, x in enumerate(frames) if k % len(sources) == i]
            for i, s in enumerate(sources)}
    results: list[FrameResult] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def source(name: str) -> None:
        try:
            for x in mine[name]:
                result = gw.submit(x, name).result(timeout=timeout_s)
                with lock:
                    results.append(result)
        except BaseException as e:  # raised in the caller below
            errors.append(e)

    threads = [threading.Thread(target=source, args=(s,), daemon=True) for s in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results
