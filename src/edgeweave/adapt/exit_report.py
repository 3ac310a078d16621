"""What an early-exit network costs and earns: per-exit counts, accuracy, FLOPs and latency.

FLOPs come from :func:`edgeweave.graph.capture` (the same count the planner uses); latency is
measured on this host and scaled to a tier by the planner.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch
from torch import nn

from edgeweave.adapt.branchynet import BranchyNet, example_tensor
from edgeweave.adapt.exit_rules import ExitError


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
    x = example_tensor(example_input)[:1]
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
