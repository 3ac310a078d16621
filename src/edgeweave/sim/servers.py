"""Servers as queues: processor sharing over a node's cores, or batches.

An edge or cloud node runs a request's stage in `work` ms at its profiled speed. Admission
follows the runtime's server (`runtime.server.Admission`): at most ``slots`` requests run, at
most ``queue`` more wait in FIFO order, the rest are refused at once (a capacity failure). The
running requests share the node's ``cores``: each runs at full speed while there are no more of
them than cores, and at ``cores / n`` of it beyond (processor sharing, what an OS gives threads
that outnumber cores).

A request may ``hold`` its slot past its compute: the runtime's server keeps a request admitted
while it forwards it to the next node and waits for the reply (`runtime.server.NodeService`), so
the engine holds an edge slot until the reply passes back down and `release`s it then.

Processor sharing is simulated with a virtual clock: ``v`` is the work every running request has
received since the server's start, growing at the per-request rate; a request that arrives at
``v0`` with ``w`` ms of work leaves when ``v`` reaches ``v0 + w``. Arrivals and departures only
change the slope, so one pending completion event is enough: it is moved (and the old one
ignored) only when the earliest finish time really changes, which at light load it never does.

The batched server collects requests until ``max_batch`` are waiting or the oldest has waited
``max_delay_s``, then runs them together in ``max(work) * (1 + marginal * (b - 1))``: batching
amortises weights and kernel launches, so each extra request costs a fraction ``marginal`` of a
single one (Clipper and the serving path's batcher make the same trade).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from typing import Any

import simpy
from simpy.events import NORMAL

from edgeweave.sim.clock import Clock, caller
from edgeweave.sim.jitter import Jitter

#: work (ms) below which a finish is treated as reached, against float drift in the virtual clock
_EPS_MS = 1e-9


class PSServer:
    """A node's compute: ``cores``-way processor sharing behind ``slots``/``queue`` admission.

    ``on_done(job, now)`` is called when a job's work is complete. ``load_factor`` is an EWMA of
    (time in service / work at full speed) over completed jobs: what a client learns from its
    replies (`runtime.load.LoadFactors`), 1.0 on an idle node at full ``speed``.
    """

    def __init__(self, env: simpy.Environment, name: str, cores: int, slots: int, queue: int,
                 on_done: Callable[[Any, float], None], alpha: float = 0.3,
                 speed: float = 1.0, jitter: Jitter | None = None) -> None:
        if cores < 1 or slots < 1 or queue < 0 or speed <= 0:
            raise ValueError(f"server {name}: cores and slots must be >= 1, queue >= 0, "
                             "speed > 0")
        self.env, self.name = env, name
        self.speed = speed
        self.jitter = jitter
        self.cores, self.slots, self.queue = cores, slots, queue
        self.on_done = on_done
        self.alpha = alpha
        self.v = 0.0  # ms of work each running job has received
        self.t = 0.0  # sim time of the last virtual-clock update
        # (v_end, seq, t0, work, hold, job)
        self.running: list[tuple[float, int, float, float, bool, Any]] = []
        self.waiting: deque[tuple[float, bool, Any]] = deque()
        self.held = 0  # requests done computing that keep their slot (forwarded, awaiting reply)
        self._seq = 0
        self._gen = 0
        self._pending = math.inf
        self.busy_integral = 0.0  # core-seconds of work done
        self.completed = 0
        self.refused = 0
        self.load_factor = 1.0
        self.incoming = 0  # requests routed here and still on their way (the engine counts)
        self._call_at = caller(env)
        self._fire_bound = self._fire  # bound once: scheduled per completion
        clock = isinstance(env, Clock)
        self._queue: list[Any] | None = env._queue if clock else None  # type: ignore[assignment]
        self._eid: Any = env._eid if clock else None

    # ---- state --------------------------------------------------------------------------

    @property
    def in_system(self) -> int:
        return len(self.running) + len(self.waiting) + self.held

    def load(self) -> float:
        """Requests in the node or on their way to it, per core: what an orchestrator that
        knows where it sent requests compares (a least-loaded choice)."""
        return (self.in_system + self.incoming) / self.cores

    def _advance(self, now: float) -> None:
        n = len(self.running)
        if n and now > self.t:
            dt = now - self.t
            if n <= self.cores:  # every running request at full speed
                self.v += dt * 1000.0 * self.speed
                self.busy_integral += dt * n
            else:  # the cores shared among n
                self.v += dt * 1000.0 * self.cores / n * self.speed
                self.busy_integral += dt * self.cores
        self.t = now

    # ---- arrivals and completions -------------------------------------------------------

    def submit(self, now: float, work_ms: float, job: Any, hold: bool = False) -> bool:
        """Admit ``job`` with ``work_ms`` of work at full speed; False if refused. With
        ``hold`` its slot stays taken after its compute until :meth:`release`."""
        running = self.running
        if len(running) + self.held < self.slots:
            if running:  # the hot path: an idle server's virtual clock has nothing to add
                self._advance(now)
            else:
                self.t = now
            self._start(now, work_ms, hold, job)
            self._reschedule(now)
            return True
        if len(self.waiting) < self.queue:
            self.waiting.append((work_ms, hold, job))
            return True
        self.refused += 1
        return False

    def release(self, now: float) -> None:
        """A held request's reply has left: its slot goes to the next waiting request."""
        self.held -= 1
        if self.waiting:
            self._advance(now)
            self._admit_waiting(now)
            self._reschedule(now)

    def _admit_waiting(self, now: float) -> None:
        while self.waiting and len(self.running) + self.held < self.slots:
            work, hold, job = self.waiting.popleft()
            self._start(now, work, hold, job)

    def _start(self, now: float, work_ms: float, hold: bool, job: Any) -> None:
        # the request's own compute time varies around the planned one (`sim.jitter`); its
        # load factor is still measured against the planned one, as the runtime's is
        this = work_ms if self.jitter is None else work_ms * self.jitter()
        self._seq += 1
        heapq.heappush(self.running, (self.v + this, self._seq, now, work_ms, hold, job))

    def _reschedule(self, now: float) -> None:
        running = self.running
        if not running:
            self._pending = math.inf
            return
        n = len(running)
        rate = 1.0 if n <= self.cores else self.cores / n
        left = running[0][0] - self.v
        at = now + left / (1000.0 * rate * self.speed) if left > 0 else now
        if abs(at - self._pending) <= 1e-12 * (at if at > 1.0 else 1.0):
            return
        self._pending = at
        self._gen += 1
        if self._queue is not None:  # `Clock.call_at`, inline: once per completion
            heapq.heappush(self._queue, (at if at > now else now, NORMAL, next(self._eid),
                                         (self._fire_bound, self._gen)))
        else:
            self._call_at(at, self._fire_bound, self._gen)

    def _fire(self, gen: int) -> None:
        if gen != self._gen:
            return  # superseded by a later reschedule
        now = self.env._now  # the hot path: simpy's `now` is a property
        self._advance(now)
        done = []
        running, limit = self.running, self.v + _EPS_MS
        while running and running[0][0] <= limit:
            _, _, t0, work, hold, job = heapq.heappop(running)
            done.append(job)
            if hold:
                self.held += 1
            if work > 0:
                self.load_factor += self.alpha * ((now - t0) * 1000.0 / work - self.load_factor)
        if self.waiting:
            self._admit_waiting(now)
        self._pending = math.inf
        self._reschedule(now)
        self.completed += len(done)
        on_done = self.on_done
        for job in done:
            on_done(job, now)


