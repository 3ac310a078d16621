"""What one run of a cluster plan measured (:func:`~edgeweave.runtime.cluster.session.run_cluster`)
and which of the plan's devices it starts a worker for.

Latencies are medians over the measured frames, in the emulated devices' time (divided by the
run's slow-motion factor); frames/s is the slope of the answers over time
(:func:`~edgeweave.plan.sustained.sustained_fps`), which a bunch of answers arriving together
does not overstate.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgeweave.plan import Plan
from edgeweave.plan.partition import Partition
from edgeweave.plan.run_calibration import RunCalibration
from edgeweave.plan.sustained import sustained_fps
from edgeweave.runtime.cluster.calibrate import ms_per_mib
from edgeweave.runtime.cluster.frames import FrameResult
from edgeweave.runtime.cluster.replay import replay_one, replay_sources


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
    prefetch: int = 0  # tasks a device held beyond the one it ran (runtime.cluster.scheduler)
    gather_at_source: bool = False  # work stealing gathered each frame at its source

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
    def task_codec_ms(self) -> float:
        """Of that cost, the median a device spent decoding a task and encoding its result
        (emulated: the worker's dilated codec work; FrameResult.task_codec_ms). The rest of
        it is the RPC over loopback, the gateway's encoding and decoding and the hand-offs
        between threads. NaN when no task was measured."""
        values = [v for r in self.results for v in r.task_codec_ms]
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
            "prefetch": self.prefetch, "gather_at_source": self.gather_at_source,
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
            "task_codec_ms": self.task_codec_ms,
            "runtime_ms_per_mb": self.runtime_ms_per_mb,
            "workers": sorted(d for d in self.dilations if has_worker(part, d)),
            "device_work": self.device_work(), "emulation": self.emulation,
        }


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
