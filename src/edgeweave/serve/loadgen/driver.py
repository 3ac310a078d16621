"""Playing many devices against a serving system, and recording how each request ended.

The driver sends on a schedule (open loop) or as devices get their answers (closed loop); the
system under test is a `Target` that starts a request without blocking and reports its one
outcome later, so thousands of logical devices need no thread each. A request the system
refuses is answered by its device's fallback (`Fallback`: the device's own latency, simulated,
since the device's compute would otherwise share this host's cores with the server), and counted
as such: every request ends exactly one way, and a request still unanswered once the run has
drained is counted as lost.
"""

from __future__ import annotations

import heapq
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edgeweave.serve.loadgen.arrivals import Arrival

#: How a request ended, as the target reports it. THROTTLED: the device did not send it (its
#: edge had been refusing; see `runtime.throttle`) and answered it itself.
OK, REFUSED, FAILED, THROTTLED = "ok", "refused", "failed", "throttled"
#: Characters of a refusal's details kept in its record (a peer's details are bounded).
MAX_DETAIL = 400


@dataclass(frozen=True)
class Outcome:
    kind: str  # OK, REFUSED (the system said no, with a status), FAILED (no answer) or THROTTLED
    status: str = ""  # the status's name, e.g. DEADLINE_EXCEEDED
    detail: str = ""


class Target(Protocol):
    def send(self, model: str, client: int, deadline_s: float, priority: int,
             done: Callable[[Outcome], None]) -> None:
        """Start one request without blocking; call `done` exactly once, from any thread."""


@dataclass
class Record:
    """One request: when it was sent (s from the start), how it ended, and its latency."""

    model: str
    client: int
    sent: float
    deadline_s: float
    end: str = "lost"  # answered, fallback, refused (no fallback), lost
    status: str = ""  # the refusal's (or failure's) status, if any
    refused_by_system: bool = False  # the system said no with a status (not a failure)
    latency_s: float = float("nan")  # to the edge's answer (answered) or the device's
    throttled: bool = False  # never sent: the device's own throttle kept it (runtime.throttle)
    detail: str = ""  # the refusal's (or failure's) details, as the system said them

    @property
    def in_time(self) -> bool:
        return self.end == "answered" and self.latency_s <= self.deadline_s


class Fallback:
    """The device answering a refused request itself: `seconds[model]` of local compute after
    the refusal (simulated), or no fallback at all (`enabled=False`: the request stays
    refused)."""

    def __init__(self, seconds: Mapping[str, float] | None = None, enabled: bool = True):
        self.seconds = dict(seconds or {})
        self.enabled = enabled

    def latency(self, model: str) -> float:
        return self.seconds.get(model, 0.0)


class _Book:
    """Records, filled from the targets' callback threads."""

    def __init__(self, fallback: Fallback, clock: Callable[[], float], start: float):
        self.records: list[Record] = []
        self.fallback, self.clock, self.start = fallback, clock, start
        self._lock = threading.Lock()
        self.outstanding = 0
        self.idle = threading.Condition(self._lock)

    def open(self, record: Record) -> Callable[[Outcome], None]:
        with self._lock:
            self.records.append(record)
            self.outstanding += 1
        called = threading.Event()

        def done(outcome: Outcome) -> None:
            if called.is_set():
                return  # a target must call once; a second call must not count twice
            called.set()
            latency = self.clock() - self.start - record.sent
            record.refused_by_system = outcome.kind == REFUSED
            record.throttled = outcome.kind == THROTTLED
            record.detail = outcome.detail[:MAX_DETAIL] if outcome.kind != OK else ""
            if outcome.kind == OK:
                record.end, record.latency_s = "answered", latency
            elif self.fallback.enabled:
                record.end, record.status = "fallback", outcome.status or outcome.kind
                record.latency_s = latency + self.fallback.latency(record.model)
            else:
                record.end, record.status = "refused", outcome.status or outcome.kind
            with self._lock:
                self.outstanding -= 1
                self.idle.notify_all()
        return done

    def drain(self, timeout_s: float) -> None:
        end = time.monotonic() + timeout_s
        with self._lock:
            while self.outstanding and time.monotonic() < end:
                self.idle.wait(max(0.0, end - time.monotonic()))


@dataclass
class Run:
    records: list[Record]
    duration_s: float  # the schedule's length (rates are per this)
    lag_s: float = 0.0  # the most the driver fell behind its schedule


def open_loop(target: Target, arrivals: Sequence[Arrival], slo_s: Mapping[str, float],
              fallback: Fallback | None = None, priority: int = 0, drain_s: float = 30.0,
              duration_s: float | None = None, start_at: float | None = None) -> Run:
    """Send `arrivals` on time whatever the target does; wait up to `drain_s` for the last
    answers. `start_at`: the schedule's time 0 on the monotonic clock (several sender
    processes share one, `loadgen.senders`); by default in 50 ms."""
    clock = time.monotonic
    start = clock() + 0.05 if start_at is None else start_at
    book = _Book(fallback or Fallback(), clock, start)
    lag = 0.0
    for a in arrivals:
        wait = start + a.at - clock()
        if wait > 0:
            time.sleep(wait)
        else:
            lag = max(lag, -wait)
        rec = Record(a.model, a.client, clock() - start, slo_s[a.model])
        target.send(a.model, a.client, rec.deadline_s, priority, book.open(rec))
    book.drain(drain_s)
    span = duration_s or (arrivals[-1].at if arrivals else 0.0)
    return Run(book.records, span, lag)


def closed_loop(target: Target, clients: int, models: Sequence[str], duration_s: float,
                slo_s: Mapping[str, float], think_s: float = 0.0,
                fallback: Fallback | None = None, priority: int = 0, seed: int = 0,
                drain_s: float = 30.0) -> Run:
    """`clients` devices, each with one request outstanding: it sends, waits for its answer
    (or its fallback), thinks for an exponential time of mean `think_s`, and sends again,
    until `duration_s`. Each device keeps to one model (assigned in turn)."""
    rng = np.random.default_rng(seed)
    clock = time.monotonic
    start = clock()
    book = _Book(fallback or Fallback(), clock, start)
    ready: queue.SimpleQueue[int] = queue.SimpleQueue()
    due: list[tuple[float, int]] = [(float(rng.uniform(0, max(think_s, 1e-3))), c)
                                    for c in range(clients)]
    heapq.heapify(due)
    while (now := clock() - start) < duration_s:
        if due and due[0][0] <= now:
            _, c = heapq.heappop(due)
            model = models[c % len(models)]
            rec = Record(model, c, now, slo_s[model])
            finish = book.open(rec)

            def done(outcome: Outcome, finish=finish, c=c) -> None:
                finish(outcome)
                ready.put(c)
            target.send(model, c, rec.deadline_s, priority, done)
            continue
        wait = min(due[0][0] - now if due else 0.05, duration_s - now)
        try:
            c = ready.get(timeout=max(0.0, wait))
        except queue.Empty:
            continue
        think = float(rng.exponential(think_s)) if think_s > 0 else 0.0
        heapq.heappush(due, (clock() - start + think, c))
    book.drain(drain_s)
    return Run(book.records, duration_s)