class BatchServer:
    """A node that runs requests in batches (see the module doc); ``cores`` batches at once."""

    def __init__(self, env: simpy.Environment, name: str, cores: int, queue: int,
                 max_batch: int, max_delay_s: float, marginal: float,
                 on_done: Callable[[Any, float], None], alpha: float = 0.3,
                 speed: float = 1.0, jitter: Jitter | None = None) -> None:
        if (cores < 1 or max_batch < 1 or max_delay_s < 0 or not 0 <= marginal <= 1
                or speed <= 0):
            raise ValueError(f"server {name}: bad batching parameters")
        self.env, self.name = env, name
        self.speed = speed
        self.jitter = jitter
        self.cores, self.queue = cores, queue
        self.max_batch, self.max_delay_s, self.marginal = max_batch, max_delay_s, marginal
        self.on_done = on_done
        self.alpha = alpha
        self.waiting: deque[tuple[float, float, Any]] = deque()  # (t_in, work, job)
        self.busy = 0  # batches running
        self.running_jobs = 0
        self._timer_at = math.inf
        self.busy_integral = 0.0
        self.completed = 0
        self.refused = 0
        self.load_factor = 1.0
        self.batches = 0
        self.served_in: dict[int, int] = {}  # batch size -> requests that ran in one that big
        self.incoming = 0
        self._call_at = caller(env)

    @property
    def in_system(self) -> int:
        return len(self.waiting) + self.running_jobs

    def load(self) -> float:
        return (self.in_system + self.incoming) / self.cores

    def submit(self, now: float, work_ms: float, job: Any, hold: bool = False) -> bool:
        """As :meth:`PSServer.submit`; a batched server frees every slot at the batch's end
        (``hold`` is not modelled here)."""
        if len(self.waiting) >= self.queue + self.max_batch:
            self.refused += 1
            return False
        if self.jitter is not None:
            work_ms *= self.jitter()
        self.waiting.append((now, work_ms, job))
        self._try_start(now)
        return True

    def release(self, now: float) -> None:
        return None

    def _try_start(self, now: float) -> None:
        while self.waiting and self.busy < self.cores:
            oldest = self.waiting[0][0]
            if len(self.waiting) < self.max_batch and now < oldest + self.max_delay_s:
                self._arm(oldest + self.max_delay_s, now)
                return
            batch = [self.waiting.popleft() for _ in range(min(self.max_batch,
                                                               len(self.waiting)))]
            b = len(batch)
            seconds = (max(w for _, w, _ in batch) * (1 + self.marginal * (b - 1))
                       / (1000.0 * self.speed))
            self.busy += 1
            self.running_jobs += b
            self.batches += 1
            self.served_in[b] = self.served_in.get(b, 0) + b
            self.busy_integral += seconds
            self._call_at(now + seconds, self._finish, batch)

    def _arm(self, at: float, now: float) -> None:
        if at >= self._timer_at > now:
            return
        self._timer_at = at
        self._call_at(at, self._timer, None)

    def _timer(self, _: Any) -> None:
        now = self.env.now
        if now >= self._timer_at:
            self._timer_at = math.inf
        self._try_start(now)

    def _finish(self, batch: list[tuple[float, float, Any]]) -> None:
        now = self.env.now
        self.busy -= 1
        self.running_jobs -= len(batch)
        for t_in, work, job in batch:
            ratio = (now - t_in) * 1000.0 / work if work > 0 else 1.0
            self.load_factor += self.alpha * (ratio - self.load_factor)
            self.completed += 1
            self.on_done(job, now)
        self._try_start(now)
