"""Front stages: work a served model may be spared, checked before a request queues.

DESIGN.md puts a cache and a filter in front of each served model. They plug in here as an
ordered list per model (`Engine.set_front(key, stages)`); each stage implements any of:

- ``lookup(x, source) -> answer | None``: a cached answer (a tuple of output tensors, batch
  1) ends the request at once, answered by that stage;
- ``admit(x, source) -> bool``: False skips the model (a difference detector finding nothing
  new): the request is answered without outputs (`Answer.outputs is None`), and the device
  keeps the answer it already has; or ``skip(x, source) -> str | None``, the same decision
  naming the step that made it (a filter's ``difference`` or ``specialised``; None: run);
- ``observe(x, answer, source)``: called with every answer the model computes, to fill a
  cache.

``x`` is the request's input tensor (batch 1), or the tuple of them for a model with several
inputs; ``source`` names the device or stream that sent it (``SHARED`` when the caller does
not say; a peer's claim, used only to key per-stream state). Stages run in the caller's
thread, in order, before the request takes a queue place; a stage that raises is logged and
passed over (a cache's bug must not fail requests).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from edgeweave.serve.pending import Answer, Inputs

log = logging.getLogger("edgeweave.serve")

#: The source of a request whose caller names none: one shared stream.
SHARED = "shared"


def stage_input(inputs: Inputs) -> object:
    return inputs[0] if len(inputs) == 1 else inputs


def name_of(stage: object) -> str:
    return getattr(stage, "name", type(stage).__name__)


def consult(stages: Sequence[object], inputs: Inputs, source: str = SHARED) -> Answer | None:
    """The answer of the first stage that ends the request, or None to run the model."""
    x = stage_input(inputs)
    for stage in stages:
        try:
            lookup = getattr(stage, "lookup", None)
            if lookup is not None:
                hit = lookup(x, source)
                if hit is not None:
                    return Answer(tuple(hit), source=name_of(stage))
            skip = getattr(stage, "skip", None)
            if skip is not None:
                step = skip(x, source)
                if step:
                    return Answer(None, source=name_of(stage), step=step)
                continue
            admit = getattr(stage, "admit", None)
            if admit is not None and not admit(x, source):
                return Answer(None, source=name_of(stage))
        except Exception:
            log.exception("front stage %s failed; passing the request on", name_of(stage))
    return None


def observe(stages: Sequence[object], inputs: Inputs, outputs: Inputs,
            source: str = SHARED) -> None:
    x = stage_input(inputs)
    for stage in stages:
        hook = getattr(stage, "observe", None)
        if hook is None:
            continue
        try:
            hook(x, outputs, source)
        except Exception:
            log.exception("front stage %s failed to observe an answer", name_of(stage))
