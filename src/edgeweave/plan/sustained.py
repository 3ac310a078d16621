"""The frames/s a stream sustained, from its answers' times: one definition for the runtime's
runs (``ClusterRun.steady_fps``) and the simulator's replays (``sim.stream``), so that a run,
its replay and the plan's predicted frames/s are compared alike.

It is the slope of the answers counted against their time (a least-squares line through the
cumulative count), so the pipeline's filling before the first answer is left out (what a
plan's busiest resource prices). A slope and not answers-after-the-first over first-to-last:
devices that answer frames in bunches (two devices, a frame each: pairs) put a whole bunch but
the first answer inside that window, which overstates the rate by up to one bunch per window
(+17% for 8 frames in pairs); the slope of a staircase is its true rate.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable


def sustained_fps(ends: Iterable[float]) -> float:
    """Answers per second over ``ends`` (the answers' times, in seconds, any order); NaN with
    fewer than two answers or all at one instant."""
    times = sorted(ends)
    if len(times) < 2 or times[-1] <= times[0]:
        return math.nan
    return statistics.linear_regression(times, range(1, len(times) + 1))[0]
