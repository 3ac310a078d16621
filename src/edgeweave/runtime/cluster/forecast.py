"""A fused-tile run's frames forecast on a simulated clock, chosen by the runtime's own scheduler.

A plan prices one frame alone, on its static assignment (plan.medium). With several data
sources, or frames in flight, what a frame waits for depends on the scheduler's choices and on
how the sources' frames fall in with each other, which no closed formula had right: two
sources that start together and each wait for their answer keep their frames in step, both in
the cluster, then both waiting for the rest, so the stages do not overlap (vgg16 on the
pi-cluster, two sources: a bound of k frames x the busiest resource said 1463 ms, the run took
2679-2847); and work stealing's first-to-finish test gave the two rpi3 no tile where a fluid
bound gave them 0.65 a frame each.

So the forecast replays the run event by event: the same :mod:`~edgeweave.runtime.cluster.
scheduler` objects (stealing, sharing or static, their :class:`~edgeweave.runtime.cluster.
scheduler.Pace` on the simulated clock), asked at the same moments the gateway asks them (a
device ready, a result in), with the gateway's rules around them:

* sources deal the frames round-robin, each sending its next once its last is taken and fewer
  than ``in_flight`` of its frames are unanswered (runtime.cluster.drive);
* a task's bytes take the shared medium (one transfer at a time, in the order requested,
  arriving half a round trip later: plan.medium's model) from where its crop is (the frame's
  source; the gateway under work sharing, after the source relayed it; where the frame is
  gathered for a later block), its reused pieces from and its result back to where the frame
  is gathered (runtime.cluster.routing);
* a device holds ``1 + prefetch`` tasks until their results are in, runs them one at a time, at
  the plan's compute for the tile scaled by the device's pace over the planned device's
  (its dilation times the run's calibrated compute scale), plus the runtime's cost per MiB the
  task carries;
* a stitched frame's rest runs where it is gathered, one frame at a time, once that device has
  finished the tiles it holds, and the device takes no tile meanwhile (runtime.cluster.rest).

What it leaves out: the host's own noise, a device's warm-up, and a rest forwarded to the edge
is the plan's rest time, whatever else the edge serves.
"""

from __future__ import annotations

import heapq
import statistics
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import count

from edgeweave.plan.partition import Partition
from edgeweave.plan.sustained import sustained_fps
from edgeweave.runtime.cluster.medium import SharedMedium
from edgeweave.runtime.cluster.routing import TaskRoutes
from edgeweave.runtime.cluster.scheduler import Job, Stealing, make_scheduler
from edgeweave.runtime.cluster.stages import GatewayStages
from edgeweave.topology import serialize_ms

MIB = 2**20


@dataclass(frozen=True)
class Forecast:
    """What the simulated run gave: the median frame's latency, the frames/s its answers
    sustained, and each device's tiles per frame."""

    latency_ms: float
    fps: float
    frames: int
    tasks_per_frame: dict[str, float]


@dataclass
class _Frame:
    id: int
    source: str
    home: str
    arrived: float
    done: set[int] = field(default_factory=set)
    level0: set[int] = field(default_factory=set)
    handed: set[int] = field(default_factory=set)
    at_gateway: dict[int, float] = field(default_factory=dict)
    taken: bool = False
    resting: bool = False  # its rest started
    answered: float | None = None


class _Medium:
    """One transfer at a time, in the order requested; each arrives half a round trip after it
    leaves the air."""

    def __init__(self, mbps: float, rtt_ms: float, at: Callable[[float, Callable[[], None]],
                                                                 None]):
        self.mbps, self.rtt_ms, self.at = mbps, rtt_ms, at
        self.free_at = 0.0

    def send(self, now: float, nbytes: int, then: Callable[[], None]) -> float:
        """``then`` once ``nbytes`` arrived (at once for none); returns when that is."""
        if nbytes <= 0:
            self.at(now, then)
            return now
        start = max(now, self.free_at)
        self.free_at = start + serialize_ms(nbytes, self.mbps)
        arrive = self.free_at + self.rtt_ms / 2
        self.at(arrive, then)
        return arrive


