"""Running a stream through the cascade (or the reference alone) frame by frame, as an edge would
as the frames arrive, timing each stage on this thread's CPU clock (a shared host's other
processes are not the cascade's cost; see :mod:`edgeweave.profile.measure`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from edgeweave.serve.filter.cascade import (
    DIFFERENCE,
    SPECIALISED,
    SPECIALISED_ANSWERS_ALL,
    Cascade,
    Query,
)
from edgeweave.serve.filter.optimise import StageCosts
from edgeweave.serve.stage import MODEL, Verdict, check_stream


@dataclass(frozen=True)
class StreamRun:
    answers: np.ndarray     #: the query's answer per frame (0/1)
    stages: list[str]       #: which stage answered each frame
    cpu_ms: float           #: total CPU time of the run
    reference_ms: float     #: of which the reference model
    wall_ms: float

    @property
    def fps(self) -> float:
        """Frames per second of CPU time."""
        return len(self.answers) / (self.cpu_ms / 1000.0)

    def reached(self, stage: str) -> float:
        """Fraction of frames that reached ``stage`` (every frame reaches the first)."""
        order = {DIFFERENCE: 0, SPECIALISED: 1, MODEL: 2}
        return sum(order[s] >= order[stage] for s in self.stages) / len(self.stages)


def run_stream(cascade: Cascade | None, query: Query, frames: torch.Tensor,
               source: str = "stream") -> StreamRun:
    """Answer every frame of ``frames`` ``(N, C, H, W)`` in [0, 1]: the cascade first (if
    any), the reference model on what it passes on; the cascade observes every answer."""
    check_stream(frames, query.input_shape, f"stream {source!r}")
    answers, stages = np.zeros(len(frames), dtype=np.int64), []
    reference_ms = 0.0
    wall0, cpu0 = time.perf_counter(), time.thread_time()
    for i in range(len(frames)):
        frame = frames[i:i + 1]
        found: Verdict | None = cascade.lookup(frame, source) if cascade is not None else None
        if found is None:
            start = time.thread_time()
            found = query(frame)
            reference_ms += (time.thread_time() - start) * 1000.0
        if cascade is not None:
            cascade.observe(frame, source, found)
        answers[i] = found.label
        stages.append(found.stage)
    cpu_ms = (time.thread_time() - cpu0) * 1000.0
    return StreamRun(answers, stages, cpu_ms, reference_ms,
                     (time.perf_counter() - wall0) * 1000.0)


def run_interleaved(cascade: Cascade, query: Query, frames: torch.Tensor,
                    source: str = "stream", chunk: int = 100) -> tuple[StreamRun, StreamRun]:
    """The reference alone and the cascade on the same frames, alternating chunks of ``chunk``
    frames, so both see the same load: on a shared host a busy minute would otherwise fall on
    one of them and skew their ratio. The cascade keeps its state from chunk to chunk."""
    check_stream(frames, query.input_shape, f"stream {source!r}")
    alone, filtered = [], []
    for i in range(0, len(frames), chunk):
        part = frames[i:i + chunk]
        alone.append(run_stream(None, query, part, f"{source}-alone"))
        filtered.append(run_stream(cascade, query, part, source))
    return _joined(alone), _joined(filtered)


def _joined(runs: list[StreamRun]) -> StreamRun:
    return StreamRun(np.concatenate([r.answers for r in runs]),
                     [s for r in runs for s in r.stages], sum(r.cpu_ms for r in runs),
                     sum(r.reference_ms for r in runs), sum(r.wall_ms for r in runs))


def measure_costs(cascade: Cascade, query: Query, frames: torch.Tensor,
                  sample: int = 300) -> StageCosts:
    """Each stage's CPU ms per frame that reaches it, on the first ``sample`` frames: the
    reference alone from a run without the cascade, the detector and the specialised model
    from a run in which every frame reaches the specialised model and it answers all."""
    part = frames[:sample]
    alone = run_stream(None, query, part, "cost-alone")
    saved = cascade.thresholds
    cascade.thresholds = SPECIALISED_ANSWERS_ALL
    cascade.reset()
    try:
        run = run_stream(cascade, query, part, "cost-filters")
        costs = costs_of(cascade, run, alone.cpu_ms / len(part))
    finally:
        cascade.thresholds = saved
        cascade.reset()
    return replace(costs, reference_ms=alone.reference_ms / len(part))


#: Fewest frames a stage must see in a run for its cost per frame to be taken from that run.
MIN_REACHED = 10


def costs_of(cascade: Cascade, run: StreamRun, alone_ms: float,
             fallback: StageCosts | None = None) -> StageCosts:
    """Per-stage ms per frame reaching it, from a cascade's counters after ``run``; the
    difference stage also carries the per-frame work outside the stages (the loop, observe).
    A stage that saw fewer than :data:`MIN_REACHED` frames in the run keeps its ``fallback``
    cost (a stage the chosen thresholds starve must not look free to the next choice)."""
    n = len(run.answers)
    reached_spec, reached_ref = cascade.reached[SPECIALISED], cascade.reached[MODEL]
    outside = run.cpu_ms - run.reference_ms - sum(cascade.cpu_ms.values())
    spec = cascade.cpu_ms[SPECIALISED] / max(1, reached_spec)
    ref = run.reference_ms / max(1, reached_ref)
    if fallback is not None:
        spec = spec if reached_spec >= MIN_REACHED else fallback.specialised_ms
        ref = ref if reached_ref >= MIN_REACHED else fallback.reference_ms
    return StageCosts(
        difference_ms=(cascade.cpu_ms[DIFFERENCE] + outside) / n,
        specialised_ms=spec,
        reference_ms=ref,
        alone_ms=alone_ms,
    )
