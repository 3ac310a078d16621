"""Exit rules: when a sample is sure enough to leave at an early exit.

Two exit rules (``mode``) are supported, each with one threshold per early exit:

* ``"entropy"`` (BranchyNet's): score = normalized entropy of the softmax,
  ``H(p) / log(num_classes)`` in [0, 1]; a sample exits at exit *k* when
  ``score <= threshold_k``. Threshold >= 1.0 (the maximum possible normalized entropy) exits
  EVERYTHING at that exit; a negative threshold exits NOTHING there.
* ``"confidence"``: score = max softmax probability; a sample exits when
  ``score >= threshold_k``. Threshold 0 exits everything at that exit; a threshold above 1
  exits nothing there.

The last exit always accepts whatever reaches it. Thresholds are given for the early exits
(``num_exits - 1`` values); a list of ``num_exits`` values is accepted too, its last value is
ignored.

The rules live apart from the network so other exit schemes (DDNN's local exit,
:mod:`edgeweave.adapt.ddnn`) score and threshold the same way.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from edgeweave.errors import EdgeWeaveError

MODES = ("entropy", "confidence")
#: Thresholds meaning "never exit early" (returned by calibration when no threshold works).
NEVER = {"entropy": -1.0, "confidence": 2.0}
#: Thresholds meaning "always exit here".
ALWAYS = {"entropy": 1.0, "confidence": 0.0}


class ExitError(EdgeWeaveError):
    """An early-exit network or request is malformed (exit index, thresholds, mode)."""


def normalized_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-row softmax entropy divided by log(num_classes), clamped to [0, 1]."""
    num_classes = logits.shape[-1]
    if num_classes < 2:
        return torch.zeros(logits.shape[:-1])
    logp = F.log_softmax(logits.float(), dim=-1)
    ent = -(logp.exp() * logp).sum(-1) / math.log(num_classes)
    return ent.clamp(0.0, 1.0)


def max_confidence(logits: torch.Tensor) -> torch.Tensor:
    """Per-row maximum softmax probability."""
    return F.softmax(logits.float(), dim=-1).max(-1).values


def check_mode(mode: str) -> None:
    """Raise ExitError unless ``mode`` is one of :data:`MODES`."""
    if mode not in MODES:
        raise ExitError(f"mode must be one of {MODES}, got {mode!r}")


def exit_mask(logits: torch.Tensor, threshold: float, mode: str = "entropy") -> torch.Tensor:
    """Boolean mask of the rows that leave at an exit with this threshold (see module doc)."""
    check_mode(mode)
    n = logits.shape[0]
    if mode == "entropy":
        if threshold >= 1.0:
            return torch.ones(n, dtype=torch.bool)
        if threshold < 0.0:
            return torch.zeros(n, dtype=torch.bool)
        return normalized_entropy(logits) <= threshold
    if threshold <= 0.0:
        return torch.ones(n, dtype=torch.bool)
    if threshold > 1.0:
        return torch.zeros(n, dtype=torch.bool)
    return max_confidence(logits) >= threshold
