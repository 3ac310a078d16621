"""The protocol of a stage in front of a served model, and the checks every stage shares.

A front stage sees each request before the model does and may answer it itself: a semantic
cache answers with a cached label when the nearest cached inputs agree (FoggyCache, Cachier),
an input filter answers "nothing here" for a frame that did not change or that a small
specialised model is sure about (NoScope, FFS-VA). The serving engine asks its stages in order
(:meth:`Front.lookup`), runs the model only on what none answered, then tells every stage the
model's answer (:meth:`Front.observe`) so a cache can insert it and a filter can remember it.
Inputs are plain tensors of one sample and answers are plain data, so the same stages can run
in-process now and behind the edge server's gRPC pipeline later.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol, runtime_checkable

import torch

from edgeweave.errors import ServeError

#: Who answered a request: a cache level, a filter stage, or the served model itself.
MODEL = "model"


@dataclass(frozen=True)
class Verdict:
    """A label for one request and where it came from (a front stage's answer; not the serving
    engine's ``serve.pending.Answer``, which carries output tensors).

    ``score`` is the evidence behind the label in [0, 1]: a cache's vote share, a filter's
    confidence, or the model's softmax probability.
    """

    label: int
    score: float
    stage: str


@runtime_checkable
class FrontStage(Protocol):
    """A stage in front of a served model (see the module doc)."""

    name: str

    def lookup(self, x: torch.Tensor, source: str) -> Verdict | None:
        """Answer ``x`` (one sample from ``source``: a device or a stream) or return None to
        pass it on to the next stage and finally to the model."""
        ...

    def observe(self, x: torch.Tensor, source: str, answer: Verdict) -> None:
        """Learn from the final answer to ``x`` (whoever gave it)."""
        ...


class Front:
    """Stages in the order the engine asks them; the engine's whole wiring is
    ``lookup`` per request, the model on the misses, ``observe`` per answer."""

    def __init__(self, stages: Sequence[FrontStage]):
        self.stages = list(stages)

    def lookup(self, x: torch.Tensor, source: str) -> Verdict | None:
        for stage in self.stages:
            found = stage.lookup(x, source)
            if found is not None:
                return found
        return None

    def observe(self, x: torch.Tensor, source: str, answer: Verdict) -> None:
        for stage in self.stages:
            stage.observe(x, source, answer)

    def answer(self, x: torch.Tensor, source: str,
               run_model: Callable[[torch.Tensor], Verdict]) -> Verdict:
        """One request end to end: a stage's answer, else the model's; every stage observes."""
        found = self.lookup(x, source)
        if found is None:
            found = run_model(x)
        self.observe(x, source, found)
        return found


def model_answer(logits: torch.Tensor) -> Verdict:
    """The model's answer from one row of logits: argmax and its softmax probability."""
    probs = torch.softmax(logits.detach().reshape(-1).double(), dim=0)
    label = int(probs.argmax())
    return Verdict(label, float(probs[label]), MODEL)


def check_known_fields(config: type, values: Mapping[str, Any], section: str) -> None:
    """A YAML ``section:`` of ``config`` (a dataclass) names only its fields; an unknown one is
    named with the known ones."""
    known = {f.name for f in fields(config)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ServeError(f"{section} has unknown field(s) {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(known))}")


def check_fraction(value: object, field: str) -> float:
    """A threshold or rate that must lie in [0, 1]; ``field`` is its configuration name."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ServeError(f"{field} must be a number in [0, 1], got {value!r}") from None
    if math.isnan(v) or not 0.0 <= v <= 1.0:
        raise ServeError(f"{field} must be in [0, 1], got {value!r}")
    return v


def check_positive_int(value: object, field: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ServeError(f"{field} must be an integer >= {minimum}, got {value!r}")
    return value


def check_sample(x: torch.Tensor, input_shape: Sequence[int], what: str = "input") -> torch.Tensor:
    """One sample as a batch of one, ``(1, *input_shape[1:])``; a sample given without the batch
    dimension is accepted. Anything else is a :class:`ServeError` naming both shapes."""
    want = tuple(input_shape[1:])
    if not isinstance(x, torch.Tensor):
        raise ServeError(f"{what} must be a tensor of shape {want}, got {type(x).__name__}")
    if tuple(x.shape) == want:
        return x.unsqueeze(0)
    if tuple(x.shape) == (1, *want):
        return x
    raise ServeError(f"{what} has shape {tuple(x.shape)}; the model takes {want} "
                     f"(or (1, {', '.join(map(str, want))}))")


def check_stream(frames: torch.Tensor, input_shape: Sequence[int],
                 what: str = "stream") -> torch.Tensor:
    """A stream of frames ``(N, *input_shape[1:])`` with N >= 1."""
    want = tuple(input_shape[1:])
    if not isinstance(frames, torch.Tensor) or frames.dim() != len(want) + 1:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ServeError(f"{what} must be frames of shape (N, {', '.join(map(str, want))}), "
                         f"got {shape}")
    if frames.shape[0] == 0:
        raise ServeError(f"{what} is empty: it has no frames")
    if tuple(frames.shape[1:]) != want:
        raise ServeError(f"{what} has frames of shape {tuple(frames.shape[1:])}; the model "
                         f"takes {want}")
    return frames
