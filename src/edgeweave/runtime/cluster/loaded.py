"""What a frame's latency is predicted to be when several frames share the cluster at once.

A plan prices one frame alone. A run whose data sources each keep frames unanswered (several
sources, or ``in_flight`` above 1) has k = sources x in flight frames in the system, and a
frame then also waits for the others': comparing its measured latency with one frame's price
read a queue as a misprediction (vgg16 on the pi-cluster, two sources, one frame each:
predicted 1467 ms, measured 2719). With a period P per frame at the busiest resource, a frame
takes k periods once the devices are saturated (Little's law, a closed loop of k frames), and
never less than alone: max(one frame's latency, k P), at 1000 / max(P, latency / k) frames/s.

P is the plan's busiest resource for its fixed assignment (the static scheduler, a layer-wise
plan, several fused blocks), or work stealing's fluid bound from the run's sources (stealing
and sharing over one fused block; plan.stealing_price, the same block priced with the same
calibration; sharing's second hop of a crop to the gateway is not in it). A frame gathered
and finished at its own source is not priced that way: it keeps one frame's price and says so.

It is a bound, and frames that stay in step exceed it: two sources that start together and
each wait for their answer keep their frames together, both in the cluster and then both in
the rest, so the stages do not overlap as Little's law lets them. Measured (vgg16 fused tiles
on the pi-cluster, rest on the edge, two sources): static priced 1870 ms (alone 1458), ran
2847; stealing priced 1463 (its fluid bound under one frame's price), ran 2772.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeweave.graph import Graph
    from edgeweave.profile import Profile
    from edgeweave.runtime.cluster.cluster_run import ClusterRun
    from edgeweave.topology import Fleet


@dataclass(frozen=True)
class LoadedPrice:
    """A frame's predicted latency with ``frames`` frames in the system."""

    frames: int  # frames in the system: the run's sources x the frames each keeps in flight
    one_frame_ms: float  # the plan's price of one frame alone
    basis: str  # how it was priced
    period_ms: float | None = None  # per frame at the busiest resource; None: one frame's

    @property
    def latency_ms(self) -> float:
        if self.period_ms is None:
            return self.one_frame_ms
        return max(self.one_frame_ms, self.frames * self.period_ms)

    @property
    def fps(self) -> float | None:
        if self.period_ms is None:
            return None
        return 1000.0 / max(self.period_ms, self.one_frame_ms / self.frames)

    def to_json(self) -> dict[str, Any]:
        return {"frames_in_system": self.frames, "predicted_one_frame_ms": self.one_frame_ms,
                "predicted_basis": self.basis, "predicted_period_ms": self.period_ms,
                "predicted_ms": self.latency_ms, "predicted_fps": self.fps}


def loaded_price(graph: Graph, profile: Profile, fleet: Fleet, run: ClusterRun,
                 at_source: bool = False) -> LoadedPrice:
    """``run``'s prediction with its frames overlapped (module docstring); ``at_source``: the
    run gathered each frame, and ran its rest, at the frame's source."""
    from edgeweave.runtime.cluster.session import plan_emulated

    part = run.plan.partition
    assert part is not None
    one = float(part.predicted["latency_ms"])
    k = len(run.sources) * run.in_flight
    if k <= 1 or at_source:
        return LoadedPrice(k, one, "one frame alone" + (
            "; not priced with the frames overlapped: each frame's rest runs at its source"
            if k > 1 else ""))
    if run.scheduler == "static" or part.method != "fused-tiles" or len(part.stages()) > 1:
        fps = run.plan.predicted.get("throughput_fps")
        if not fps:
            return LoadedPrice(k, one, "one frame alone (the plan prices no busiest resource)")
        return LoadedPrice(k, one, "k frames x the plan's busiest resource for its "
                           "assignment", 1000.0 / float(fps))
    again = plan_emulated(
        graph, profile, fleet, methods=("fused-tiles",), depth=part.fused_depth,
        grid=tuple(part.grid) if part.grid else None, reuse=part.reuse, max_blocks=1,
        objective="throughput", in_flight=k, sources=run.sources,
        calibration=run.calibration, devices=list(part.devices),
        ms_per_mb=float(part.search.get("task_overhead", {}).get("runtime_ms_per_mb") or 0.0),
        input_codec=part.input_codec, result_codec=part.result_codec)
    assert again.partition is not None
    return LoadedPrice(k, one, "k frames x work stealing's fluid bound from the run's sources "
                       "(plan.stealing_price)",
                       float(again.partition.predicted["stealing_period_ms"]))
