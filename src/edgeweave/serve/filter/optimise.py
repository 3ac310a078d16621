"""Choosing the cascade's thresholds (NoScope's cost-based optimiser, Kang et al. 2017).

On held-out frames of the stream labelled by the reference model, every combination of a
detector threshold and a confidence pair (c_low, c_high) on a grid is replayed exactly as the
cascade would run it (:func:`replay`), giving its false-negative rate (object frames answered
"no", over object frames), false-positive rate (over empty frames) and the fraction of frames
reaching each stage. With the measured cost of each stage per frame that reaches it, the
expected cost per frame is

    difference_ms + reach_specialised * specialised_ms + reach_reference * reference_ms

and the optimiser takes the cheapest combination within the target rates; the predicted
speedup is the reference model's cost alone over that. Several detectors (whole-frame,
blocked, against the empty scene or an earlier frame) can compete, each with its own cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgeweave.errors import ServeError
from edgeweave.serve.filter.cascade import Thresholds
from edgeweave.serve.filter.difference import DifferenceDetector
from edgeweave.serve.stage import check_fraction

#: Grid points per threshold (quantiles of the held-out scores, plus the extremes).
GRID = 24


@dataclass(frozen=True)
class StageCosts:
    """Measured CPU ms per frame reaching each stage, and of the reference model alone."""

    difference_ms: float
    specialised_ms: float
    reference_ms: float
    alone_ms: float


@dataclass(frozen=True)
class Candidate:
    """A fitted detector, its scores on the held-out frames and the measured stage costs."""

    detector: DifferenceDetector
    scores: np.ndarray
    costs: StageCosts


@dataclass(frozen=True)
class FilterChoice:
    detector: DifferenceDetector
    thresholds: Thresholds
    fn_rate: float
    fp_rate: float
    accuracy: float
    reach_specialised: float
    reach_reference: float
    expected_ms: float
    predicted_speedup: float
    costs: StageCosts


def replay(scores: np.ndarray, probs: np.ndarray, truth: np.ndarray,
           detector: DifferenceDetector, difference: float, c_low: np.ndarray,
           c_high: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Answers ``(P, N)`` of the cascade for P confidence pairs at one detector threshold, and
    the per-frame masks of frames reaching the specialised model and the reference (``(N,)``
    and ``(P, N)``). ``truth`` is the reference's answer, which the cascade gets for frames
    it passes on."""
    mode, t = detector.mode, detector.t
    skip = detector.skipped(scores, difference)
    low, high = probs[None, :] < c_low[:, None], probs[None, :] > c_high[:, None]
    to_reference = ~skip[None, :] & ~low & ~high
    answer = np.where(high, 1, np.where(low, 0, truth[None, :].astype(np.int64)))
    if mode == "reference":
        answer[:, skip] = 0
    else:  # a skipped frame repeats the answer given t frames earlier: sequential
        for i in np.flatnonzero(skip):
            answer[:, i] = answer[:, i - t] if i >= t else truth[i]
    return answer, ~skip, to_reference


def optimise(candidates: Sequence[Candidate], probs: np.ndarray, truth: np.ndarray,
             max_fn: float, max_fp: float, grid: int = GRID) -> FilterChoice:
    """The cheapest thresholds within ``max_fn`` and ``max_fp`` on the held-out frames."""
    check_fraction(max_fn, "filter.max_fn")
    check_fraction(max_fp, "filter.max_fp")
    if not candidates or len(truth) == 0 or len(probs) != len(truth):
        raise ServeError("the optimiser needs at least one detector and a non-empty held-out "
                         "stream with the reference's answer for every frame")
    truth = truth.astype(bool)
    levels = _levels(probs, grid)
    lo, hi = np.meshgrid(levels, levels, indexing="ij")
    keep = lo <= hi
    c_low, c_high = lo[keep], hi[keep]
    pos, neg = max(1, int(truth.sum())), max(1, int((~truth).sum()))
    best: FilterChoice | None = None
    for cand in candidates:
        if len(cand.scores) != len(truth):
            raise ServeError("a detector's held-out scores do not match the held-out frames")
        det, c = cand.detector, cand.costs
        for difference in np.concatenate([[0.0], _levels(cand.scores, grid)]):
            answer, to_spec, to_ref = replay(cand.scores, probs, truth, det,
                                             float(difference), c_low, c_high)
            fn = ((answer == 0) & truth).sum(axis=1) / pos
            fp = ((answer == 1) & ~truth).sum(axis=1) / neg
            reach_spec, reach_ref = to_spec.mean(), to_ref.mean(axis=1)
            cost = c.difference_ms + reach_spec * c.specialised_ms + reach_ref * c.reference_ms
            cost = np.where((fn <= max_fn) & (fp <= max_fp), cost, np.inf)
            j = int(np.argmin(cost))
            if np.isfinite(cost[j]) and (best is None or cost[j] < best.expected_ms):
                best = FilterChoice(
                    det, Thresholds(float(difference), float(c_low[j]), float(c_high[j])),
                    float(fn[j]), float(fp[j]), float((answer[j] == truth).mean()),
                    float(reach_spec), float(reach_ref[j]), float(cost[j]),
                    c.alone_ms / float(cost[j]), c)
    assert best is not None  # difference 0, c_low 0, c_high 1 sends all to the reference
    return best


def _levels(values: np.ndarray, grid: int) -> np.ndarray:
    """Grid of thresholds in [0, 1]: quantiles of the values, midway between neighbours
    where they tie, plus 0 and 1."""
    q = np.quantile(values, np.linspace(0, 1, grid))
    return np.unique(np.clip(np.concatenate([[0.0, 1.0], q, np.nextafter(q, 2.0)]), 0, 1))
