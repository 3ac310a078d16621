"""Who runs which tile next: DeepThings' schedulers over the same tasks (Zhao et al. 2018),
and a static baseline.

* **Work stealing** (``stealing``): every tile of a frame starts in its data source's queue. A
  data source takes its own tiles first; an idle device asks the gateway for a victim, which
  names the registered sources round-robin (skipping those with nothing left), and takes the
  first task of the victim's queue that can start (the gateway's ``ready``: a data-reuse tile
  whose neighbour is being computed right now waits for that halo rather than compute it
  again), one the plan assigned to it first. The input crosses the medium once, victim to
  thief. Devices hold ``1 + prefetch`` tasks at most, so whoever is idle gets the next one:
  the load balances itself, and a device that joins late simply starts asking.
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

All put the tasks of a device that died back in front, so they run again elsewhere (static
moves them, and the dead device's queue, to the live device with the fewest waiting). Pure
bookkeeping: the gateway calls it under its lock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from edgeweave.errors import EdgeWeaveError

SCHEDULERS = ("stealing", "sharing", "static")


@dataclass(frozen=True)
class Job:
    """One tile of one frame: ``source`` is the device holding the frame, ``planned`` the
    device the plan assigns it to."""

    frame: int
    tile: int
    level: int
    source: str
    planned: str


Ready = Callable[[Job], bool]
#: Told of each job as it is handed out, before the next is chosen (whether a job is ready
#: may depend on the ones handed out just before it).
Started = Callable[[str, Job], None]


class Stealing:
    name = "stealing"

    def __init__(self, prefetch: int = 0):
        self.prefetch = prefetch
        self.queues: dict[str, deque[Job]] = {}  # registered sources, in order
        self._victim = 0

    def limit(self) -> int:
        return 1 + self.prefetch

    def pending(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def add(self, jobs: Iterable[Job], live: Sequence[str]) -> None:
        for job in jobs:
            self.queues.setdefault(job.source, deque()).append(job)

    def requeue(self, jobs: Iterable[Job], live: Sequence[str]) -> None:
        for job in reversed(list(jobs)):
            self.queues.setdefault(job.source, deque()).appendleft(job)

    def leave(self, device: str, live: Sequence[str]) -> None:
        """Nothing moves: a dead source's queue is stolen from like any other."""

    def take(self, device: str, ready: Ready) -> Job | None:
        """The first ``ready`` task of the device's own queue, else one stolen."""
        own = self.queues.get(device)
        job = _pop_first(own, ready, device) if own else None
        return job if job is not None else self.steal(ready, device)

    def steal(self, ready: Ready | None = None, thief: str | None = None) -> Job | None:
        """The first ``ready`` task of the next registered source's queue that has one
        (round-robin over the victims), one the plan gave ``thief`` first."""
        sources = list(self.queues)
        for step in range(len(sources)):
            queue = self.queues[sources[(self._victim + step) % len(sources)]]
            job = _pop_first(queue, ready, thief) if queue else None
            if job is not None:
                self._victim = (self._victim + step + 1) % len(sources)
                return job
        return None

    def dispatch(self, free: dict[str, int], ready: Ready, started: Started | None = None
                 ) -> list[tuple[str, Job]]:
        """Idle devices ask in turn, one task per turn, until none gets one."""
        out = []
        progress = True
        while progress:
            progress = False
            for device, slots in free.items():
                if slots <= 0:
                    continue
                job = self.take(device, ready)
                if job is not None:
                    out.append((device, job))
                    if started is not None:
                        started(device, job)
                    free[device] -= 1
                    progress = True
        return out

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


def make_scheduler(name: str, prefetch: int = 0) -> Stealing | Static:
    if name == "stealing":
        return Stealing(prefetch)
    if name == "sharing":
        return Central(prefetch)
    if name == "static":
        return Static()
    raise EdgeWeaveError(f"--scheduler {name!r}: expected one of {', '.join(SCHEDULERS)}")