class _Run:
    def __init__(self, stages: GatewayStages, part: Partition, scheduler: str,
                 sources: Sequence[str], in_flight: int, frames: int,
                 rates: Mapping[str, float], workers: Sequence[str],
                 rest_ms: Mapping[str, float], ms_per_mb: float, at_source: bool,
                 prefetch: int, rest_remote: bool):
        self.stages, self.part = stages, part
        self.gateway = part.gateway
        self.rates = rates
        self.planned = {t.index: t for t in part.all_tiles()}
        self.rest_ms, self.ms_per_mb = rest_ms, ms_per_mb
        self.central = scheduler == "sharing"
        # the gateway's routing rules (the medium object only gives them its bandwidth)
        self.routes = TaskRoutes(part, stages, SharedMedium(part.medium.mbps,
                                                            part.medium.rtt_ms), 1.0,
                                 central=self.central,
                                 at_source=at_source and scheduler == "stealing")
        self.in_flight = in_flight
        self.now = 0.0
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = count()
        self.medium = _Medium(part.medium.mbps, part.medium.rtt_ms, self.at)
        eager = part.scheduler == "stealing" and part.in_flight > 1
        backlog = self._backlog_ms if eager and not rest_remote else None
        # each device's pace as the gateway's has measured it by the first measured frame,
        # after the warm-up and calibration frames: its rate (a device that ran none of them
        # is seeded with its dilation times the others' drift, about the same)
        self.scheduler = make_scheduler(scheduler, prefetch, rates, self._transfer_ms,
                                        eager=eager, backlog=backlog)
        if isinstance(self.scheduler, Stealing):
            self.scheduler.pace.clock = lambda: self.now / 1000.0
        self.workers = list(workers)
        self.held: dict[str, list[Job]] = {d: [] for d in workers}
        self.inbox: dict[str, deque[Job]] = {d: deque() for d in workers}  # inputs arrived
        self.busy: dict[str, bool] = dict.fromkeys(workers, False)
        self.lanes: dict[str, deque[_Frame]] = {}
        self.resting: dict[str, bool] = {}
        self.frames: dict[int, _Frame] = {}
        self.mine = {s: [k for k in range(frames) if k % len(sources) == i]
                     for i, s in enumerate(sources)}
        self.unanswered = dict.fromkeys(sources, 0)
        self.last: dict[str, _Frame | None] = dict.fromkeys(sources, None)
        self.tasks: dict[str, int] = {}

    # ---- the clock --------------------------------------------------------------------------

    def at(self, when: float, then: Callable[[], None]) -> None:
        heapq.heappush(self._events, (when, next(self._seq), then))

    def run(self) -> list[_Frame]:
        for source in self.mine:
            self._next_frame(source)
        self._pump()
        while self._events:
            self.now, _, then = heapq.heappop(self._events)
            then()
        return list(self.frames.values())

    # ---- sources ----------------------------------------------------------------------------

    def _next_frame(self, source: str) -> None:
        last = self.last[source]
        if not self.mine[source] or (last is not None and not last.taken) or \
                self.unanswered[source] >= self.in_flight:
            return
        k = self.mine[source].pop(0)
        frame = _Frame(k, source, "", self.now)
        frame.home = self.routes.home(frame)
        self.frames[k] = frame
        self.last[source] = frame
        self.unanswered[source] += 1
        if self.central:  # work sharing: every crop to the gateway first
            for task in self.stages.order(0):
                crop = self.stages.moves[task][0] if source != self.gateway else 0
                frame.at_gateway[task] = self.medium.send(self.now, crop, lambda: None)
        self._add_block(frame, 0, source)

    def _add_block(self, frame: _Frame, b: int, source: str) -> None:
        self.scheduler.add([Job(frame.id, task, self.stages.level(task), source,
                                self.planned[task].device, self.stages.cost[task])
                            for task in self.stages.order(b)], self.workers)

    # ---- the gateway's rules ----------------------------------------------------------------

    def _transfer_ms(self, device: str, job: Job) -> float:
        frame = self.frames.get(job.frame)
        return 0.0 if frame is None else self.routes.transfer_ms(device, frame, job)

    def _backlog_ms(self, device: str) -> float:
        """The rests ``device`` owes the frames in flight gathered on it (the gateway's)."""
        return self.rest_ms[device] * sum(1 for f in self.frames.values()
                                          if f.answered is None and f.home == device)

    def _ready(self, job: Job) -> bool:
        return self.stages.can_start(job.tile, self.frames[job.frame].level0)

    def _pump(self) -> None:
        limit = self.scheduler.limit()
        free = {d: limit - len(self.held[d]) for d in self.workers if not self.resting.get(d)}
        for device, job in self.scheduler.dispatch(free, self._ready, self._started):
            self._send(device, job)
        for frame in self.frames.values():
            if not frame.taken and self.stages.taken(frame.handed, frame.level0):
                frame.taken = True
                self.at(self.now, partial(self._next_frame, frame.source))

    def _started(self, device: str, job: Job) -> None:
        self.frames[job.frame].handed.add(job.tile)

    def _send(self, device: str, job: Job) -> None:
        frame = self.frames[job.frame]
        self.held[device].append(job)
        into, _ = self.routes.moved(device, frame, job)
        not_before = max(self.now, frame.at_gateway.get(job.tile, 0.0)
                         if self.central and not self.stages.block_of(job.tile) else 0.0)
        self.at(not_before, partial(self._on_air, into, device, job))

    def _on_air(self, nbytes: int, device: str, job: Job) -> None:
        self.medium.send(self.now, nbytes, partial(self._arrived, device, job))

    def _arrived(self, device: str, job: Job) -> None:
        self.inbox[device].append(job)
        self._compute(device)

    def _compute(self, device: str) -> None:
        if self.busy[device] or not self.inbox[device]:
            return
        job = self.inbox[device].popleft()
        tile = self.planned[job.tile]
        compute = tile.compute_ms * self.rates[device] / self.rates[tile.device]
        carried = sum(self.stages.moves[job.tile])
        self.busy[device] = True
        self.at(self.now + compute + self.ms_per_mb * carried / MIB,
                lambda: self._computed(device, job, compute))

    def _computed(self, device: str, job: Job, compute: float) -> None:
        self.busy[device] = False
        self._compute(device)
        frame = self.frames[job.frame]
        _, back = self.routes.moved(device, frame, job)
        self.medium.send(self.now, back, lambda: self._result(device, job, compute))

    def _result(self, device: str, job: Job, compute: float) -> None:
        self.held[device].remove(job)
        self.scheduler.finished(device, job, compute)
        frame = self.frames[job.frame]
        frame.done.add(job.tile)
        self.tasks[device] = self.tasks.get(device, 0) + 1
        if self.stages.level(job.tile) == 0:
            frame.level0.add(job.tile)
        b = self.stages.block_of(job.tile)
        if self.stages.complete(b, frame.done):
            if b + 1 < len(self.stages.blocks):
                self._add_block(frame, b + 1, frame.home)
            else:
                self.lanes.setdefault(frame.home, deque()).append(frame)
                self.resting[frame.home] = True
                self._rest(frame.home)
        self._pump()
        self._rest(device)

    def _rest(self, home: str) -> None:
        """The next rest gathered at ``home``, once it holds no tile and runs no other rest."""
        lane = self.lanes.get(home)
        if not lane or lane[0].resting or self.held.get(home):
            return
        frame = lane[0]
        frame.resting = True
        self.at(self.now + self.rest_ms[home], lambda: self._answer(home, frame))

    def _answer(self, home: str, frame: _Frame) -> None:
        frame.answered = self.now
        self.lanes[home].popleft()
        self.resting[home] = bool(self.lanes[home])
        self.unanswered[frame.source] -= 1
        self._next_frame(frame.source)
        self._rest(home)
        self._pump()


