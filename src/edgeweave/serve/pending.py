"""One request inside the serving engine, from submission to its one outcome.

Every request ends exactly one way (DESIGN.md, request accounting): answered (by the model or by
a front stage such as a cache), or shed with a reason: rejected when it arrives (its queue is
full, or it cannot meet its deadline behind the work already queued) or dropped after it queued
(its deadline can no longer be met, the model was removed, the node is stopping). The transport
maps a shed request to a status (`REASONS`), and the device answers it itself (fallback).
"""

from __future__ import annotations

import itertools
import math
import threading
from dataclasses import dataclass

import torch

from edgeweave.errors import EdgeWeaveError

Inputs = tuple[torch.Tensor, ...]

#: reason -> what it means, in the words a status's details use. The transport owns the codes:
#: queue_full/displaced are overload, deadline/late are deadlines, removed/unknown_model mean
#: "deploy again", bad_input is the request's fault, failed and stopped are the node's.
REASONS = ("queue_full", "displaced", "deadline", "late", "removed", "unknown_model",
           "bad_input", "failed", "stopped")


class Shed(EdgeWeaveError):
    """The engine will not answer this request: `reason` (one of REASONS, counted), `stage`
    "rejected" (on arrival) or "dropped" (after it queued), and a message for the peer."""

    def __init__(self, reason: str, message: str, stage: str = "rejected"):
        super().__init__(message)
        self.reason, self.message, self.stage = reason, message, stage


@dataclass
class Answer:
    """A request's outputs and where its time went."""

    outputs: Inputs | None  # None: a front stage skipped the model (see serve.front)
    queue_s: float = 0.0
    compute_s: float = 0.0
    batch: int = 0  # the batch it ran in (0: answered by a front stage)
    source: str = "model"
    step: str = ""  # which of the front stage's steps skipped the model (a filter's)


_seq = itertools.count()


class Pending:
    """A submitted request. `deadline` is on the engine's clock (inf: none), what the engine
    plans for; `late` (the deadline plus the sender's grace, see `Engine.submit`) the instant
    after which its answer is of no use and is dropped instead; `priority` 0-9."""

    __slots__ = ("_done", "answer", "arrival", "deadline", "error", "inputs", "key", "late",
                 "priority", "seq", "source")

    def __init__(self, key: str, inputs: Inputs, deadline: float, priority: int, arrival: float,
                 source: str = "shared", grace: float = 0.0):
        self.key, self.inputs, self.source = key, inputs, source
        self.deadline = deadline if deadline is not None else math.inf
        self.late = self.deadline + max(0.0, grace)
        self.priority, self.arrival = priority, arrival
        self.seq = next(_seq)
        self.answer: Answer | None = None
        self.error: Shed | None = None
        self._done = threading.Event()

    def edf_key(self) -> tuple[float, int, int]:
        """Earliest deadline first; among equal deadlines the higher priority, then arrival."""
        return (self.deadline, -self.priority, self.seq)

    def fifo_key(self) -> tuple[float, int, int]:
        return (0.0, 0, self.seq)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def resolve(self, answer: Answer) -> None:
        self.answer = answer
        self._done.set()

    def fail(self, shed: Shed) -> None:
        self.error = shed
        self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def result(self) -> Answer:
        """The answer, or the Shed it ended with (call once done)."""
        if self.error is not None:
            raise self.error
        assert self.answer is not None
        return self.answer
