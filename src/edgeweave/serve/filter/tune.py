"""Building a stream's cascade from its own frames: train the specialised model and the
detectors on one stretch of the stream labelled by the reference model, then choose thresholds
on a later stretch (:mod:`.optimise`). Stage costs are measured twice: first in isolation
(what each stage costs per frame), then with the chosen cascade running (where the reference
model runs only now and then, with colder caches, as it will in service) interleaved with the
reference alone on the same frames; the thresholds are re-chosen with the second measurement,
which is also what predicts the speedup."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edgeweave.errors import ServeError
from edgeweave.serve.filter.cascade import PASS_ALL, Cascade, Query
from edgeweave.serve.filter.difference import DifferenceDetector
from edgeweave.serve.filter.optimise import Candidate, FilterChoice, optimise
from edgeweave.serve.filter.run import costs_of, measure_costs, run_interleaved
from edgeweave.serve.filter.specialised import object_probability, train_specialised
from edgeweave.serve.stage import check_stream


@dataclass(frozen=True)
class TunedFilter:
    cascade: Cascade
    choice: FilterChoice
    considered: list[FilterChoice]   #: the best choice for each detector, first pass
    train_positive: float            #: fraction of training frames the reference called objects


def tune_cascade(query: Query, train: torch.Tensor, tune: torch.Tensor,
                 detectors: Sequence[DifferenceDetector], *, max_fn: float, max_fp: float,
                 specialised: nn.Module | None = None, epochs: int = 15, seed: int = 0,
                 cost_sample: int = 300) -> TunedFilter:
    """A cascade for one stream, from ``train`` and ``tune`` frames ``(N, C, H, W)`` in [0, 1];
    the specialised model is trained on ``train`` unless one is given (shared by streams)."""
    check_stream(train, query.input_shape, "training stream")
    check_stream(tune, query.input_shape, "tuning stream")
    if not detectors:
        raise ServeError("tuning the filter needs at least one difference detector")
    train_truth = query.labels(train)
    truth = query.labels(tune)
    if specialised is None:
        specialised = train_specialised(train, train_truth, epochs=epochs, seed=seed)
    probs = object_probability(specialised, tune)
    candidates, considered = [], []
    for det in detectors:
        det.fit(train, train_truth)
        costs = measure_costs(Cascade(det, specialised, PASS_ALL, query.input_shape), query,
                              tune, cost_sample)
        cand = Candidate(det, det.scores(tune), costs)
        candidates.append(cand)
        considered.append(optimise([cand], probs, truth, max_fn, max_fp))
    first = min(considered, key=lambda c: c.expected_ms)
    cascade = Cascade(first.detector, specialised, first.thresholds, query.input_shape)
    alone, run = run_interleaved(cascade, query, tune, "tuning")
    chosen = next(c for c in candidates if c.detector is first.detector)
    in_service = costs_of(cascade, run, alone.cpu_ms / len(tune), fallback=chosen.costs)
    choice = optimise([Candidate(chosen.detector, chosen.scores, in_service)], probs, truth,
                      max_fn, max_fp)
    cascade = Cascade(choice.detector, specialised, choice.thresholds, query.input_shape)
    return TunedFilter(cascade, choice, considered, float(np.mean(train_truth)))
