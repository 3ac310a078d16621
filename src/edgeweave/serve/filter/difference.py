"""The difference detector, the cheapest stage of the cascade (NoScope, Kang et al. 2017; FFS-VA's
stream-specialised difference detector).

A frame that differs little from a *reference* frame of the empty scene holds nothing; a frame
that differs little from the frame ``t`` frames earlier has the same answer as that frame.
The difference is the mean squared difference of the two frames after matching their mean
brightness (so a slow lighting drift is not a difference), in [0, 1] for frames in [0, 1].
The blocked variant measures it per block of a grid and lets a small logistic regression,
trained on the reference model's labels for this stream, weigh the blocks (an object covers a
few blocks; noise spreads over all); its score is that regression's probability. A frame whose
score is below the detector threshold skips the rest of the cascade.

Repeating an earlier answer also repeats an earlier mistake: an object missed as it appeared
would stay missed while it sat still. So in earlier mode at most ``refresh`` frames in a row may
skip; the next one goes on to the specialised model whatever its score (:meth:`may_skip`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from edgeweave.errors import ServeError
from edgeweave.serve.stage import check_positive_int

MODES = ("reference", "earlier")


@dataclass
class DifferenceDetector:
    """``mode``: compare with the empty scene (``reference``) or with the frame ``t`` earlier
    (``earlier``); ``blocks``: grid side of the blocked variant (1: the whole frame)."""

    mode: str = "reference"
    t: int = 1
    blocks: int = 1
    refresh: int = 30  #: earlier mode: most frames in a row that may repeat an answer
    reference: torch.Tensor | None = None
    weights: np.ndarray | None = None   #: logistic regression of the blocked variant
    bias: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ServeError(f"filter.difference.mode must be one of {', '.join(MODES)}, "
                             f"got {self.mode!r}")
        check_positive_int(self.t, "filter.difference.t")
        check_positive_int(self.blocks, "filter.difference.blocks")
        check_positive_int(self.refresh, "filter.difference.refresh")

    @property
    def name(self) -> str:
        against = "empty scene" if self.mode == "reference" else f"frame t-{self.t}"
        kind = f"{self.blocks}x{self.blocks} blocks + logistic regression" \
            if self.blocks > 1 else "whole-frame MSE"
        return f"{kind} vs {against}"

    def fit(self, frames: torch.Tensor, positive: np.ndarray) -> DifferenceDetector:
        """Learn from a stream's frames ``(N, C, H, W)`` in [0, 1] labelled by the reference
        model: the empty-scene frame (median of the frames it called empty) and, for the
        blocked variant, the regression from block differences to its label."""
        if len(frames) == 0 or len(frames) != len(positive):
            raise ServeError("the detector needs a non-empty stream with one label per frame")
        if self.mode == "reference":
            empty = frames[torch.from_numpy(~positive.astype(bool))]
            if len(empty) == 0:
                raise ServeError("every training frame holds an object; the difference "
                                 "detector needs frames of the empty scene")
            self.reference = empty.median(dim=0).values
        if self.blocks > 1:
            from sklearn.linear_model import LogisticRegression

            feats = self._block_mse(frames, self._compared(frames))
            target = positive.astype(bool) if self.mode == "reference" else \
                self._changed(positive.astype(bool))
            if target.all() or not target.any():
                self.weights, self.bias = np.zeros(feats.shape[1]), 0.0
                return self
            lr = LogisticRegression(C=10.0, max_iter=500, class_weight="balanced")
            lr.fit(np.log(feats + 1e-6), target)
            self.weights, self.bias = lr.coef_[0].astype(np.float64), float(lr.intercept_[0])
        return self

    def may_skip(self, run: int) -> bool:
        """Whether a frame may skip after ``run`` frames in a row have (see the module doc)."""
        return self.mode != "earlier" or run < self.refresh

    def skipped(self, scores: np.ndarray, threshold: float) -> np.ndarray:
        """Which frames of a stream skip the rest of the cascade at ``threshold``."""
        below = scores < threshold
        if self.mode != "earlier":
            return below
        out, run = np.zeros_like(below), 0
        for i, low in enumerate(below.tolist()):
            out[i] = low and self.may_skip(run)
            run = run + 1 if out[i] else 0
        return out

    def scores(self, frames: torch.Tensor) -> np.ndarray:
        """Score of every frame of a stream ``(N, C, H, W)`` in [0, 1]; with ``earlier``, the
        first ``t`` frames have nothing to compare with and score 1 (they always pass)."""
        out = self._score(frames, self._compared(frames))
        if self.mode == "earlier":
            out[: self.t] = 1.0
        return out

    def score(self, frame: torch.Tensor, earlier: torch.Tensor | None) -> float:
        """Score of one frame ``(1, C, H, W)``; ``earlier`` is the frame ``t`` before it (None
        at the start of the stream) and is ignored in ``reference`` mode."""
        if self.mode == "earlier":
            if earlier is None:
                return 1.0
            return float(self._score(frame, earlier)[0])
        return float(self._score(frame, self._reference())[0])

    # ---- internals -------------------------------------------------------------------------
    def _reference(self) -> torch.Tensor:
        if self.reference is None:
            raise ServeError("the difference detector has no reference frame; fit it on "
                             "frames of the stream first")
        return self.reference.unsqueeze(0)

    def _compared(self, frames: torch.Tensor) -> torch.Tensor:
        if self.mode == "reference":
            return self._reference().expand_as(frames)
        return torch.cat([frames[: self.t], frames[: -self.t]]) if len(frames) > self.t \
            else frames

    def _changed(self, positive: np.ndarray) -> np.ndarray:
        before = np.concatenate([positive[: self.t], positive[: -self.t]])[: len(positive)]
        return positive != before

    def _score(self, frames: torch.Tensor, compared: torch.Tensor) -> np.ndarray:
        if self.blocks == 1:
            return self._block_mse(frames, compared)[:, 0].clip(0.0, 1.0)
        if self.weights is None:
            raise ServeError("the blocked difference detector is not fitted; fit it on "
                             "frames of the stream first")
        z = np.log(self._block_mse(frames, compared) + 1e-6) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-z))

    def _block_mse(self, frames: torch.Tensor, compared: torch.Tensor) -> np.ndarray:
        """Per frame and block, the mean squared difference after matching brightness."""
        a, b = frames.double(), compared.double()
        gain = b.mean(dim=(1, 2, 3), keepdim=True) / a.mean(dim=(1, 2, 3), keepdim=True)
        sq = (a * gain.clamp(0.5, 2.0) - b) ** 2
        g = self.blocks
        if g == 1:
            return sq.mean(dim=(1, 2, 3)).numpy()[:, None]
        n, c, h, w = sq.shape
        if h % g or w % g:
            raise ServeError(f"filter.difference.blocks = {g} does not divide the frame "
                             f"size {h}x{w}")
        blocks = sq.reshape(n, c, g, h // g, g, w // g).mean(dim=(1, 3, 5))
        return blocks.reshape(n, g * g).numpy()
