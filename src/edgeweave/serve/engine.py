"""The serving engine: several models, each with its own queue, batched and scheduled across
models by deadline (`serve.scheduler`), on a fixed number of worker threads.

The caller's thread submits a request (`submit`) and waits for its one outcome (`wait`);
workers take batches as the scheduler chooses them, run them, and hand each request its own
rows of the outputs. Everything is bounded: the queues (per model and node-wide), the batch
size, the wait (a request still queued at its deadline is withdrawn by its own caller, so no
caller waits past its deadline for a worker that never came). The engine does not know about
gRPC or tensors on the wire; the node server (`runtime.server`) checks and decodes requests and
maps a shed request to its status.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence

from edgeweave.serve import front
from edgeweave.serve.config import NodeServing, ServingConfig
from edgeweave.serve.events import NoObserver, ServeObserver
from edgeweave.serve.latency import LatencyModel
from edgeweave.serve.pending import Answer, Inputs, Pending, Shed
from edgeweave.serve.queues import Runner, ServedModel
from edgeweave.serve.scheduler import Decision, Scheduler, start_after

log = logging.getLogger("edgeweave.serve")


#: The runner's stretch ends on `time.perf_counter`, the engine's clock is `time.monotonic`:
#: a batch ending this close to its `until` was cut there.
_CLOCKS_APART_S = 1e-4


class Engine:
    def __init__(self, node: NodeServing, observer: ServeObserver | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.node = node
        self.scheduler = Scheduler(node.policy)
        self.observer: ServeObserver = observer or NoObserver()
        self.clock = clock
        self.models: dict[str, ServedModel] = {}
        self.queued = 0
        self._cond = threading.Condition()
        self._busy_until: dict[int, float] = {}  # worker -> expected end of its batch
        self._threads: list[threading.Thread] = []
        self._stopping = False

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> Engine:
        for k in range(self.node.workers):
            t = threading.Thread(target=self._work, args=(k,), name=f"serve-worker-{k}",
                                 daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Shed every queued request ("stopped") and let the workers finish their batch."""
        with self._cond:
            self._stopping = True
            for m in self.models.values():
                self._shed_all(m, "stopped", "the node is stopping")
            self._cond.notify_all()
        end = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))

    # ---- models ---------------------------------------------------------------------------

    def add(self, key: str, name: str, runner: Runner, config: ServingConfig,
            latency: LatencyModel | None = None) -> ServedModel:
        """Serve a model (or re-configure one served already); `config` must be resolved."""
        with self._cond:
            m = self.models.get(key)
            if m is None:
                m = self.models[key] = ServedModel(key, name, runner, config,
                                                   latency or LatencyModel(),
                                                   self.scheduler.order)
            m.reconfigure(config)
            self._cond.notify_all()
            return m

    def remove(self, key: str, reason: str = "removed", why: str = "it was removed") -> int:
        """Stop serving `key`; its queued requests are shed (`reason`). Returns how many."""
        with self._cond:
            m = self.models.pop(key, None)
            return 0 if m is None else self._shed_all(m, reason, f"model {m.name}: {why}")

    def set_front(self, key: str, stages: Sequence[object]) -> None:
        """Put `stages` (a cache, a filter; see serve.front) in front of model `key`."""
        with self._cond:
            self.models[key].fronts = list(stages)

    def __contains__(self, key: object) -> bool:
        return key in self.models

    def load(self) -> tuple[int, float]:
        """(requests queued, seconds until a worker would be free for a new request): the
        cheap load signal devices choose an edge by."""
        with self._cond:
            return self.queued, self._backlog(self.clock())

    # ---- requests -------------------------------------------------------------------------

    def submit(self, key: str, inputs: Inputs, deadline: float = math.inf,
               priority: int = 0, source: str = front.SHARED, grace: float = 0.0) -> Pending:
        """Queue one request (batch-1 tensors) for model `key`, or raise Shed at once.
        `source` (the sending device or stream) keys the front stages' per-stream state.

        `grace`: seconds past `deadline` that its answer is still expected to reach its sender
        in time. A device sends its deadline less a margin for the way there and back, as high
        as that way's 99th percentile, so that the engine plans against the way's slow tail;
        an answer whose batch overran `deadline` by less than that margin's spread (`grace`)
        usually still arrives in time, and a device refused that late can no longer answer
        in time itself (its fallback starts after its deadline's margin is spent): such an
        answer is sent, not dropped (measured: MobileNetV2 at its capacity at the SLO, every
        request it missed had been computed and dropped 2-17 ms past the engine's deadline,
        within the device's 8-27 ms margin, while the answered p99 was 20% under the SLO)."""
        now = self.clock()
        with self._cond:
            m = self._model(key)
            fronts = list(m.fronts)
        item = Pending(key, inputs, deadline, priority, now, source, grace)
        answered = front.consult(fronts, inputs, source) if fronts else None
        if answered is not None:
            item.resolve(answered)
            return item
        with self._cond:
            m = self._model(key)
            m.arrived.append(now)
            try:
                displaced = self._admit(m, item, now)
            except Shed as e:
                self.observer.shed(m.name, "rejected", e.reason)
                raise
            if displaced is not None:
                self._drop(displaced, Shed("displaced", "displaced from a full queue by a "
                                           "request of higher priority", "dropped"))
            m.push(item)
            self.queued += 1
            self.observer.depth(m.name, len(m))
            self._cond.notify()
        return item

    def wait(self, item: Pending) -> Answer:
        """The request's answer, or the Shed it ended with. Under EDF a request still queued
        at its deadline is withdrawn here; one in a running batch is waited for."""
        while not item.wait(None if math.isinf(item.deadline) or not self.scheduler.edf
                            else max(0.0, item.deadline - self.clock())):
            with self._cond:
                m = self.models.get(item.key)
                if m is not None and not item.done and m.remove(item):
                    self._drop(item, Shed("deadline", "dropped: it waited in the queue until "
                                                      "its deadline", "dropped"), queued=False)
                    self.queued -= 1
            if not item.done:
                item.wait(0.05)  # in a batch: it is about to be answered or found late
        return item.result()

    def _model(self, key: str) -> ServedModel:
        m = self.models.get(key)
        if m is None:
            raise Shed("unknown_model", "the model is not served here")
        if self._stopping:
            raise Shed("stopped", "the node is stopping")
        return m

    def _admit(self, m: ServedModel, item: Pending, now: float) -> Pending | None:
        """Check the request's deadline and the queues' bounds; returns a request it displaces
        from a full queue, if any (Shed if it cannot be admitted). On an idle node (a worker
        free, nothing queued) a request is not refused on the latency estimate, only when its
        deadline has passed: see `Scheduler.next`."""
        idle = self.node.workers - len(self._busy_until)
        if self.scheduler.edf and math.isfinite(item.deadline):
            self.scheduler.check_passed(item, now)  # before any estimate: the cheap refusal
            wait_s, size, served = self._finish_after(m, item, now)
            self.scheduler.check_deadline(m, item, now, wait_s, idle_node=idle > 0 and
                                          self.queued == 0, run_s=m.latency.estimate(size),
                                          served=served, size=size)
        model_full = len(m) >= m.config.max_queue + idle
        if not model_full and self.queued < self.node.max_queue + idle:
            return None
        victim = self.scheduler.victim([m] if model_full else self.models.values(),
                                       item.priority)
        if victim is None:
            where = (f"{m.name}'s queue holds {len(m)} (its max_queue)" if model_full else
                     f"the node's queues hold {self.queued} (--max-queue)")
            raise Shed("queue_full", f"{where} and every worker is busy")
        return victim

    def _finish_after(self, m: ServedModel, item: Pending, now: float
                      ) -> tuple[float, int, bool]:
        """(seconds until a worker starts the batch `item` would run in, that batch's size,
        whether it is served at all): the admission estimate. Every queue is counted
        in the batches the scheduler will form from it: its own model's with it inserted
        (`Scheduler.place`), the other models' work ahead of it (`Scheduler.work`) first
        taking the workers, as in `_backlog`. The node is light (`place`) while its models'
        recent arrival rates, each request run alone, need less than its workers, and no queue
        holds a batch worth waiting for: the estimate counts compute only, and a node whose
        per-request cost lies elsewhere (the RPC, decoding; the dilated digits tenants compute
        a few ms a request but serve about 120 req/s at most, so their rates x estimates said
        light at twice their capacity) shows it by its queues filling."""
        key = self.scheduler.order(item)
        busy = self._free_in(now)
        free = [now + b for b in busy]
        others = sum(self.scheduler.work(o, key, free)
                     for o in self.models.values() if o is not m)
        level = start_after(busy, others)
        light = (sum(o.rate(now) * o.latency.estimate(1) for o in self.models.values())
                 < self.node.workers and all(len(o) < o.target for o in self.models.values()))
        start, size, served = self.scheduler.place(m, key, [now + max(b, level) for b in busy],
                                                   light)
        return start - now, size, served

    def check(self, key: str, deadline: float, priority: int = 0, grace: float = 0.0) -> None:
        """Raise Shed now if a request for `key` with this deadline and priority would be
        refused on arrival (its deadline, or full queues with nobody of lower priority to
        displace): what the node asks before it decodes a request's tensors, so a request it
        will refuse costs it no decoding (under overload most of them are refused). `submit`
        checks again: the queues may change in between."""
        now = self.clock()
        with self._cond:
            m = self._model(key)
            probe = Pending(key, (), deadline, priority, now, grace=grace)
            try:
                self._admit(m, probe, now)
            except Shed as e:
                m.arrived.append(now)  # not submitted: its arrival counts here
                self.observer.shed(m.name, "rejected", e.reason)
                raise

    def _backlog(self, now: float) -> float:
        """Seconds until a worker is free for a new request of the lowest priority, due last
        (`scheduler.start_after`), every model's queue counted in the batches the scheduler
        will run it in (`Scheduler.work`), as admission counts it."""
        busy = self._free_in(now)
        free = [now + b for b in busy]
        work = sum(self.scheduler.work(m, (math.inf, 1, 0), free) for m in self.models.values())
        return start_after(busy, work)

    def _free_in(self, now: float) -> list[float]:
        """(holding the lock) Seconds until each worker is free, by the estimates of the
        batches running (0 for an idle one)."""
        busy = [max(0.0, end - now) for end in self._busy_until.values()]
        return busy + [0.0] * (self.node.workers - len(busy))

    def _drop(self, item: Pending, shed: Shed, queued: bool = True) -> None:
        m = self.models.get(item.key)
        if queued and m is not None and m.remove(item):
            self.queued -= 1
        item.fail(shed)
        if m is not None:
            self.observer.shed(m.name, shed.stage, shed.reason)

    def _shed_all(self, m: ServedModel, reason: str, why: str) -> int:
        items = m.take(len(m))
        self.queued -= len(items)
        for item in items:
            item.fail(Shed(reason, why, "dropped"))
            self.observer.shed(m.name, "dropped", reason)
        return len(items)

    # ---- workers --------------------------------------------------------------------------

    def _work(self, wid: int) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    now = self.clock()
                    d = self.dispatch(wid, now)
                    if d.model is not None:
                        break
                    wait = None if d.wake_at is None else max(0.0005, d.wake_at - now)
                    self._cond.wait(wait)
                m, batch = d.model, d.batch
            try:
                self._run(m, batch, now)
            finally:
                with self._cond:
                    self.finished(wid, m, batch)

    def dispatch(self, wid: int, now: float) -> Decision:
        """(holding the lock) What worker `wid`, free at `now`, runs next: the scheduler's
        decision, its drops shed and its batch, if any, counted as running on `wid` until
        `finished`. The worker loop's one step, apart so a test can drive the engine on its
        own clock."""
        d = self.scheduler.next(list(self.models.values()), now)
        for item, shed in d.dropped:
            self.queued -= 1
            self._drop(item, shed, queued=False)
        if d.model is not None:
            self.queued -= len(d.batch)
            d.model.running += len(d.batch)
            self._busy_until[wid] = now + d.model.latency.estimate(len(d.batch))
            self.observer.depth(d.model.name, len(d.model))
        return d

    def finished(self, wid: int, m: ServedModel, batch: list[Pending]) -> None:
        """(holding the lock) Worker `wid` is done with `batch` (see `dispatch`)."""
        del self._busy_until[wid]
        m.running -= len(batch)

    def _run(self, m: ServedModel, batch: list[Pending], start: float) -> None:
        # An emulated (dilated) runner stops stretching a batch at `until`: after the last of
        # its requests' late instants nobody waits for it. A batch that ran to `until` did not
        # finish in emulated time, so none of its answers is sent (cutting at the earliest
        # deadline instead would send the others' answers before the emulated hardware had
        # them, and with a sender's grace the cut batch itself would pass as in time).
        until = max(p.late for p in batch) if self.scheduler.edf else math.inf
        outputs = self._compute(m, batch, until)
        compute = self.clock() - start
        m.latency.observe(len(batch), compute)
        limit = m.aimd.observe(len(batch), compute) if m.aimd is not None else m.limit
        end = self.clock()
        cut = end >= until - _CLOCKS_APART_S
        for p, out in zip(batch, outputs, strict=True):
            if isinstance(out, Shed):
                self._drop(p, out, queued=False)
            elif self.scheduler.edf and (cut or end > p.late):
                self._drop(p, Shed("late", f"dropped: its batch finished "
                                           f"{(end - p.deadline) * 1000:.0f} ms after its "
                                           f"deadline (not served late)", "dropped"),
                           queued=False)
            else:
                if m.fronts:  # before the caller hears: its next request may hit the cache
                    front.observe(m.fronts, p.inputs, out, p.source)
                p.resolve(Answer(out, start - p.arrival, compute, len(batch)))
        self.observer.batch(m.name, len(batch), [start - p.arrival for p in batch], compute,
                            limit)

    def _compute(self, m: ServedModel, batch: list[Pending], until: float
                 ) -> list[Inputs | Shed]:
        """Each request's outputs; when the batch fails, each request alone, so one bad request
        fails only itself."""
        try:
            return list(m.runner([p.inputs for p in batch], until))
        except Exception as e:
            if len(batch) == 1:
                return [_failure(m, e)]
        out: list[Inputs | Shed] = []
        for p in batch:
            try:
                out.extend(m.runner([p.inputs], until))
            except Exception as e:
                out.append(_failure(m, e))
        return out


def _failure(m: ServedModel, e: Exception) -> Shed:
    if isinstance(e, RuntimeError | ValueError):  # wrong shapes or values reach here
        return Shed("bad_input", f"model {m.name} failed on the given tensors: "
                                 f"{(str(e).splitlines() or [''])[0][:300]}", "dropped")
    log.error("model %s failed", m.name, exc_info=(type(e), e, e.__traceback__))
    return Shed("failed", f"model {m.name} failed: {type(e).__name__}: {str(e)[:200]}",
                "dropped")
