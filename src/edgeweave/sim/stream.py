"""A partition's plan replayed as a stream: k frames in flight on one cluster for n frames.

What the runtime's pipelined runs measure (`runtime.cluster.drive`: a source keeps up to k
frames unanswered and, as DeepThings' sources do, sends its next frame only once every tile
of its last was handed out, so frames wait in the source rather than in the queues) and what
a throughput plan prices (its busiest resource; for a plan priced as work stealing,
`plan.stealing_price`'s fluid bound). The replay sits between the two: the same frames
(`sim.cluster.frame_of`, their tiles stolen by whichever stealer is free for a
stealing-priced plan, `sim.stealing`) queue on the same shared medium and devices, with each
frame's rest after its cluster part on the gateway's processor (the one its tiles use) and
then on whatever runs beyond the gateway, as one first-come first-served stage. No jitter
and no runtime costs besides the plan's: where the replay and a run disagree the plan's
model of the devices is wrong; where the replay and the price disagree the price's fluid
bound is not what the queues of whole tiles sustain.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from heapq import heappop, heappush
from itertools import count
from typing import Any

from edgeweave.errors import SimError
from edgeweave.plan.partition import Partition
from edgeweave.plan.sustained import sustained_fps
from edgeweave.sim.cluster import GATEWAY, ClusterState, Frame, FrameRun, frame_of
from edgeweave.sim.links import LinkQueue
from edgeweave.topology import Link


@dataclass(frozen=True)
class StreamReplay:
    """What a replayed stream sustained."""

    fps: float  # sustained: the slope of the answers over time (ClusterRun.steady_fps's)
    median_ms: float  # a frame's latency, sent to answered (ClusterRun.latency_ms's)
    latencies_ms: tuple[float, ...]  # every frame's, in the order they were sent
    tasks: dict[str, int]  # tasks each device ran (tiles, or layer-wise parts)
    stealing: bool  # the tiles went to whichever stealer took them (else their planned device)


def rest_of(part: Partition) -> tuple[float, float]:
    """A frame's rest in ms: on the gateway, and the slowest stage beyond it. A stealing
    plan says both (``stealing_rest_ms``); otherwise the rest's whole time (``rest_ms``) is
    the gateway's when the rest runs on it (``device-only``), else counted as the stage
    beyond it (how the gateway and the hops split it is not in the partition)."""
    got = part.predicted.get("stealing_rest_ms")
    if isinstance(got, dict) and "gateway" in got and "other" in got:
        return float(got["gateway"]), float(got["other"])
    rest = float(part.predicted.get("rest_ms") or 0.0)
    return (rest, 0.0) if part.rest_mode == "device-only" else (0.0, rest)


def replay_stream(part: Partition, frames: int, in_flight: int | None = None) -> StreamReplay:
    """``frames`` frames through ``part``'s cluster, ``in_flight`` unanswered at most (None:
    the partition's own ``in_flight``). SimError when the plan has no cluster part to replay
    (method ``single``) or the counts are not whole numbers >= 1."""
    k = part.in_flight if in_flight is None else in_flight
    for name, value in (("frames", frames), ("in_flight", k)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SimError(f"a replayed stream's {name} must be a whole number >= 1, got "
                           f"{value!r}")
    frame = frame_of(part)
    if frame is None:
        raise SimError(f"a replayed stream: plan of {part.model!r} runs on the gateway alone "
                       "(partition method 'single'): there is no cluster part to replay")
    gateway_ms, other_ms = rest_of(part)
    host = _StreamHost(frame, gateway_ms / 1000.0, other_ms / 1000.0, frames, k)
    host.more(0.0)
    host.run()
    # the runtime's own measure (`ClusterRun.steady_fps`), so that a run and its replay are
    # compared alike (answers after the first over first-to-last counted a prefetch's late
    # first answer as speed: 8% over the price, resnet18's 12-frame stream on one rpi4)
    fps = sustained_fps(host.answered)
    latencies = tuple(1000.0 * (a - s) for s, a in zip(host.sent, host.answered, strict=True))
    names = (part.gateway, *frame.helpers)
    steal = host.cluster.steal
    if steal is not None:
        tasks = {names[d]: steal.ran[d] for d in frame.stealers}
    else:
        tasks = dict.fromkeys(names, 0)
        for group in frame.groups:
            for t in group:
                tasks[names[t.device]] += frames
    return StreamReplay(fps, statistics.median(latencies), latencies, tasks, steal is not None)


class _StreamHost:
    """The little the frames need (`sim.cluster.ClusterHost`): an event loop, the gateway's
    processor first come first served, one cluster; and the stream: the rest after each
    frame's cluster part, the next frame sent once the last is taken (every tile of a
    stealing frame handed out; any other frame's at once, as the runtime's static scheduler
    pushes them) and fewer than ``in_flight`` are unanswered."""

    def __init__(self, frame: Frame, rest_s: float, other_s: float, frames: int,
                 in_flight: int) -> None:
        self.frame, self.rest_s, self.other_s, self.frames = frame, rest_s, other_s, frames
        self.in_flight = in_flight
        self._open = 0  # frames sent and not answered
        self._taken = True  # the last frame sent was taken
        self.now = 0.0
        self._events: list[tuple[float, int, Callable[[Any], None], Any]] = []
        self._seq = count()
        self._free = 0.0  # the gateway's processor
        self._other_free = 0.0  # the stage beyond the gateway
        medium = Link.model_validate({"from": "gateway", "to": "medium",
                                      "mbps": frame.medium_mbps, "rtt_ms": frame.medium_rtt_ms})
        self.cluster = ClusterState(LinkQueue(medium, "stream"), len(frame.helpers))
        self.sent: list[float] = []
        self.answered: list[float] = []

    # ---- sim.cluster.ClusterHost ----------------------------------------------------------

    def call_at(self, t: float, fn: Callable[[Any], None], arg: Any) -> None:
        heappush(self._events, (t, next(self._seq), fn, arg))

    def gateway_compute(self, dev: int, now: float, seconds: float) -> float:
        self._free = max(self._free, now) + seconds
        return self._free

    def gateway_free(self, dev: int) -> float:
        return self._free

    def cluster_of(self, dev: int, frame: Frame) -> ClusterState:
        return self.cluster

    def framed(self, job: Any, start: float, end: float) -> None:  # pragma: no cover
        raise AssertionError("a stream's frames call back their own `done`")

    # ---- the stream -----------------------------------------------------------------------

    def more(self, now: float) -> None:
        """Send frames while the source may (the class docstring)."""
        while self._taken and self._open < self.in_flight and len(self.sent) < self.frames:
            j = len(self.sent)
            self.sent.append(now)
            self.answered.append(math.nan)
            self._open += 1
            run = FrameRun(self, GATEWAY, self.frame, partial(self._clustered, j))
            if self.cluster.steal is not None:
                self.cluster.steal.rest_s = self.rest_s  # the gateway's backlog per frame
            if self.frame.stealers:
                self._taken = False
                # told from inside the queue's hand-out: the next frame enters after it
                run.taken = self._taken_at
            run.start(now)

    def _taken_at(self, now: float) -> None:
        self.call_at(now, self._on_taken, now)

    def _on_taken(self, now: float) -> None:
        self._taken = True
        self.more(now)

    def _clustered(self, j: int, end: float) -> None:
        done = self.gateway_compute(GATEWAY, end, self.rest_s) if self.rest_s > 0 else end
        if self.other_s > 0:
            done = self._other_free = max(self._other_free, done) + self.other_s
        self.call_at(done, self._answer, j)

    def _answer(self, j: int) -> None:
        self.answered[j] = self.now
        self._open -= 1
        self.more(self.now)

    def run(self) -> None:
        while self._events:
            t, _, fn, arg = heappop(self._events)
            self.now = t
            fn(arg)
