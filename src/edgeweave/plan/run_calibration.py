"""A cluster plan re-priced from what its devices computed in a short calibration pass.

A plan is priced from the profile: every layer's latency on this host, scaled to each device's
hardware, plus the per-call cost of a tile (profile.tile_calibration). On an emulated cluster
the devices then run slower than that: each worker's thread-CPU time per FLOP drifts with the
host's load and with how many workers share its cores (vgg16 at load 2 on this 2-core host:
+29% on one device, +53% on four), and the gateway's rest of the model drifts on its own. A
plan priced from the profile alone missed the measured latency by 25-50% while its own schedule
replayed with the measured compute matched within 3%: the schedule was right, the prices were
not.

So a run can calibrate first: the workers, with their dilation, on this host's load, compute a
few frames of dummy input under the plan (not the frames then measured), and
:func:`fit_calibration` turns what they took into one factor per device (measured compute over
the plan's price for the same tiles on the same devices) and one for the rest on the gateway,
plus the runtime's cost per MiB a task carried. ``plan_cluster(calibration=...)`` prices the
plan again with those: every layer latency and call cost of a device times its factor, the
rest's gateway compute times its factor. What this cannot know: a drift that changes between
the calibration and the measured frames (the host's load moving), and which device a stolen
tile runs on.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from edgeweave.errors import PlanError


@dataclass(frozen=True)
class RunCalibration:
    """Per device, how much longer its tasks ran than priced (1: as priced); the rest on the
    gateway likewise; the runtime's cost per MiB a task carries (None: not measured)."""

    compute_scale: dict[str, float] = field(default_factory=dict)
    rest_scale: float = 1.0
    ms_per_mb: float | None = None
    frames: int = 0
    tasks: int = 0

    def __post_init__(self) -> None:
        bad = {n: k for n, k in self.compute_scale.items() if not 0 < k < float("inf")}
        if bad or not 0 < self.rest_scale < float("inf"):
            raise PlanError(f"a calibration's factors must be positive numbers, got compute "
                            f"{bad or self.compute_scale} and rest {self.rest_scale}")
        if self.ms_per_mb is not None and not self.ms_per_mb >= 0:
            raise PlanError(f"a calibration's cost per MiB must be >= 0, got {self.ms_per_mb}")

    def to_json(self) -> dict[str, Any]:
        return {"compute_scale": dict(self.compute_scale), "rest_scale": self.rest_scale,
                "runtime_ms_per_mb": self.ms_per_mb, "frames": self.frames,
                "tasks": self.tasks}


def fit_calibration(tasks: Iterable[tuple[int, str, float, float]], devices: Iterable[str],
                    rest: Iterable[tuple[float, float]] = (), ms_per_mb: float | None = None,
                    frames: int = 0) -> RunCalibration:
    """``tasks``: (frame, device, priced ms, measured ms) of every task the calibration ran;
    ``rest``: (priced ms, measured ms) of each frame's rest on the gateway. A device's factor
    is the median over frames of its measured total over its priced total in that frame (a
    frame the host stalled does not decide it); a device in ``devices`` that ran nothing gets
    the median over every device's frames (the host's drift is shared); the rest's factor is
    the median frame's. A measurement of 0 or NaN is not counted."""
    priced: dict[tuple[str, int], float] = {}
    measured: dict[tuple[str, int], float] = {}
    count = 0
    for frame, device, price, took in tasks:
        if price > 0 and took > 0:  # not NaN, not a device that reported nothing
            key = (device, frame)
            priced[key] = priced.get(key, 0.0) + price
            measured[key] = measured.get(key, 0.0) + took
            count += 1
    ratios: dict[str, list[float]] = {}
    for (device, frame), price in priced.items():
        ratios.setdefault(device, []).append(measured[(device, frame)] / price)
    every = [k for values in ratios.values() for k in values]
    overall = statistics.median(every) if every else 1.0
    scale = {d: statistics.median(ratios[d]) if d in ratios else overall for d in devices}
    rests = [took / price for price, took in rest if price > 0 and took > 0]
    return RunCalibration({d: k for d, k in scale.items() if k > 0},
                          statistics.median(rests) if rests else 1.0,
                          ms_per_mb if ms_per_mb is None or ms_per_mb == ms_per_mb else None,
                          frames, count)
