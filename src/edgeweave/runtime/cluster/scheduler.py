"""Who runs which tile next: DeepThings' schedulers over the same tasks (Zhao et al. 2018),
and a static baseline.

* **Work stealing** (``stealing``): every tile of a frame starts in its data source's queue. A
  data source takes its own tiles first; an idle device asks the gateway for a victim, which
  names the source with the most planned work left in its queue (DeepThings goes round-robin
  over its registered sources; with one frame per source in flight, the source furthest from
  done is the one whose frame finishes last; ties round-robin), and takes the first task of
  the victim's queue that can start (the gateway's ``ready``: a data-reuse tile waits for the
  level-0 neighbours whose halo it reuses rather than compute it again), one the plan
  assigned to it first. The input crosses the medium once, victim to thief. Devices hold
  ``1 + prefetch`` tasks at most, so whoever is idle gets the next one: the load balances
  itself, and a device that joins late simply starts asking.
* **Work sharing** (``sharing``, DeepThings' centralized baseline): a data source hands all of a
  frame's tiles to the gateway, which keeps one queue for every source (first come, first
  served); an idle device asks the gateway and gets the first task of that queue that can
  start (the same ``ready`` and the same preference for the plan's tiles as stealing, and the
  same ``1 + prefetch`` held). The input crosses the medium twice (source to gateway, gateway
  to device) and results are collected at the gateway: the gateway routes this (TileGateway).
* **Static** (``static``): the plan's assignment, pushed up front: every tile goes to its
  planned device as soon as its frame arrives (a level-1 tile once the level-0 tiles it reuses
  are done, as the plan's schedule has it), in the plan's task order. No load balancing: what
  the optimiser's medium model prices exactly (plan.medium).

Stealing and sharing hand a device a task only if no other device would finish it sooner
(:class:`Pace`: each device's measured compute per unit of a task's planned cost, what it
holds, and the bytes the task would move over the medium: a level-1 tile away from where its
frame is gathered fetches the reused halo, 290 ms of vgg16's at 18.88 Mbit/s; in stealing, a
source gets to a task only after the rest of its own queue, ``Stealing.ahead``). DeepThings'
devices are alike; ours are not: an rpi3 taking a tile it computes in 9-13 s while both rpi4
would be done with theirs and it in 6 made that frame 22 s long (vgg16, three sources), and a
prefetch taken by a slow device is the same commitment. A prefetch is thereby a steal-ahead by
whichever device frees up first. A device left without a task is asked again at the next
result, when the estimates have changed.

All put the tasks of a device that died back in front, so they run again elsewhere (static
moves them, and the dead device's queue, to the live device with the fewest waiting). Pure
bookkeeping: the gateway calls it under its lock.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from edgeweave.errors import EdgeWeaveError

SCHEDULERS = ("stealing", "sharing", "static")


@dataclass(frozen=True)
class Job:
    """One tile of one frame: ``source`` is the device holding the frame, ``planned`` the
    device the plan assigns it to, ``cost`` its compute in a unit common to every device (the
    plan's compute ms over the planned device's dilation: this host's ms)."""

    frame: int
    tile: int
    level: int
    source: str
    planned: str
    cost: float = 1.0


Ready = Callable[[Job], bool]
#: Told of each job as it is handed out, before the next is chosen (whether a job is ready
#: may depend on the ones handed out just before it).
Started = Callable[[str, Job], None]


class Pace:
    """When each device would finish a task: its pace (compute ms per unit of a task's
    ``cost``) times the cost, after the tasks it holds (their estimate less the time the first
    has run). A device's pace is measured: the ratio of its compute to its tasks' cost, each
    older task counting half as much as the next (a ratio of sums, so a small level-1 tile's
    fixed per-call cost does not make a device look slow), the seed counting as one task at
    first. Before a device has run any, its seed (its dilation) times how much slower than
    their seeds the measured devices run (this host's load slows every emulated device alike:
    an rpi3 judged by its bare seed beside loaded rpi4 looked 1.7x too fast and took a
    9.6 s tile), or the measured devices' mean without a seed."""

    def __init__(self, seed: Mapping[str, float] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 transfer: Callable[[str, Job], float] | None = None,
                 backlog: Callable[[str], float] | None = None):
        """``transfer(device, job)``: the ms the job's bytes take on the medium if ``device``
        runs it (its crop from the source, reused pieces from and its result back to where
        the frame is gathered: nothing for a device that holds them); ``backlog(device)``: the
        ms of other work it must do before a task handed now (the rests of the frames in
        flight gathered on it: a device runs one thing at a time)."""
        self.seed = {d: p for d, p in (seed or {}).items() if p > 0}
        self.clock = clock
        self.transfer = transfer
        self.backlog = backlog
        self.holding: dict[str, list[Job]] = {}
        self._since: dict[str, float] = {}  # when the device's current task started
        self._sums: dict[str, tuple[float, float]] = {}  # device -> (compute, cost), decayed

    def of(self, device: str) -> float:
        if device in self._sums:
            compute, cost = self._sums[device]
            return compute / cost
        measured = {d: c / w for d, (c, w) in self._sums.items()}
        if device in self.seed:
            drift = [p / self.seed[d] for d, p in measured.items() if d in self.seed]
            return self.seed[device] * (sum(drift) / len(drift) if drift else 1.0)
        return sum(measured.values()) / len(measured) if measured else 1.0

    def handed(self, device: str, job: Job) -> None:
        held = self.holding.setdefault(device, [])
        if not held:
            self._since[device] = self.clock()
        held.append(job)

    def finished(self, device: str, job: Job, compute_ms: float | None = None) -> None:
        """``device`` answered ``job`` (``compute_ms`` measured) or gave it up (None)."""
        held = self.holding.get(device, [])
        if job in held:
            held.remove(job)
            self._since[device] = self.clock()
        if compute_ms is not None and compute_ms > 0 and job.cost > 0:
            if device in self._sums:
                compute, cost = self._sums[device]
                self._sums[device] = (compute / 2 + compute_ms, cost / 2 + job.cost)
            elif device in self.seed:
                self._sums[device] = (self.seed[device] * job.cost + compute_ms, 2 * job.cost)
            else:
                self._sums[device] = (compute_ms, job.cost)

    def forget(self, device: str) -> None:
        self.holding.pop(device, None)

    def busy_ms(self, device: str) -> float:
        held = self.holding.get(device)
        if not held:
            return 0.0
        left = self.of(device) * sum(j.cost for j in held)
        return max(0.0, left - (self.clock() - self._since[device]) * 1000.0)

    def first_to_finish(self, device: str, job: Job, devices: Iterable[str],
                        ahead: Callable[[str, Job], float] | None = None) -> bool:
        """Whether no other of ``devices`` would finish ``job`` before ``device`` (ties: yes).
        ``ahead(d, job)``: the cost of the work ``d`` runs anyway before it would get to
        ``job`` (a source's own queue: Stealing.ahead)."""
        mine = self.finish_ms(device, job)
        return all(mine <= self.finish_ms(d, job) + self._ahead_ms(d, job, ahead) + 1e-6
                   for d in devices if d != device)

    def _ahead_ms(self, device: str, job: Job, ahead: Callable[[str, Job], float] | None
                  ) -> float:
        return self.of(device) * ahead(device, job) if ahead is not None else 0.0

    def finish_ms(self, device: str, job: Job) -> float:
        moved = self.transfer(device, job) if self.transfer is not None else 0.0
        return self.busy_ms(device) + self.backlog_ms(device) + self.of(device) * job.cost + moved

    def backlog_ms(self, device: str) -> float:
        return self.backlog(device) if self.backlog is not None else 0.0


class Stealing:
    name = "stealing"

    def __init__(self, prefetch: int = 0, pace: Pace | None = None, eager: bool = False):
        """``eager``: an idle device takes the first task that can start, whoever would finish
        it sooner (DeepThings' own rule; for a plan priced as stealing across frames in
        flight, plan.stealing_price: a slower device's share of the frames is throughput the
        faster ones cannot give, while Pace's test kept an rpi3 from every whole-frame tile
        an rpi4 would finish sooner, so it never took one and the stream ran at the rpi4s'
        rate). Except a device with a backlog (:class:`Pace`: the gateway, with the rests
        of the frames in flight to run): it takes only a task no other device would finish
        sooner, its backlog counted. Eager, it took whole-frame tiles between rests that the
        other devices would have run, the rests waited behind them, the frames in flight
        filled with frames waiting for their rest and the other devices went idle (resnet18
        on four emulated Pis, 16 frames in flight: the gateway ran 22% of the tiles where the
        plan gave it 9%)."""
        self.prefetch = prefetch
        self.eager = eager
        self.queues: dict[str, deque[Job]] = {}  # registered sources, in order
        self._victim = 0
        self.pace = pace or Pace()

    def limit(self) -> int:
        return 1 + self.prefetch

    def pending(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def add(self, jobs: Iterable[Job], live: Sequence[str]) -> None:
        """Each job to its source's queue, after every job of its own or an older frame: a
        later fused block of a frame (queued after its sync point) goes before the tasks of
        the frames sent after it, so frames in flight finish in order."""
        for job in jobs:
            queue = self.queues.setdefault(job.source, deque())
            k = len(queue)
            while k > 0 and queue[k - 1].frame > job.frame:
                k -= 1
            queue.insert(k, job)

    def requeue(self, jobs: Iterable[Job], live: Sequence[str]) -> None:
        for job in reversed(list(jobs)):
            self.queues.setdefault(job.source, deque()).appendleft(job)

    def leave(self, device: str, live: Sequence[str]) -> None:
        """Nothing moves: a dead source's queue is stolen from like any other."""
        self.pace.forget(device)

    def finished(self, device: str, job: Job, compute_ms: float | None = None) -> None:
        self.pace.finished(device, job, compute_ms)

    def take(self, device: str, ready: Ready) -> Job | None:
        """The first ``ready`` task of the device's own queue, else one stolen."""
        own = self.queues.get(device)
        job = _pop_first(own, ready, device) if own else None
        return job if job is not None else self.steal(ready, device)

    def steal(self, ready: Ready | None = None, thief: str | None = None) -> Job | None:
        """The first ``ready`` task of the source's queue with the most planned work left
        that has one (ties: round-robin over the victims), one the plan gave ``thief``
        first."""
        sources = list(self.queues)
        n = len(sources)
        order = sorted(range(n), key=lambda k: (-sum(j.cost for j in self.queues[sources[k]]),
                                                (k - self._victim) % n))
        for k in order:
            queue = self.queues[sources[k]]
            job = _pop_first(queue, ready, thief) if queue else None
            if job is not None:
                self._victim = (k + 1) % n
                return job
        return None

    def dispatch(self, free: dict[str, int], ready: Ready, started: Started | None = None
                 ) -> list[tuple[str, Job]]:
        """Idle devices ask in turn, one task per turn, until none gets one; a device gets
        only a task no other device of ``free`` (every device taking work now, free or not)
        would finish sooner."""
        out = []
        progress = True
        while progress:
            progress = False
            # eager: the devices holding fewest tasks ask first, so a busy device's prefetch
            # does not take the tile an idle one was waiting for (without Pace's test to
            # prefer the idle device, the first in order took every tile into its prefetch
            # and the last rpi4 of six sat idle 45% of the stream)
            order = sorted(free, key=lambda d: -free[d]) if self.eager else list(free)
            for device in order:
                slots = free[device]
                if slots <= 0:
                    continue
                job = self.take(device, self._first_to_finish(device, ready, free))
                if job is not None:
                    out.append((device, job))
                    self.pace.handed(device, job)
                    if started is not None:
                        started(device, job)
                    free[device] -= 1
                    progress = True
        return out

    def _first_to_finish(self, device: str, ready: Ready, devices: Iterable[str]) -> Ready:
        if self.eager and self.pace.backlog_ms(device) <= 0:
            return ready
        return lambda job: ready(job) and self.pace.first_to_finish(device, job, devices,
                                                                    self.ahead)

    def ahead(self, device: str, job: Job) -> float:
        """The cost of the other tasks of ``job``'s frame (and older ones) in ``device``'s own
        queue: a source runs them all before it would have run out of its own tiles, and
        which of them is last does not change when the frame is done. Without them a source
        holding one tile looked free to finish each next one sooner than a thief whose crop
        crosses the medium, so no tile was ever stolen (squeezenet1_0, a 2x4 grid on two
        rpi4: the plan's two remote tiles ran at the source too, +30% over the prediction).
        A thief now takes a tile when it would be done before the source is done with its
        queue."""
        own = self.queues.get(device)
        if not own:
            return 0.0
        return sum(k.cost for k in own if k is not job and k.frame <= job.frame)

    def drain(self) -> Job | None:
        return self.steal()


class Central(Stealing):
    """DeepThings' work sharing: one queue at the gateway for every source's tiles."""

    name = "sharing"
    QUEUE = ""  # the gateway's one queue

    def add(self, jobs: Iterable[Job], live: Sequence[str]) -> None:
        self.queues.setdefault(self.QUEUE, deque()).extend(jobs)

    def requeue(self, jobs: Iterable[Job], live: Sequence[str]) -> None:
        self.queues.setdefault(self.QUEUE, deque()).extendleft(reversed(list(jobs)))

    def take(self, device: str, ready: Ready) -> Job | None:
        """The first ``ready`` task of the gateway's queue, one the plan gave ``device``
        first."""
        return self.steal(ready, device)


class Static:
    name = "static"

    def __init__(self) -> None:
        self.jobs: list[Job] = []  # in the order they were added (the plan's task order)
        self.device: dict[tuple[int, int], str] = {}

    def limit(self) -> int:
        return 1 << 30

    def pending(self) -> int:
        return len(self.jobs)

    def add(self, jobs: Iterable[Job], live: Sequence[str]) -> None:
        for job in jobs:
            self.jobs.append(job)
            self.device[(job.frame, job.tile)] = job.planned if job.planned in live \
                else self._least_loaded(live)

    def requeue(self, jobs: Iterable[Job], live: Sequence[str]) -> None:
        again = list(jobs)
        self.jobs[:0] = again
        for job in again:
            if self.device.get((job.frame, job.tile)) not in live:
                self.device[(job.frame, job.tile)] = self._least_loaded(live)

    def finished(self, device: str, job: Job, compute_ms: float | None = None) -> None:
        """The plan's assignment does not depend on the devices' pace."""

    def leave(self, device: str, live: Sequence[str]) -> None:
        for job in self.jobs:
            if self.device[(job.frame, job.tile)] == device:
                self.device[(job.frame, job.tile)] = self._least_loaded(live)

    def _least_loaded(self, live: Sequence[str]) -> str:
        if not live:
            return ""
        counts = dict.fromkeys(live, 0)
        for job in self.jobs:
            name = self.device.get((job.frame, job.tile))
            if name in counts:
                counts[name] += 1
        return min(live, key=lambda d: counts[d])

    def dispatch(self, free: dict[str, int], ready: Ready, started: Started | None = None
                 ) -> list[tuple[str, Job]]:
        """Every ready task to its device, in task order."""
        out, keep = [], []
        for job in self.jobs:
            device = self.device[(job.frame, job.tile)]
            if free.get(device, 0) > 0 and ready(job):
                out.append((device, job))
                if started is not None:
                    started(device, job)
                free[device] -= 1
            else:
                keep.append(job)
        self.jobs = keep
        return out

    def drain(self) -> Job | None:
        return self.jobs.pop(0) if self.jobs else None


def _pop_first(queue: deque[Job], ready: Ready | None, device: str | None = None
               ) -> Job | None:
    """Remove and return the first job of ``queue`` that is ``ready`` (any, without a test),
    preferring one the plan assigns to ``device``: when the devices run as fast as planned,
    each gets the tiles the optimiser sized for it (vgg16's 1x3 grid: the remote device the
    smaller edge tile, whose crop crosses the medium), and stealing still balances when not."""
    first = None
    for k, job in enumerate(queue):
        if ready is None or ready(job):
            if device is None or job.planned == device:
                del queue[k]
                return job
            if first is None:
                first = k
    if first is None:
        return None
    job = queue[first]
    del queue[first]
    return job


def make_scheduler(name: str, prefetch: int = 0, pace: Mapping[str, float] | None = None,
                   transfer: Callable[[str, Job], float] | None = None, eager: bool = False,
                   backlog: Callable[[str], float] | None = None) -> Stealing | Static:
    """``pace``: each device's compute ms per unit of a task's cost before any is measured
    (its dilation when costs are this host's ms); ``transfer`` and ``backlog``:
    :class:`Pace`'s; ``eager``: :class:`Stealing`'s (stealing and sharing)."""
    if name == "stealing":
        return Stealing(prefetch, Pace(pace, transfer=transfer, backlog=backlog), eager)
    if name == "sharing":
        return Central(prefetch, Pace(pace, transfer=transfer, backlog=backlog), eager)
    if name == "static":
        return Static()
    raise EdgeWeaveError(f"--scheduler {name!r}: expected one of {', '.join(SCHEDULERS)}")
