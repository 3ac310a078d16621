"""Fitting an early-exit network: joint or heads-only training, then per-exit thresholds.

Training makes the heads accurate; calibration then picks the loosest thresholds that keep a
target accuracy on validation data, so the caller states accuracy, not entropy values.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from edgeweave.adapt.branchynet import BranchyNet
from edgeweave.adapt.exit_rules import (
    ALWAYS,
    NEVER,
    ExitError,
    check_mode,
    max_confidence,
    normalized_entropy,
)
from edgeweave.adapt.fit import fit


def _weights(net: BranchyNet, weights: Sequence[float] | None) -> list[float]:
    if weights is None:
        return [1.0] * net.num_exits
    weights = [float(w) for w in weights]
    if len(weights) != net.num_exits:
        raise ExitError(f"weights: expected {net.num_exits} (one per exit), got {len(weights)}")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ExitError(f"weights must be >= 0 with a positive sum, got {weights}")
    return weights


def train_joint(net: BranchyNet, x: torch.Tensor, y: torch.Tensor,
                weights: Sequence[float] | None = None, epochs: int = 30, lr: float = 3e-3,
                batch: int = 64, seed: int = 0) -> BranchyNet:
    """BranchyNet's joint training: minimize sum_k weights[k] * CE(exit_k) (default all 1.0)
    over backbone and heads together."""
    w = _weights(net, weights)

    def loss(model, xb, yb):
        return sum(wk * F.cross_entropy(out, yb) for wk, out in zip(w, model(xb), strict=True))

    fit(net, x, y, epochs=epochs, lr=lr, batch=batch, seed=seed, loss_fn=loss)
    return net


def train_heads(net: BranchyNet, x: torch.Tensor, y: torch.Tensor, epochs: int = 30,
                lr: float = 3e-3, batch: int = 64, seed: int = 0) -> BranchyNet:
    """Freeze the backbone (a pre-trained model keeps its accuracy) and train only the early
    exit heads, each on its own cross-entropy."""
    frozen = [(p, p.requires_grad) for p in net.blocks.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)

    def loss(model, xb, yb):
        model.blocks.eval()  # backbone statistics (batch norm, dropout) stay as trained
        return sum(F.cross_entropy(out, yb) for out in model(xb)[:-1])

    try:
        if len(net.heads):
            fit(net, x, y, epochs=epochs, lr=lr, batch=batch, seed=seed, loss_fn=loss,
                params=list(net.heads.parameters()))
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
    return net.eval()


@torch.no_grad()
def calibrate_thresholds(net: BranchyNet, x_val: torch.Tensor, y_val: torch.Tensor,
                         target_accuracy: float, mode: str = "entropy") -> list[float]:
    """One threshold per early exit, chosen greedily from the first exit on validation data.

    At exit k, among the samples no earlier exit took, the loosest threshold is chosen such that
    (a) the samples leaving at k are at least ``target_accuracy`` accurate, and (b) the overall
    validation accuracy (earlier exits as chosen, exit k, everything else answered by the final
    exit) stays >= the target. Thresholds are midpoints between the last score let out and the
    next one (robust to rounding); ``NEVER[mode]`` when no threshold satisfies both, and
    ``ALWAYS[mode]`` when every remaining sample can leave. By (b), if the final exit alone
    reaches the target on ``x_val``, so does the calibrated network.
    """
    check_mode(mode)
    if not 0.0 <= target_accuracy <= 1.0:
        raise ExitError(f"target_accuracy must be in [0, 1], got {target_accuracy}")
    if len(y_val) == 0:
        raise ExitError("x_val/y_val: calibration needs at least one validation sample")
    net.eval()
    outs = net(x_val)
    correct = [(o.argmax(1) == y_val) for o in outs]
    final_correct = correct[-1].float()
    n = len(y_val)
    remaining = torch.ones(n, dtype=torch.bool)
    correct_before = 0.0
    thresholds = []
    for k in range(net.num_exits - 1):
        idx = remaining.nonzero().squeeze(1)
        if idx.numel() == 0:
            thresholds.append(NEVER[mode])
            continue
        score = (normalized_entropy(outs[k][idx]) if mode == "entropy"
                 else max_confidence(outs[k][idx]))
        order = torch.argsort(score, descending=(mode == "confidence"), stable=True)
        s = score[order]
        here = correct[k][idx][order].float().cumsum(0)
        fin = final_correct[idx][order].cumsum(0)
        fin_total = float(fin[-1])
        m = torch.arange(1, len(s) + 1, dtype=torch.float32)
        acc_here = here / m
        overall = (correct_before + here + fin_total - fin) / n
        boundary = torch.ones(len(s), dtype=torch.bool)  # a prefix may not split tied scores
        boundary[:-1] = s[:-1] != s[1:]
        ok = (acc_here >= target_accuracy) & (overall >= target_accuracy - 1e-12) & boundary
        if not ok.any():
            thresholds.append(NEVER[mode])
            continue
        last = int(ok.nonzero().max())
        t = ALWAYS[mode] if last == len(s) - 1 else float((s[last] + s[last + 1]) / 2)
        thresholds.append(t)
        leave = idx[order[: last + 1]]
        correct_before += float(here[last])
        remaining[leave] = False
    return thresholds
