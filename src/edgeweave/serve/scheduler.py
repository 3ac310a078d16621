"""Which batch runs next, across every model on the node, and what is shed instead.

Policy "edf" (the default): earliest deadline first across models (Liu and Layland 1973; the
order Clipper and Nexus serve SLOs by). A model is *ready* when its queue holds the batch worth
waiting for (`ServedModel.target`), when its oldest request has waited `max_delay_ms`, or when
waiting any longer would make its most urgent request miss its deadline; among ready models,
the one whose most urgent request is due first runs. A batch is the model's most urgent
requests, as many as finish before the first of their deadlines even when the batch runs slow
(all of a batch finish together; `LatencyModel.bound`). A request that cannot meet its deadline
even alone is dropped before it costs any compute, and one that would not meet it in the
batches its queue will run in, or only in a batch cut small (`place`), is rejected on arrival,
so under overload the node spends its time only on requests it can answer in time and the
devices learn at once to answer the others themselves.
When more than a full batch is queued, the most urgent requests that a full batch could no
longer serve in time are dropped so that the full batch behind them runs (`_early_drop`),
rather than batch after batch cut small to fit them. On an idle node (a worker free, nothing
else queued) a request is refused or dropped only once its deadline has passed, not on the
estimate (`next`). Priority decides who is shed when a queue is full (a request displaces a
queued one of lower priority) and breaks deadline ties.

Policy "fifo": arrival order, no deadline checks: the node as it was before batching (with max
batch 1), kept as the baseline the serving benchmark measures against.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from edgeweave.serve.config import POLICIES
from edgeweave.serve.latency import LatencyModel
from edgeweave.serve.pending import Pending, Shed
from edgeweave.serve.queues import ServedModel


@dataclass
class Decision:
    model: ServedModel | None = None
    batch: list[Pending] = field(default_factory=list)
    dropped: list[tuple[Pending, Shed]] = field(default_factory=list)
    wake_at: float | None = None  # when a model not ready now becomes ready


class Scheduler:
    def __init__(self, policy: str = "edf"):
        if policy not in POLICIES:
            raise ValueError(f"policy {policy!r}: expected one of {POLICIES}")
        self.policy = policy
        self.edf = policy == "edf"

    def order(self, item: Pending) -> tuple[float, int, int]:
        return item.edf_key() if self.edf else item.fifo_key()

    # ---- on arrival -----------------------------------------------------------------------

    def check_deadline(self, model: ServedModel, item: Pending, now: float,
                       backlog_s: float, idle_node: bool = False,
                       run_s: float | None = None, served: bool = True, size: int = 1
                       ) -> None:
        """Reject (Shed) a request that cannot finish in time: its deadline already past, or,
        by the estimate, when the batch it runs in (of `size`, `run_s` seconds; None: a batch
        of one) starts `backlog_s` seconds from now, or when the batches its queue will run
        in drop it (`served` False, see `place`) (`idle_node`: on an idle node only a deadline
        already past; see `next`). In time is by its sender's grace (`Pending.late`): an
        answer that late is still sent (`Engine.submit`), so refusing a request the estimate
        has finishing within it would be a sure loss for a likely answer in time. The refusal
        says the figures it was decided on."""
        if not self.edf or item.deadline == float("inf"):
            return
        self.check_passed(item, now)
        left_ms = (item.deadline - now) * 1000.0
        if idle_node:
            return
        run = model.latency.estimate(1) if run_s is None else run_s
        if not served or now + backlog_s + run > item.late:
            why = "" if served else (" (in the batches its queue will run in, it would be "
                                     "dropped, or wait behind a batch cut to its deadline)")
            grace = (item.late - item.deadline) * 1000.0
            raise Shed("deadline", f"cannot meet its deadline: {left_ms:.0f} ms left"
                                   f"{f' (+{grace:.0f} ms grace)' if grace else ''}, about "
                                   f"{backlog_s * 1000:.0f} ms of queued work ahead of it and "
                                   f"{run * 1000:.0f} ms to run the batch it joins ({size} "
                                   f"request{'s' if size != 1 else ''})"
                                   f"{why}")

    @staticmethod
    def check_passed(item: Pending, now: float) -> None:
        """Reject (Shed) a request whose deadline has passed."""
        if item.deadline <= now:
            raise Shed("deadline", f"its deadline passed {(now - item.deadline) * 1000:.0f} "
                                   f"ms before it arrived")

    @staticmethod
    def victim(models: Iterable[ServedModel], priority: int) -> Pending | None:
        """The queued request a request of `priority` may displace from a full queue: the one
        of lowest priority (below `priority`) due last."""
        best: Pending | None = None
        for m in models:
            for p in m.items:
                if p.priority < priority and (best is None or (p.priority, -p.deadline, -p.seq)
                                              < (best.priority, -best.deadline, -best.seq)):
                    best = p
        return best

    # ---- the next batch -------------------------------------------------------------------

    def next(self, models: Iterable[ServedModel], now: float) -> Decision:
        """The batch a free worker runs now. A request alone on the node is run even when
        the latency estimate says it will finish late (it is dropped if it does, never served
        late): the estimate is corrected only by running, and a node that shed everything on
        an estimate grown during a slow spell of its host never ran again to see the spell
        was over (measured: ResNet-18 at 150% and 200% load, host load 15 on 2 cores,
        goodput 0 for the whole run); on an idle node that costs nobody anything."""
        decision = Decision()
        best: tuple[tuple[float, int, int], ServedModel, int] | None = None
        models = list(models)
        alone = sum(len(m.items) for m in models) == 1
        for m in models:
            if not m.items:
                continue
            if self.edf:
                decision.dropped.extend(self._expire(m, now, estimated=not alone))
                decision.dropped.extend(self._early_drop(m, now))
                if not m.items:
                    continue
            size, due = self._plan(m, now)
            if size:
                rank = self.order(m.head())
                if best is None or rank < best[0]:
                    best = (rank, m, size)
            elif decision.wake_at is None or due < decision.wake_at:
                decision.wake_at = due
        if best is not None:
            _, decision.model, size = best
            decision.batch = decision.model.take(size)
        return decision

    def _expire(self, m: ServedModel, now: float, estimated: bool = True
                ) -> list[tuple[Pending, Shed]]:
        """Drop the most urgent requests while even a batch of one would finish late (by the
        estimate; `estimated` False: only once their deadline has passed)."""
        out = []
        alone = m.latency.estimate(1) if estimated else 0.0
        while m.items and now + alone > m.head().deadline:
            item = m.take(1)[0]
            left = (item.deadline - now) * 1000.0
            out.append((item, Shed("deadline", f"dropped: it can no longer meet its deadline "
                                               f"({left:.0f} ms left, a batch of one takes "
                                               f"{alone * 1000:.0f} ms)", "dropped")))
        return out

    def _early_drop(self, m: ServedModel, now: float) -> list[tuple[Pending, Shed]]:
        """Under overload (more than a full batch queued), drop the most urgent requests that
        would miss their deadline in a full batch started now, when the next full batch of
        requests behind them would not (Nexus's early drop, Shen et al. 2019). Serving them
        instead in a batch cut to fit them spends a worker on a few requests while the full
        batch behind them ages towards its own deadline: one small batch after another, the
        node's goodput falls well below its capacity (measured: ResNet-18 at twice its
        capacity, goodput half of what the same node served without deadlines). A full batch
        started now is what a batching server without deadlines (Ray Serve's @serve.batch)
        would run them in, so a request dropped here would have been served late there too."""
        skip = early_skip(m.keys, 0, m.target, m.latency, now)
        if not skip:
            return []
        took = m.latency.estimate(m.target) * 1000.0
        return [(item, Shed("deadline", f"dropped: the node is overloaded, a full batch takes "
                                        f"about {took:.0f} ms and it had "
                                        f"{(item.deadline - now) * 1000:.0f} ms left; the full "
                                        f"batch behind it runs instead", "dropped"))
                for item in m.take(skip)]

    def _plan(self, m: ServedModel, now: float) -> tuple[int, float]:
        """(size, 0) if the model should run a batch of `size` now, else (0, the instant it
        becomes ready)."""
        n = len(m.items)
        if n >= m.target:  # the preferred size (Triton sends the largest one it can form)
            return self._fit(m, m.target, now), 0.0
        due = m.oldest_arrival() + m.config.max_delay_ms / 1000.0
        if self.edf:  # waiting for more must leave the most urgent one time to run
            due = min(due, m.head().deadline - m.latency.bound(min(m.target, n + 1)))
        if now >= due:
            return self._fit(m, n, now), 0.0
        return 0, due

    def _fit(self, m: ServedModel, size: int, now: float) -> int:
        """The largest batch up to `size` that finishes before its most urgent deadline even
        when it runs slow (`LatencyModel.bound`: a batch finishing late loses all of it); the
        most urgent request alone runs if it still can on average (`_expire` kept it)."""
        return fit(m.latency, size, now, m.head().deadline) if self.edf else size

    # ---- admission: the batches the queue will run in -------------------------------------

    def place(self, m: ServedModel, key: tuple[float, int, int], free: list[float],
              light: bool = False) -> tuple[float, int, bool]:
        """(EDF) Where a new request (order `key`: due at its first field) would run if admitted:
        (the instant its batch starts, that batch's size, whether it is served at all), when
        the workers are free at the instants `free`: the model's queue, with it inserted, played
        out in the scheduler's own batches (`play`). A request served this way finishes in time
        by the estimate (its batch fits its head's deadline, no later than its own).

        It is not served (refused on arrival) either when it would be dropped, or when it would
        run in a batch cut below what is queued for it because the batch's most urgent request
        has too little time left: admitted, it would wait behind requests that can each only
        run in small batches, and reach the head of the queue with little time left itself,
        so that the requests behind it ran in small batches too. Admitted only into batches
        not cut, under overload the node refuses arrivals until the old requests have run and
        then runs full batches of fresh ones (a node with the digits tenants' shape of
        latencies at twice its capacity, on a simulated clock, `tests/serve/test_admission.py`:
        batches of 5 to 8, 92% of its capacity served in time; batches of 1, 27%, when a
        newcomer whose batch was cut was admitted into it; batches of 3, 60%, when the queue
        was counted in the batches the newcomer's own slack allowed, as admission did before).
        A request the cut leaves out, due at least a full batch (its high bound) after the cut
        batch's first request (a long SLO among short ones), waits for a later batch and is
        judged by that one: it can let the urgent batch run first and still make its own.
        One due sooner is refused as before: under one SLO the requests a cut leaves out are
        about as old as those it kept, and a newcomer admitted behind them kept the node in
        small batches (simulated as above: 85% of capacity, batches of 8 and 3 in turn).
        That refusal is for the node's throughput under overload, so it applies only then:
        when the node keeps up with its arrivals even serving them one at a time (`light`,
        see `Engine._finish_after`), a newcomer left out of a cut batch costs nobody
        anything and is judged by the later batch it runs in (measured: ResNet-18 at half its
        capacity, a request arriving just behind two others was refused this way with 221
        ms left, though it would have run alone after them within about 180 ms)."""
        keys = list(m.keys)
        pos = bisect.bisect_left(keys, key)
        keys.insert(pos, key)
        for start, lo, hi, size in self.play(m, keys, free):
            if not lo <= pos < hi:
                continue
            if size == 0:  # dropped
                return start, 1 if hi - lo == 1 else m.target, False
            if pos < lo + size:
                return start, size, size == hi - lo
            if not light and key[0] - keys[lo][0] < m.latency.bound(m.target):
                return start, size, False  # left out of a cut batch, and due soon after it
        raise AssertionError("every queued request is dropped or in a batch")  # pragma: no cover

    def work(self, m: ServedModel, key: tuple[float, int, int], free: list[float]) -> float:
        """Seconds of compute the model's queued requests ordered before `key` take, in the
        batches the scheduler will run them in (`play`, from the workers' free instants
        `free`): the work a request of another model due at `key` finds ahead of it (a batch
        whose most urgent request is ahead of it runs before it, whole), and with `key` last
        the work a device is told is queued (`Engine.load`). Admission counts its own model's
        queue the same way (`place`), so one rule prices every queue."""
        n = bisect.bisect_left(m.keys, key)
        total = 0.0
        if n:
            for _, lo, _, size in self.play(m, m.keys, free):
                if lo >= n:
                    break
                total += m.latency.estimate(size) if size else 0.0
        return total

    def play(self, m: ServedModel, keys: list[tuple[float, int, int]], free: list[float]
             ) -> Iterator[tuple[float, int, int, int]]:
        """The queue `keys` (model `m`'s order keys, sorted) played out as `next` would serve
        it with nothing else arriving, the workers free at the instants `free`: each free
        worker drops the most urgent requests that even alone would finish late (`_expire`)
        or that a full batch could not serve when a full batch is queued behind them
        (`_early_drop`), and runs as many as finish before the first of their deadlines
        (`fit`); each batch takes its estimate. Yields (start, lo, hi, size) in order: the
        requests `lo`..`hi`-1 dropped at `start` (size 0), or a batch of the first `size` of
        them started at `start` (`hi` - `lo` was queued for it; those beyond `size` wait for
        a later batch). Under FIFO every batch is whole and nothing is dropped."""
        heap = list(free) or [0.0]
        heapq.heapify(heap)
        lat, target, head = m.latency, m.target, 0
        alone = lat.estimate(1)
        while head < len(keys):
            start = heapq.heappop(heap)
            if self.edf:
                gone = head
                while gone < len(keys) and start + alone > keys[gone][0]:  # `_expire`
                    gone += 1
                if gone > head:
                    yield start, head, gone, 0
                    head = gone
                skip = early_skip(keys, head, target, lat, start)
                if skip:
                    yield start, head, head + skip, 0
                    head += skip
                if head >= len(keys):
                    return
            whole = min(target, len(keys) - head)
            size = fit(lat, whole, start, keys[head][0]) if self.edf else whole
            yield start, head, head + whole, size
            head += size
            heapq.heappush(heap, start + lat.estimate(size))


def fit(latency: LatencyModel, size: int, start: float, deadline: float) -> int:
    """The largest batch up to `size` started at `start` that finishes by `deadline` even
    when it runs slow (`LatencyModel.bound`); at least 1."""
    while size > 1 and start + latency.bound(size) > deadline:
        size -= 1
    return size


def early_skip(keys: list[tuple[float, int, int]], head: int, target: int,
               latency: LatencyModel, start: float) -> int:
    """How many of the requests from `head` on (`keys`: order keys, by deadline) `_early_drop`
    drops when a worker is free at `start`: those a full batch (`target`) started then would
    finish after, when a full batch of requests behind them would not (0: none)."""
    if target <= 1 or len(keys) - head <= target:
        return 0
    full = start + latency.estimate(target)  # can it make it (the mean: a drop is sure)?
    if keys[head][0] >= full:
        return 0
    skip = bisect.bisect_left(keys, (full,), lo=head)  # the first one a full batch serves
    return 0 if len(keys) - skip < target else skip - head


def start_after(free_s: list[float], work_s: float) -> float:
    """Seconds until a worker is free for a new request, when the workers are free after
    `free_s` seconds (0: idle) and `work_s` seconds of queued work run before it: the queued
    work goes to the first workers free (water-filling), and the request starts at the level
    it fills them to. The work spread evenly over every worker ((sum of `free_s` + `work_s`) /
    workers, what admission used before) is this level only when the work reaches every
    worker; with little queued it overstated the wait by up to half the batch another worker
    had just begun (ResNet-18, two workers: a request due in time behind one worker about to
    finish was refused for the other worker's batch of eight)."""
    free = sorted(free_s)
    if not free:
        return work_s
    level = total = 0.0
    for k, f in enumerate(free):
        total += f
        level = (total + work_s) / (k + 1)
        if k + 1 == len(free) or level <= free[k + 1]:
            break
    return level
