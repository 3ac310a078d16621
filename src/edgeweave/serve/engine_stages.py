"""The cache and the filter in the serving engine's front-stage protocol.

The serving engine (issue 15) asks each stage in front of a served model, per request, for
``lookup(x)`` (output tensors that answer the request, or None), ``admit(x)`` (False: the model
need not run; the device keeps the answer it has) and, after the model ran, ``observe(x,
outputs)``. Our stages speak labels (:class:`~edgeweave.serve.stage.Verdict`); these adapters
translate:

- a cache hit becomes the model's kind of output, one row of logits whose argmax is the cached
  label and whose softmax gives that label the vote's share;
- a filter's answer becomes ``admit(x) = False`` when the cascade is sure the frame holds no
  object (the specialised model, or the difference detector repeating an earlier frame's
  "none"); a frame it believes holds one still goes to the model, as a device asking a served
  model wants that model's label for it;
- the model's outputs become its answer (argmax and softmax probability) for both to learn.

Attach them only where the served stage takes the model's input and gives its logits (a whole
model, not a partition's middle). ``source`` names the stream or device (the engine's request
may pass it; one shared stream otherwise): caches answer across sources, filters keep per-
source state. The engine calls ``lookup``/``admit`` from request threads and ``observe`` from its
workers, so each adapter serialises the calls into its stage with a lock.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

import torch

from edgeweave.serve.cache.semantic import SemanticCache
from edgeweave.serve.front import SHARED
from edgeweave.serve.stage import FrontStage, Verdict, model_answer


def logits_for(answer: Verdict, num_classes: int) -> torch.Tensor:
    """``(1, num_classes)`` logits: argmax ``answer.label``, softmax of it ``answer.score``
    (raised just above uniform if the share is lower, so the argmax holds)."""
    share = min(max(answer.score, 1.0 / num_classes + 1e-6), 1.0 - 1e-9)
    rest = (1.0 - share) / max(1, num_classes - 1)
    out = torch.full((1, num_classes), math.log(rest) if rest > 0 else -30.0)
    out[0, answer.label] = math.log(share)
    return out


def _one(x: object) -> torch.Tensor | None:
    """The engine passes one tensor, or a tuple for a model of several inputs (not ours)."""
    return x if isinstance(x, torch.Tensor) else None


class EngineCache:
    """A :class:`SemanticCache` as an engine front stage."""

    def __init__(self, cache: SemanticCache):
        self.cache, self.name = cache, cache.name
        self._lock = threading.Lock()

    def lookup(self, x: object, source: str = SHARED) -> tuple[torch.Tensor] | None:
        t = _one(x)
        if t is None:
            return None
        with self._lock:
            hit = self.cache.lookup(t, source)
        return None if hit is None else (logits_for(hit, self.cache.num_classes),)

    def observe(self, x: object, outputs: Sequence[torch.Tensor], source: str = SHARED) -> None:
        t = _one(x)
        if t is not None and outputs:
            answer = model_answer(outputs[0])
            with self._lock:
                self.cache.observe(t, source, answer)


class EngineFilter:
    """A filter (:class:`~edgeweave.serve.filter.online.LearningFilter` or a tuned
    :class:`~edgeweave.serve.filter.cascade.Cascade`) as an engine front stage."""

    def __init__(self, stage: FrontStage):
        self.stage, self.name = stage, stage.name
        self._lock = threading.Lock()

    def admit(self, x: object, source: str = SHARED) -> bool:
        return self.skip(x, source) is None

    def skip(self, x: object, source: str = SHARED) -> str | None:
        """The cascade's step that answers the frame without the model (``difference`` or
        ``specialised``), or None: only when the cascade is sure the frame holds no object (the
        specialised model, or the difference detector repeating an earlier "none"); a frame it
        believes holds one goes to the model, whose label the device wants. A skipped frame is
        remembered as the stream's latest, as every computed one is (``observe``), so the
        earlier-frame detector compares with the frame before, not the last computed one."""
        t = _one(x)
        if t is None:
            return None
        with self._lock:
            found = self.stage.lookup(t, source)
            if found is None or found.label == 1:
                return None
            self.stage.observe(t, source, found)
        return found.stage

    def state(self, source: str) -> str:
        """The stream's filter: ``learning``, ``active`` or ``unfiltered`` (a tuned cascade
        is always active)."""
        state = getattr(self.stage, "state", None)
        if state is None:
            return "active"
        with self._lock:
            return str(state(source))

    def observe(self, x: object, outputs: Sequence[torch.Tensor], source: str = SHARED) -> None:
        t = _one(x)
        if t is not None and outputs:
            answer = model_answer(outputs[0])
            with self._lock:
                self.stage.observe(t, source, answer)


def for_engine(stages: Sequence[FrontStage]) -> list[EngineCache | EngineFilter]:
    """``build_front``'s stages, in order, for ``Engine.set_front(key, ...)``."""
    return [EngineCache(s) if isinstance(s, SemanticCache) else EngineFilter(s) for s in stages]
