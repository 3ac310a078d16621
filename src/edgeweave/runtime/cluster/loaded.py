"""What a frame's latency is predicted to be when several frames share the cluster at once.

A plan prices one frame alone. A run whose data sources each keep frames unanswered (several
sources, or ``in_flight`` above 1) has k = sources x in flight frames in the system, and a
frame then also waits for the others': comparing its measured latency with one frame's price
read a queue as a misprediction (vgg16 on the pi-cluster, two sources, one frame each:
predicted 1467 ms, measured 2719).

* A fused-tile run is forecast: its frames replayed on a simulated clock by the runtime's own
  scheduler (:mod:`~edgeweave.runtime.cluster.forecast`), with the run's sources, frames in
  flight, scheduler, prefetch and calibration. The bound this module gave before, the larger
  of one frame alone and k periods of the busiest resource (Little's law over a closed loop
  of k frames), was 35-50% short: frames that start together stay in step (both in the
  cluster, then both waiting for the rest), and stealing's first-to-finish test gave the two
  rpi3 of the pi-cluster no tile where the fluid bound gave them 0.65 a frame each. vgg16,
  two sources: stealing bound 1462 ms, forecast 2750, measured 2679; static bound 2018,
  forecast 2983, measured 2910.
* A layer-wise plan keeps that bound, k periods of its busiest resource: its frames come from
  the gateway alone, one split layer after another (runtime.cluster.layers), which the
  forecast does not replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeweave.graph import Graph
    from edgeweave.runtime.cluster.cluster_run import ClusterRun
    from edgeweave.runtime.cluster.forecast import Forecast


@dataclass(frozen=True)
class LoadedPrice:
    """A frame's predicted latency with ``frames`` frames in the system."""

    frames: int  # frames in the system: the run's sources x the frames each keeps in flight
    one_frame_ms: float  # the plan's price of one frame alone
    basis: str  # how it was priced
    period_ms: float | None = None  # per frame at the busiest resource (a layer-wise bound)
    forecast: Forecast | None = None  # a fused-tile run replayed (runtime.cluster.forecast)

    @property
    def latency_ms(self) -> float:
        if self.forecast is not None:
            return self.forecast.latency_ms
        if self.period_ms is None:
            return self.one_frame_ms
        return max(self.one_frame_ms, self.frames * self.period_ms)

    @property
    def fps(self) -> float | None:
        if self.forecast is not None:
            return self.forecast.fps if self.forecast.fps == self.forecast.fps else None
        if self.period_ms is None:
            return None
        return 1000.0 / max(self.period_ms, self.one_frame_ms / self.frames)

    def to_json(self) -> dict[str, Any]:
        return {"frames_in_system": self.frames, "predicted_one_frame_ms": self.one_frame_ms,
                "predicted_basis": self.basis, "predicted_period_ms": self.period_ms,
                "predicted_ms": self.latency_ms, "predicted_fps": self.fps,
                "predicted_tasks_per_frame": (self.forecast.tasks_per_frame
                                              if self.forecast else None)}


def loaded_price(graph: Graph, run: ClusterRun) -> LoadedPrice:
    """``run``'s prediction with its frames overlapped (module docstring)."""
    part = run.plan.partition
    assert part is not None
    one = float(part.predicted["latency_ms"])
    k = len(run.sources) * run.in_flight
    if k <= 1:
        return LoadedPrice(k, one, "one frame alone")
    if part.method == "fused-tiles":
        return LoadedPrice(k, one, f"{k} frames replayed by the run's {run.scheduler} "
                           "scheduler on a simulated clock (runtime.cluster.forecast)",
                           forecast=forecast_run(graph, run))
    fps = run.plan.predicted.get("throughput_fps")
    if not fps:
        return LoadedPrice(k, one, "one frame alone (the plan prices no busiest resource)")
    return LoadedPrice(k, one, "k frames x the plan's busiest resource for its assignment",
                       1000.0 / float(fps))


def forecast_run(graph: Graph, run: ClusterRun, frames: int | None = None) -> Forecast:
    """A fused-tile run's frames (as many as it measured, or ``frames``) forecast with its
    sources, scheduler, prefetch, dilations and calibration (runtime.cluster.forecast)."""
    from edgeweave.plan.medium_codecs import ratios
    from edgeweave.runtime.cluster.cluster_run import worker_devices
    from edgeweave.runtime.cluster.forecast import forecast
    from edgeweave.runtime.cluster.stages import GatewayStages

    plan = run.plan
    part = plan.partition
    assert part is not None and part.method == "fused-tiles"
    scale = run.calibration.compute_scale if run.calibration else {}
    dilations = dict(run.dilations)
    rates = {d: x * scale.get(d, 1.0) for d, x in dilations.items()}
    stages = GatewayStages(graph, part, *ratios(graph, part.input_codec, part.result_codec),
                           dilations)
    remote = any(tier != "device" for tier in plan.placement.values())
    rest = float(part.predicted.get("rest_ms") or 0.0)
    on_gateway = dilations.get(part.gateway, 1.0)
    # a rest gathered at a source runs there, dilated to its hardware (runtime.cluster.gateway)
    rest_ms = {d: rest * x / on_gateway for d, x in dilations.items()} | {part.gateway: rest}
    per_mb = float(part.search.get("task_overhead", {}).get("runtime_ms_per_mb") or 0.0)
    return forecast(stages, part, scheduler=run.scheduler, sources=run.sources,
                    in_flight=run.in_flight, frames=frames or max(len(run.results), 1),
                    rates=rates, workers=worker_devices(part, run.sources), rest_ms=rest_ms,
                    ms_per_mb=per_mb, at_source=run.gather_at_source and not remote,
                    prefetch=run.prefetch, rest_remote=remote)
