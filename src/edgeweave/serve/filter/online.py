"""The input filter as a served model's front stage: it learns each stream's cascade from that
stream's own first frames, then filters.

NoScope and FFS-VA build a stream's cascade from footage labelled by the reference model. A
served model has no footage ahead of time, so for each stream (``source``: the device or
camera sending it) the filter first lets ``learn_frames`` frames through to the model and keeps
them; the model's answers are the labels. It then trains the specialised model on the first
half, has the optimiser choose the detector and thresholds on the second half
(:func:`~edgeweave.serve.filter.tune.tune_cascade`, which runs the reference model on them
once more), and from then on answers that stream's frames the cascade is sure of. Learning
runs once per stream, in a thread of its own when ``background`` (as served: the stream's
frames keep passing through meanwhile, and no serving worker waits), else in the caller's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import torch
from torch import nn

from edgeweave.errors import ServeError
from edgeweave.serve.filter.cascade import DIFFERENCE, SPECIALISED, Cascade, Query
from edgeweave.serve.filter.config import FilterConfig
from edgeweave.serve.filter.tune import TunedFilter, tune_cascade
from edgeweave.serve.stage import Verdict, check_sample

log = logging.getLogger("edgeweave.serve")

#: The most memory the frames kept for learning may take, per stream.
MAX_LEARN_BYTES = 256 * 2**20


class LearningFilter:
    """A :class:`~edgeweave.serve.stage.FrontStage` named ``filter`` (see the module doc).
    Its answers are the query's (1: an object of the ``positive`` classes, 0: none)."""

    name = "filter"

    def __init__(self, reference: nn.Module, input_shape: Sequence[int], config: FilterConfig,
                 background: bool = False):
        self.config, self.input_shape, self.background = config, tuple(input_shape), background
        if len(self.input_shape) != 4 or self.input_shape[2] != self.input_shape[3] \
                or self.input_shape[2] % 8:
            raise ServeError(f"filter: the model takes input of shape {self.input_shape}; the "
                             f"filter needs square frames (1, C, S, S) with S divisible by 8")
        self._threads: dict[str, threading.Thread] = {}
        frame_bytes = 4 * int(torch.Size(self.input_shape[1:]).numel())
        if frame_bytes * config.learn_frames > MAX_LEARN_BYTES:
            most = MAX_LEARN_BYTES // frame_bytes
            raise ServeError(f"filter.learn_frames {config.learn_frames} would keep "
                             f"{frame_bytes * config.learn_frames / 2**20:.0f} MB of frames of "
                             f"shape {self.input_shape[1:]} per stream; at most {most} fit in "
                             f"{MAX_LEARN_BYTES // 2**20} MB")
        self.query = Query(reference, config.positive, self.input_shape)
        self._learning: dict[str, list[torch.Tensor]] = {}
        self.tuned: dict[str, TunedFilter] = {}
        self.failed: dict[str, str] = {}  #: streams that could not be learnt, and why

    def state(self, source: str) -> str:
        """``active`` (the stream's cascade runs), ``learning`` (its frames are kept, or it is
        being tuned) or ``unfiltered`` (it could not be learnt, or is beyond ``max_streams``;
        also a stream not seen yet)."""
        if source in self.tuned:
            return "active"
        if source in self._learning or source in self._threads:
            return "learning"
        return "unfiltered"

    def cascade(self, source: str) -> Cascade | None:
        tuned = self.tuned.get(source)
        return None if tuned is None else tuned.cascade

    def lookup(self, x: torch.Tensor, source: str = "") -> Verdict | None:
        cascade = self.cascade(source)
        if cascade is None:
            check_sample(x, self.input_shape, "frame")
            return None
        return cascade.lookup(x, source)

    def observe(self, x: torch.Tensor, source: str, answer: Verdict) -> None:
        """Keep a learning stream's frame; tell a tuned stream's cascade the query's answer."""
        frame = check_sample(x, self.input_shape, "frame")
        label = answer.label if answer.stage in (DIFFERENCE, SPECIALISED) \
            else int(answer.label in self.config.positive)
        cascade = self.cascade(source)
        if cascade is not None:
            cascade.observe(frame, source, Verdict(label, answer.score, answer.stage))
            return
        if source in self.failed or source in self._threads:
            return
        known = len(self._learning) + len(self.tuned) + len(self._threads)
        if source not in self._learning and known >= self.config.max_streams:
            return  # a stream beyond the bound passes through unfiltered
        kept = self._learning.setdefault(source, [])
        kept.append(frame.detach().clone())
        if len(kept) < self.config.learn_frames:
            return
        frames = torch.cat(self._learning.pop(source))
        if not self.background:
            self.learn(source, frames)
            return
        worker = threading.Thread(target=self._learn_apart, args=(source, frames), daemon=True,
                                  name=f"filter-learn-{source[:40]}")
        self._threads[source] = worker
        worker.start()

    def _learn_apart(self, source: str, frames: torch.Tensor) -> None:
        try:
            self.learn(source, frames)
        except Exception:  # a bug here must not leave the stream half-learnt
            log.exception("filter: learning stream %r failed", source[:80])
            self.failed[source] = "learning failed (see the node's log)"
        finally:
            self._threads.pop(source, None)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the streams learning in the background (tests, shutdown)."""
        for worker in list(self._threads.values()):
            worker.join(timeout)

    def learn(self, source: str, frames: torch.Tensor) -> TunedFilter | None:
        """Tune the cascade of ``source`` from ``frames`` it has sent (all checked, so of the
        model's shape). A stream whose frames cannot teach a filter (say, an object in every
        one, so no empty scene to compare with) keeps passing through; ``failed`` says why."""
        half = len(frames) // 2
        c = self.config
        try:
            tuned = tune_cascade(self.query, frames[:half], frames[half:], c.make_detectors(),
                                 max_fn=c.max_fn, max_fp=c.max_fp, epochs=c.epochs,
                                 seed=c.seed, cost_sample=min(300, len(frames) - half))
        except ServeError as e:
            self.failed[source] = str(e)
            log.warning("filter: stream %r passes through unfiltered: %s", source[:80], e)
            return None
        self.tuned[source] = tuned
        return tuned
