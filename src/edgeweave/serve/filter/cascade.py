"""The input-filtering cascade (NoScope, Kang et al. 2017; FFS-VA, Zhang et al. 2018) as a stage
in front of the reference model.

A query asks of every frame whether it holds an object of interest (the reference model's
label is one of the ``positive`` classes). The cascade answers it in up to three steps:

1. difference detector score below ``difference``: the frame is the empty scene (reference
   mode: answer "no") or the frame ``t`` earlier (earlier mode: that frame's answer; at most
   ``refresh`` frames in a row);
2. specialised model's P(object) below ``c_low``: "no"; above ``c_high``: "yes";
3. otherwise the frame goes on to the reference model (the cascade returns None).

:func:`stage_of` is the rule itself, so a test can hold the cascade to it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edgeweave.errors import ServeError
from edgeweave.serve.filter.difference import DifferenceDetector
from edgeweave.serve.stage import MODEL, Verdict, check_fraction, check_sample

DIFFERENCE, SPECIALISED = "difference", "specialised"
STAGES = (DIFFERENCE, SPECIALISED, MODEL)


@dataclass(frozen=True)
class Thresholds:
    """The detector threshold and the specialised model's confidence pair, all in [0, 1]."""

    difference: float
    c_low: float
    c_high: float

    def __post_init__(self) -> None:
        check_fraction(self.difference, "filter.difference_threshold")
        check_fraction(self.c_low, "filter.c_low")
        check_fraction(self.c_high, "filter.c_high")
        if self.c_low > self.c_high:
            raise ServeError(f"filter.c_low ({self.c_low}) must not exceed filter.c_high "
                             f"({self.c_high})")


#: Every frame goes on to the reference model (the cascade answers nothing).
PASS_ALL = Thresholds(0.0, 0.0, 1.0)
#: Every frame reaches the specialised model, which answers all (to measure the filters' cost).
SPECIALISED_ANSWERS_ALL = Thresholds(0.0, 0.5, 0.5)


def stage_of(score: float, probability: float | None, th: Thresholds,
             may_skip: bool = True) -> str:
    """Which stage answers a frame with this detector score and P(object) (``may_skip``:
    whether the detector's refresh rule lets this frame skip)."""
    if score < th.difference and may_skip:
        return DIFFERENCE
    assert probability is not None
    if probability < th.c_low or probability > th.c_high:
        return SPECIALISED
    return MODEL


class Query:
    """The reference model and the classes the query asks for: answers 1 (object) or 0."""

    def __init__(self, reference: nn.Module, positive: Sequence[int],
                 input_shape: Sequence[int]):
        self.reference = reference.eval()
        self.positive = torch.tensor(sorted(set(positive)), dtype=torch.long)
        self.input_shape = tuple(input_shape)

    @torch.inference_mode()
    def __call__(self, frame: torch.Tensor) -> Verdict:
        probs = torch.softmax(self.reference(frame), dim=1)[0]
        p = float(probs[self.positive].sum())
        return Verdict(int(p > 0.5), max(p, 1 - p), MODEL)

    @torch.inference_mode()
    def labels(self, frames: torch.Tensor, batch: int = 256) -> np.ndarray:
        """The query's answer for every frame of a stream (the reference run on all)."""
        out = []
        for i in range(0, len(frames), batch):
            probs = torch.softmax(self.reference(frames[i:i + batch]), dim=1)
            out.append(probs[:, self.positive].sum(dim=1) > 0.5)
        return torch.cat(out).numpy()


class Cascade:
    """Difference detector and specialised model in front of a :class:`Query`, per stream
    (``source``); a :class:`~edgeweave.serve.stage.FrontStage` named ``filter``. Keeps the
    CPU time each stage spent and how many frames each answered."""

    name = "filter"

    def __init__(self, detector: DifferenceDetector, specialised: nn.Module,
                 thresholds: Thresholds, input_shape: Sequence[int]):
        self.detector, self.specialised = detector, specialised.eval()
        self.thresholds, self.input_shape = thresholds, tuple(input_shape)
        self._history: dict[str, deque[tuple[torch.Tensor, int]]] = {}
        self._skips: dict[str, int] = {}  # frames in a row that skipped, per stream
        self.cpu_ms = {DIFFERENCE: 0.0, SPECIALISED: 0.0}
        self.reached = {DIFFERENCE: 0, SPECIALISED: 0, MODEL: 0}

    def lookup(self, x: torch.Tensor, source: str = "") -> Verdict | None:
        frame = check_sample(x, self.input_shape, "frame")
        th = self.thresholds
        start = time.thread_time()
        self.reached[DIFFERENCE] += 1
        past = self._history.get(source)
        earlier = past[0] if past is not None and len(past) == self.detector.t else None
        score = self.detector.score(frame, None if earlier is None else earlier[0])
        run = self._skips.get(source, 0)
        if score < th.difference and self.detector.may_skip(run):
            self._skips[source] = run + 1
            label = earlier[1] if self.detector.mode == "earlier" and earlier else 0
            self.cpu_ms[DIFFERENCE] += (time.thread_time() - start) * 1000.0
            return Verdict(label, 1.0 - score, DIFFERENCE)
        self._skips[source] = 0
        mid = time.thread_time()
        self.cpu_ms[DIFFERENCE] += (mid - start) * 1000.0
        self.reached[SPECIALISED] += 1
        with torch.inference_mode():
            p = float(torch.softmax(self.specialised(frame), dim=1)[0, 1])
        found = None
        if p < th.c_low:
            found = Verdict(0, 1.0 - p, SPECIALISED)
        elif p > th.c_high:
            found = Verdict(1, p, SPECIALISED)
        else:
            self.reached[MODEL] += 1
        self.cpu_ms[SPECIALISED] += (time.thread_time() - mid) * 1000.0
        return found

    def observe(self, x: torch.Tensor, source: str, answer: Verdict) -> None:
        """Remember the frame and its answer, for the earlier-frame detector."""
        if self.detector.mode == "earlier":
            past = self._history.setdefault(source, deque(maxlen=self.detector.t))
            past.append((check_sample(x, self.input_shape, "frame"), answer.label))

    def reset(self) -> None:
        self._history.clear()
        self._skips.clear()
        self.cpu_ms = dict.fromkeys(self.cpu_ms, 0.0)
        self.reached = dict.fromkeys(self.reached, 0)