def forecast(stages: GatewayStages, part: Partition, *, scheduler: str,
             sources: Sequence[str], in_flight: int, frames: int,
             rates: Mapping[str, float], workers: Sequence[str],
             rest_ms: Mapping[str, float], ms_per_mb: float = 0.0, at_source: bool = False,
             prefetch: int = 0, rest_remote: bool = True) -> Forecast:
    """``frames`` frames from ``sources`` through the plan's fused-tile partition (module
    docstring). ``rates``: each device's compute per unit of a task's cost (its dilation
    times its calibrated scale); ``workers``: the devices that take tiles; ``rest_ms``: one
    frame's rest on each device a frame may be gathered at; ``rest_remote``: some of the rest
    runs on the edge or cloud (the gateway then owes no rest's compute to its frames in
    flight); ``at_source``: work stealing gathers each frame at its source."""
    run = _Run(stages, part, scheduler, sources, in_flight, frames, rates, workers, rest_ms,
               ms_per_mb, at_source, prefetch, rest_remote)
    done = run.run()
    answered = [f for f in done if f.answered is not None]
    if len(answered) != frames:
        raise RuntimeError(f"forecast: {frames - len(answered)} of {frames} frames never "
                           "answered (the scheduler gave their tiles to no device)")
    latency = statistics.median(f.answered - f.arrived for f in answered)  # type: ignore[operator]
    fps = sustained_fps(f.answered / 1000.0 for f in answered)  # type: ignore[operator]
    return Forecast(latency, fps, frames,
                    {d: n / frames for d, n in sorted(run.tasks.items())})
