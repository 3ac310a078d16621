"""Many streams on one edge sharing the filters, with a feedback queue (FFS-VA, Zhang et al. 2018).

Every tick each stream delivers one frame. Each stream keeps its own difference detector (its
scene, its thresholds); the frames that pass go to ONE specialised model, run once as a batch
over all streams; the frames it is unsure about join ONE queue in front of the reference model,
which answers ``capacity`` frames per tick on average (what the edge can afford in a frame's
time; it may be below one: a token bucket) as one batch, once the queue holds a batch or its
oldest frame has waited ``max_wait`` ticks (FFS-VA batches each stage from its queue: bigger
batches cost less per frame). FFS-VA balances
its stages' rates with feedback from the queues; here, when the reference queue grows past
``queue_limit``, the stream holding most frames in it has its uncertain band (c_low, c_high)
narrowed by a fraction ``step`` toward its middle, so its specialised model answers more of its
frames itself; when the queue is back under half the limit, narrowed bands widen again toward
the optimiser's choice. Narrowing trades accuracy for keeping up, so a run reports how often
it happened.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from edgeweave.errors import ServeError
from edgeweave.serve.filter.cascade import DIFFERENCE, SPECIALISED, Query, Thresholds
from edgeweave.serve.filter.difference import DifferenceDetector
from edgeweave.serve.stage import MODEL, check_positive_int, check_stream


@dataclass(frozen=True)
class MuxRun:
    answers: dict[str, np.ndarray]
    stages: dict[str, list[str]]
    cpu_ms: dict[str, float]            #: per stage, plus "total"
    delay_ticks: np.ndarray             #: answer tick - arrival tick, every frame
    narrowed: int                       #: ticks on which feedback narrowed a band
    peak_queue: int

    @property
    def frames(self) -> int:
        return sum(len(a) for a in self.answers.values())

    @property
    def fps(self) -> float:
        return self.frames / (self.cpu_ms["total"] / 1000.0)

    def reached(self, stage: str) -> float:
        order = {DIFFERENCE: 0, SPECIALISED: 1, MODEL: 2}
        n = sum(order[s] >= order[stage] for st in self.stages.values() for s in st)
        return n / self.frames


@dataclass
class StreamMux:
    detectors: Mapping[str, DifferenceDetector]
    thresholds: Mapping[str, Thresholds]
    specialised: nn.Module
    query: Query
    capacity: float
    queue_limit: int
    max_wait: int = 3
    step: float = 0.1
    _bands: dict[str, Thresholds] = field(default_factory=dict, init=False, repr=False)
    _tokens: float = field(default=0.0, init=False, repr=False)
    _skips: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.capacity, int | float) and self.capacity > 0):
            raise ServeError(f"filter.reference_capacity must be a positive number of frames "
                             f"per tick, got {self.capacity!r}")
        check_positive_int(self.queue_limit, "filter.queue_limit")
        if set(self.detectors) != set(self.thresholds):
            raise ServeError("every stream needs both a difference detector and thresholds")

    def run(self, streams: Mapping[str, torch.Tensor]) -> MuxRun:
        """All streams, tick by tick, until every frame is answered."""
        if set(streams) != set(self.detectors):
            raise ServeError(f"streams {sorted(streams)} do not match the configured streams "
                             f"{sorted(self.detectors)}")
        for name, frames in streams.items():
            check_stream(frames, self.query.input_shape, f"stream {name!r}")
        n = min(len(f) for f in streams.values())
        self._bands = dict(self.thresholds)
        self._tokens, self._skips = 0.0, {}
        answers = {s: np.full(n, -1, dtype=np.int64) for s in streams}
        stages: dict[str, list[str]] = {s: [""] * n for s in streams}
        delay: list[int] = []
        queue: deque[tuple[str, int]] = deque()
        cpu: dict[str, float] = {DIFFERENCE: 0.0, SPECIALISED: 0.0, MODEL: 0.0}
        narrowed = peak = 0
        total0 = time.thread_time()
        tick = 0
        while tick < n or queue:
            if tick < n:
                passed = self._detect(streams, tick, answers, stages, delay, cpu)
                self._specialise(streams, tick, passed, answers, stages, delay, queue, cpu)
            self._reference(streams, tick, tick >= n - 1, answers, stages, delay, queue, cpu)
            peak = max(peak, len(queue))
            narrowed += self._feedback(queue)
            tick += 1
        cpu["total"] = (time.thread_time() - total0) * 1000.0
        return MuxRun(answers, stages, cpu, np.array(delay), narrowed, peak)

    # ---- the three shared stages ------------------------------------------------------------
    def _detect(self, streams, tick, answers, stages, delay, cpu) -> list[str]:
        start = time.thread_time()
        passed = []
        for s, frames in streams.items():
            det = self.detectors[s]
            back = tick - det.t
            earlier = frames[back:back + 1] if det.mode == "earlier" and back >= 0 else None
            known = det.mode == "reference" or (back >= 0 and answers[s][back] >= 0)
            score = det.score(frames[tick:tick + 1], earlier) if known else 1.0
            run = self._skips.get(s, 0)
            if score < self._bands[s].difference and det.may_skip(run):
                self._skips[s] = run + 1
                answers[s][tick] = answers[s][back] if det.mode == "earlier" else 0
                stages[s][tick] = DIFFERENCE
                delay.append(0)
            else:
                self._skips[s] = 0
                passed.append(s)
        cpu[DIFFERENCE] += (time.thread_time() - start) * 1000.0
        return passed

    def _specialise(self, streams, tick, passed, answers, stages, delay, queue, cpu) -> None:
        if not passed:
            return
        start = time.thread_time()
        batch = torch.cat([streams[s][tick:tick + 1] for s in passed])
        with torch.inference_mode():
            probs = torch.softmax(self.specialised(batch), dim=1)[:, 1].tolist()
        for s, p in zip(passed, probs, strict=True):
            band = self._bands[s]
            if band.c_low <= p <= band.c_high:
                queue.append((s, tick))
                continue
            answers[s][tick] = int(p > band.c_high)
            stages[s][tick] = SPECIALISED
            delay.append(0)
        cpu[SPECIALISED] += (time.thread_time() - start) * 1000.0

    def _reference(self, streams, tick, last, answers, stages, delay, queue, cpu) -> None:
        """Up to the frames the token bucket allows, as one batch, once the queue holds a batch,
        the oldest frame has waited ``max_wait`` ticks, or the streams have ended."""
        self._tokens = min(self._tokens + self.capacity, 4 * self.capacity + 1)
        batch_size = max(1, int(self.capacity))
        due = len(queue) >= batch_size or last or \
            (bool(queue) and tick - queue[0][1] >= self.max_wait)
        take = min(len(queue), int(self._tokens))
        if not due or take == 0:
            return
        self._tokens -= take
        start = time.thread_time()
        batch = [queue.popleft() for _ in range(take)]
        frames = torch.cat([streams[s][t:t + 1] for s, t in batch])
        labels = self.query.labels(frames, batch=len(batch))
        for (s, t), label in zip(batch, labels.tolist(), strict=True):
            answers[s][t] = int(label)
            stages[s][t] = MODEL
            delay.append(tick - t)
        cpu[MODEL] += (time.thread_time() - start) * 1000.0

    def _feedback(self, queue: deque[tuple[str, int]]) -> int:
        """Narrow the busiest stream's band when the queue is over its limit; widen narrowed
        bands back when it is under half of it. Returns 1 if a band was narrowed."""
        if len(queue) > self.queue_limit:
            busiest = Counter(s for s, _ in queue).most_common(1)[0][0]
            band = self._bands[busiest]
            mid = (band.c_low + band.c_high) / 2
            self._bands[busiest] = replace(band, c_low=band.c_low + self.step * (mid - band.c_low),
                                           c_high=band.c_high - self.step * (band.c_high - mid))
            return 1
        if len(queue) < self.queue_limit / 2:
            for s, band in self._bands.items():
                goal = self.thresholds[s]
                if band != goal:
                    self._bands[s] = replace(
                        band, c_low=max(goal.c_low, band.c_low - self.step),
                        c_high=min(goal.c_high, band.c_high + self.step))
        return 0


def reference_alone(query: Query, streams: Mapping[str, torch.Tensor]) -> tuple[float, dict]:
    """The reference on every frame, batched over the streams tick by tick: CPU ms and the
    answers per stream."""
    n = min(len(x) for x in streams.values())
    out: dict[str, list[int]] = {s: [] for s in streams}
    start = time.thread_time()
    for t in range(n):
        labels = query.labels(torch.cat([x[t:t + 1] for x in streams.values()]),
                              batch=len(streams))
        for s, label in zip(streams, labels.tolist(), strict=True):
            out[s].append(int(label))
    return (time.thread_time() - start) * 1000.0, {s: np.array(v) for s, v in out.items()}


def compare(mux: StreamMux, streams: Mapping[str, torch.Tensor], chunk: int = 150
            ) -> tuple[float, MuxRun]:
    """The reference alone (CPU ms) and the mux on the same streams, alternating chunks of
    ``chunk`` ticks so both see the same load on a shared host. Each chunk starts the mux
    afresh (bands at the optimiser's values, empty queue)."""
    n = min(len(x) for x in streams.values())
    alone_ms, runs = 0.0, []
    for i in range(0, n, chunk):
        part = {s: x[i:i + chunk] for s, x in streams.items()}
        alone_ms += reference_alone(mux.query, part)[0]
        runs.append(mux.run(part))
    return alone_ms, MuxRun(
        {s: np.concatenate([r.answers[s] for r in runs]) for s in streams},
        {s: [x for r in runs for x in r.stages[s]] for s in streams},
        {k: sum(r.cpu_ms[k] for r in runs) for k in runs[0].cpu_ms},
        np.concatenate([r.delay_ticks for r in runs]),
        sum(r.narrowed for r in runs), max(r.peak_queue for r in runs))
