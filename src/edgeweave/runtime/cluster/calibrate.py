"""What a run's calibration pass measured, as the plan side's :class:`RunCalibration`.

Before the measured frames, :func:`~edgeweave.runtime.cluster.session.run_cluster` can run a
few frames of dummy input through the same workers (same processes, dilations and time scale,
on this host's load at that moment) and re-price the plan from what they took
(plan.run_calibration says why). This module reads those frames: each fused tile's emulated
compute against the plan's price of that tile on the device that ran it, each frame's rest
against the plan's rest, and the runtime's cost per MiB of the tasks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from edgeweave.plan import Plan
from edgeweave.plan.run_calibration import RunCalibration, fit_calibration
from edgeweave.runtime.cluster.frames import FrameResult


def dummy_frames(shape: Sequence[int], n: int, seed: int = 1234) -> list[torch.Tensor]:
    """``n`` random frames (not the frames a run measures)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(tuple(shape), generator=g) for _ in range(n)]


def calibration_of(plan: Plan, results: Sequence[FrameResult], dilations: Mapping[str, float],
                   time_scale: float = 1.0) -> RunCalibration:
    """The calibration ``results`` (frames run under ``plan``) measured. A tile that ran on
    another device than planned is priced there as its planned price times the two devices'
    dilation ratio (the profile scales a layer's latency by the same GFLOP/s ratio); a task
    the gateway ran itself (no device left) is not counted; a device of the plan that ran
    nothing gets the drift of all of them (plan.run_calibration). A layer-wise plan: each device's
    compute in a frame against its parts' prices, the gateway's with the layers it runs
    itself between the split ones (priced at its own speed too)."""
    part = plan.partition
    assert part is not None
    tasks: list[tuple[int, str, float, float]] = []
    if part.method == "fused-tiles":
        planned = {t.index: t for t in part.all_tiles()}
        for k, r in enumerate(results):
            for t in r.timeline:
                tile = planned.get(t.tile)
                if tile is None or t.device not in dilations or tile.device not in dilations:
                    continue
                price = tile.compute_ms * dilations[t.device] / dilations[tile.device]
                tasks.append((k, t.device, price, t.compute_ms / time_scale))
    else:  # layer-wise: each device's parts, and the gateway's own layers between them
        per_device: dict[str, float] = {}
        for la in part.layers:
            for device, ms in zip(la.devices, la.compute_ms, strict=True):
                per_device[device] = per_device.get(device, 0.0) + ms
        own = float(part.predicted.get("cluster_ms") or 0.0) - sum(
            la.makespan_ms for la in part.layers)
        per_device[part.gateway] = per_device.get(part.gateway, 0.0) + max(0.0, own)
        tasks = [(k, d, ms, r.compute_ms.get(d, float("nan")) / time_scale)
                 for k, r in enumerate(results) for d, ms in per_device.items()]
    rest_ms = float(part.predicted.get("rest_ms") or 0.0)
    rests = ([(rest_ms, r.rest_ms / time_scale) for r in results]
             if part.rest_mode == "device-only" else [])
    return fit_calibration(tasks, part.devices, rests, ms_per_mib(results, time_scale),
                           len(results))


def ms_per_mib(results: Sequence[FrameResult], time_scale: float = 1.0) -> float | None:
    """The runtime's cost per MiB its tasks carried (task and result: cropping, encoding, the
    RPC, decoding), in emulated ms: what ``plan_cluster(ms_per_mb=...)`` takes. None when no
    task was measured."""
    ms = sum(v for r in results for v in r.task_overhead_ms)
    mib = sum(b for r in results for b in r.task_overhead_bytes) / 2**20
    return ms / mib / time_scale if mib > 0 else None
