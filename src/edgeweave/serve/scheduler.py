"""Which batch runs next, across every model on the node, and what is shed instead.

Policy "edf" (the default): earliest deadline first across models (Liu and Layland 1973; the
order Clipper and Nexus serve SLOs by). A model is *ready* when its queue holds the batch worth
waiting for (`ServedModel.target`), when its oldest request has waited `max_delay_ms`, or when
waiting any longer would make its most urgent request miss its deadline; among ready models,
the one whose most urgent request is due first runs. A batch is the model's most urgent
requests, as many as finish before the first of their deadlines even when the batch runs slow
(all of a batch finish together; `LatencyModel.bound`). A request that cannot meet its deadline
even alone is dropped before it costs any compute, and one that would not meet it behind the
work already queued is rejected on arrival, so under overload the node spends its time only on
requests it can answer in time and the devices learn at once to answer the others themselves.
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
from collections.abc import Iterable
from dataclasses import dataclass, field

from edgeweave.serve.config import POLICIES
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
                       run_s: float | None = None) -> None:
        """Reject (Shed) a request that cannot finish by its deadline: already past, or, by
        the estimate, when the batch it runs in (`run_s` seconds; None: a batch of one)
        starts `backlog_s` seconds from now (`idle_node`: on an idle node only a deadline
        already past; see `next`)."""
        if not self.edf or item.deadline == float("inf"):
            return
        self.check_passed(item, now)
        left_ms = (item.deadline - now) * 1000.0
        if idle_node:
            return
        run = model.latency.estimate(1) if run_s is None else run_s
        if now + backlog_s + run > item.deadline:
            raise Shed("deadline", f"cannot meet its deadline: {left_ms:.0f} ms left, about "
                                   f"{backlog_s * 1000:.0f} ms of queued work ahead of it and "
                                   f"{run * 1000:.0f} ms to run the batch it joins")

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
        size = m.target
        if size <= 1 or len(m.items) <= size:
            return []
        full = now + m.latency.estimate(size)  # can it make it (the mean: a drop is sure)?
        if m.head().deadline >= full:
            return []
        skip = bisect.bisect_left(m.keys, (full,))  # the first one a full batch would serve
        if len(m.items) - skip < size:
            return []
        took = m.latency.estimate(size) * 1000.0
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
        if self.edf:
            deadline = m.head().deadline
            while size > 1 and now + m.latency.bound(size) > deadline:
                size -= 1
        return size


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
