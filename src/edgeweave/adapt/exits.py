"""Early exits (BranchyNet): side branches after early backbone blocks, trained jointly.

A :class:`BranchyNet` runs a backbone (an ordered list of blocks) and, after chosen block
indices, a small classifier head: an *exit*. The final exit is the backbone's own output. At
inference a sample leaves at the first exit that is sure enough of its answer, so easy inputs
cost only the backbone prefix (and the heads) up to that exit.

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
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from edgeweave.adapt.fit import fit
from edgeweave.errors import EdgeWeaveError

MODES = ("entropy", "confidence")
#: Thresholds meaning "never exit early" (returned by calibration when no threshold works).
NEVER = {"entropy": -1.0, "confidence": 2.0}
#: Thresholds meaning "always exit here".
ALWAYS = {"entropy": 1.0, "confidence": 0.0}

_FOLLOW_ONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Sigmoid,
                nn.Tanh, nn.ELU, nn.PReLU, nn.BatchNorm1d, nn.BatchNorm2d, nn.MaxPool2d,
                nn.AvgPool2d, nn.Dropout)


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


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ExitError(f"mode must be one of {MODES}, got {mode!r}")


def exit_mask(logits: torch.Tensor, threshold: float, mode: str = "entropy") -> torch.Tensor:
    """Boolean mask of the rows that leave at an exit with this threshold (see module doc)."""
    _check_mode(mode)
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


def _example(example_input) -> torch.Tensor:
    if isinstance(example_input, torch.Tensor):
        return example_input
    try:
        return torch.zeros(tuple(int(d) for d in example_input))
    except (TypeError, ValueError) as exc:
        raise ExitError(f"example_input must be a tensor or a shape, got {example_input!r}"
                        ) from exc


class BranchyNet(nn.Module):
    """A backbone (``blocks``, run in order) with exit heads after some block indices.

    ``exits`` maps block index -> head; head *k* sees the output of block ``exits``' k-th
    smallest index. The backbone's output (after the last block) is the final exit, so the
    network has ``len(exits) + 1`` exits. The blocks are shared, not copied.
    """

    def __init__(self, blocks: Sequence[nn.Module], exits: dict[int, nn.Module]):
        super().__init__()
        blocks = list(blocks)
        if not blocks:
            raise ExitError("blocks: the backbone needs at least one block")
        for idx in exits:
            if not isinstance(idx, int) or not 0 <= idx < len(blocks) - 1:
                raise ExitError(f"exit index {idx!r} out of range: an early exit goes after "
                                f"block 0..{len(blocks) - 2} (the last block is the final exit)")
        self.blocks = nn.ModuleList(blocks)
        self.exit_points: list[int] = sorted(exits)
        self.heads = nn.ModuleList(exits[i] for i in self.exit_points)

    @property
    def num_exits(self) -> int:
        return len(self.exit_points) + 1

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every exit, early exits first and the backbone's output last."""
        outs = []
        heads = dict(zip(self.exit_points, self.heads, strict=True))
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in heads:
                outs.append(heads[i](x))
        outs.append(x)
        return outs

    def check_thresholds(self, thresholds: Sequence[float], mode: str = "entropy"
                         ) -> list[float]:
        """The early-exit thresholds as floats; raises ExitError on a wrong count or mode."""
        _check_mode(mode)
        try:
            values = [float(t) for t in thresholds]
        except (TypeError, ValueError) as exc:
            raise ExitError(f"thresholds must be numbers, got {thresholds!r}") from exc
        early = self.num_exits - 1
        if len(values) not in (early, early + 1):
            raise ExitError(f"thresholds: expected {early} (one per early exit) or "
                            f"{early + 1} values, got {len(values)}")
        if any(math.isnan(v) for v in values):
            raise ExitError(f"thresholds must not be NaN, got {values}")
        return values[:early]

    @torch.no_grad()
    def infer(self, x: torch.Tensor, thresholds: Sequence[float], mode: str = "entropy"
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run block by block, dropping samples as they exit.

        Returns ``(logits, exit_index)``: per sample the logits of the exit it left at and that
        exit's index (0 = first early exit, ``num_exits - 1`` = final). Rule: see module doc.
        """
        ts = self.check_thresholds(thresholds, mode)
        self.eval()
        n = x.shape[0]
        logits: torch.Tensor | None = None
        exit_idx = torch.full((n,), self.num_exits - 1, dtype=torch.long)
        active = torch.arange(n)
        heads = dict(zip(self.exit_points, self.heads, strict=True))
        k = 0
        for i, block in enumerate(self.blocks):
            if active.numel() == 0:
                break
            x = block(x)
            if i not in heads:
                continue
            out = heads[i](x)
            if logits is None:
                logits = torch.zeros((n, *out.shape[1:]), dtype=out.dtype)
            leave = exit_mask(out, ts[k], mode)
            logits[active[leave]] = out[leave]
            exit_idx[active[leave]] = k
            keep = ~leave
            active, x = active[keep], x[keep]
            k += 1
        if active.numel():
            if logits is None:
                logits = torch.zeros((n, *x.shape[1:]), dtype=x.dtype)
            logits[active] = x
        assert logits is not None
        return logits, exit_idx


def candidate_exit_points(backbone: nn.Sequential, example_input) -> list[int]:
    """Sensible early-exit indices: after each block whose output is a feature map (N, C, H, W),
    excluding the last block, and skipping a block directly followed by an activation,
    normalization, pooling or dropout block (the exit then goes after that one instead)."""
    blocks = list(backbone)
    x = _example(example_input)
    points = []
    with torch.no_grad():
        for i, block in enumerate(blocks):
            x = block(x)
            if i == len(blocks) - 1 or x.dim() != 4:
                continue
            if isinstance(blocks[i + 1], _FOLLOW_ONS):
                continue
            points.append(i)
    return points


def make_head(features: torch.Tensor, num_classes: int, pool: int = 4) -> nn.Module:
    """A small exit head for this feature shape: average-pool a feature map to at most
    ``pool`` x ``pool``, flatten, one linear layer."""
    if features.dim() == 4:
        c, h, w = features.shape[1:]
        side = (min(pool, h), min(pool, w))
        return nn.Sequential(nn.AdaptiveAvgPool2d(side), nn.Flatten(),
                             nn.Linear(c * side[0] * side[1], num_classes))
    return nn.Sequential(nn.Flatten(), nn.Linear(features[0].numel(), num_classes))


def attach_exits(backbone: nn.Sequential, after: Sequence[int], num_classes: int,
                 example_input, pool: int = 4) -> BranchyNet:
    """Wrap ``backbone`` with a :func:`make_head` after each block index in ``after``, sized by
    running ``example_input`` (a tensor or a shape) through the backbone prefix."""
    blocks = list(backbone)
    if num_classes < 1:
        raise ExitError(f"num_classes must be >= 1, got {num_classes}")
    after = list(after)
    if len(set(after)) != len(after):
        raise ExitError(f"after: duplicate exit index in {after}")
    for idx in after:
        if not isinstance(idx, int) or not 0 <= idx < len(blocks) - 1:
            raise ExitError(f"after: exit index {idx!r} out of range 0..{len(blocks) - 2} "
                            f"for a backbone of {len(blocks)} blocks")
    x = _example(example_input)
    heads = {}
    with torch.no_grad():
        for i, block in enumerate(blocks):
            x = block(x)
            if i in after:
                heads[i] = make_head(x, num_classes, pool)
    return BranchyNet(blocks, heads)


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
    _check_mode(mode)
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


class ExitReport(list):
    """A list with one dict per exit, plus overall figures as attributes (see summary())."""

    accuracy: float
    mean_flops: float
    mean_latency_s: float | None
    thresholds: list[float]
    mode: str

    def summary(self) -> dict:
        return {"thresholds": self.thresholds, "mode": self.mode, "accuracy": self.accuracy,
                "mean_flops": self.mean_flops, "mean_latency_s": self.mean_latency_s,
                "exits": list(self)}


def _flops(module: nn.Module, x: torch.Tensor) -> int:
    from edgeweave.graph import capture

    graph = capture(nn.Sequential(module), x, "exit-part")
    return int(graph.total_flops)


def exit_flops(net: BranchyNet, example_input) -> list[int]:
    """Per-sample FLOPs to reach each exit: the backbone prefix up to the exit plus every head
    evaluated on the way (what :meth:`BranchyNet.infer` runs), counted with
    :func:`edgeweave.graph.capture`. Non-decreasing in the exit index."""
    x = _example(example_input)[:1]
    heads = dict(zip(net.exit_points, net.heads, strict=True))
    total, result = 0, []
    net.eval()
    with torch.no_grad():
        for i, block in enumerate(net.blocks):
            total += _flops(block, x)
            x = block(x)
            if i in heads:
                head = _flops(heads[i], x)
                result.append(total + head)
                total += head
    result.append(total)
    return result


def measure_latency(net: BranchyNet, x: torch.Tensor, thresholds: Sequence[float],
                    mode: str = "entropy", repeats: int = 3) -> list[float]:
    """Per-sample seconds on this host: batch-1 :meth:`BranchyNet.infer`, timed with
    time.perf_counter, the median of ``repeats`` runs over ``x``."""
    runs = []
    for _ in range(max(1, repeats)):
        times = []
        for i in range(len(x)):
            xi = x[i : i + 1]
            start = time.perf_counter()
            net.infer(xi, thresholds, mode)
            times.append(time.perf_counter() - start)
        runs.append(times)
    return [statistics.median(col) for col in zip(*runs, strict=True)]


@torch.no_grad()
def exit_report(net: BranchyNet, x: torch.Tensor, y: torch.Tensor, thresholds: Sequence[float],
                mode: str = "entropy", latency: bool = True, repeats: int = 3) -> ExitReport:
    """Per exit: ``exit``, ``after_block`` (None for the final), ``count``, ``fraction`` of the
    samples leaving there, their ``accuracy`` (None when none leave), cumulative ``flops`` to
    reach it (:func:`exit_flops`) and, with ``latency``, their ``mean_latency_ms``; overall
    ``accuracy``, ``mean_flops`` and ``mean_latency_s`` per sample are attributes.

    Latency is measured on THIS host (:func:`measure_latency`: batch 1, median of ``repeats``
    runs per sample). The planner turns it into a tier latency as
    ``host latency x (host GFLOP/s / tier GFLOP/s)``.
    """
    ts = net.check_thresholds(thresholds, mode)
    if len(x) == 0 or len(x) != len(y):
        raise ExitError(f"x/y: need the same positive number of samples, got {len(x)}/{len(y)}")
    logits, exits = net.infer(x, ts, mode)
    right = logits.argmax(1) == y
    flops = exit_flops(net, x)
    per_sample = measure_latency(net, x, ts, mode, repeats) if latency else None
    report = ExitReport()
    n = len(y)
    for k in range(net.num_exits):
        mask = exits == k
        count = int(mask.sum())
        row = {"exit": k,
               "after_block": net.exit_points[k] if k < net.num_exits - 1 else None,
               "count": count, "fraction": count / n,
               "accuracy": float(right[mask].float().mean()) if count else None,
               "flops": flops[k]}
        if per_sample is not None:
            sel = [t for t, m in zip(per_sample, mask.tolist(), strict=True) if m]
            row["mean_latency_ms"] = 1e3 * statistics.fmean(sel) if sel else None
        report.append(row)
    report.accuracy = float(right.float().mean())
    report.mean_flops = float(sum(flops[int(k)] for k in exits) / n)
    report.mean_latency_s = statistics.fmean(per_sample) if per_sample is not None else None
    report.thresholds = ts
    report.mode = mode
    return report
