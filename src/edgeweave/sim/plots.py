"""Figures in the EdgeCloudSim style: service time and failure rate against the number of
devices, one line per policy (the mean over seeds, the band their range); and a training
run's accuracy against simulated time."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np


def _by_policy(rows: list[dict[str, Any]], value) -> dict[str, tuple[list, list, list, list]]:  # type: ignore[no-untyped-def]
    groups: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        v = value(r)
        if v is not None:
            groups[r["policy"]][r["devices"]].append(v)
    out = {}
    for policy, per_n in groups.items():
        ns = sorted(per_n)
        vals = [np.asarray(per_n[n]) for n in ns]
        out[policy] = (ns, [v.mean() for v in vals], [v.min() for v in vals],
                       [v.max() for v in vals])
    return out


def plot_sweep(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Mean service time, its 95th percentile and the failure rate vs devices per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("mean service time (ms)", lambda r: r["service_ms"]["mean"]),
              ("p95 service time (ms)", lambda r: r["service_ms"]["p95"]),
              ("failed requests (%)", lambda r: 100.0 * r["failure_rate"])]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
    for ax, (label, value) in zip(axes, panels, strict=True):
        for policy, (ns, mean, lo, hi) in sorted(_by_policy(rows, value).items()):
            line = ax.plot(ns, mean, marker="o", label=policy)[0]
            if any(a != b for a, b in zip(lo, hi, strict=True)):
                ax.fill_between(ns, lo, hi, color=line.get_color(), alpha=0.15)
        ax.set_xlabel("number of devices")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_training(runs: dict[str, list[dict[str, Any]]], path: str | Path,
                  target: float | None = None) -> Path:
    """Test accuracy against simulated time, one line per labelled training run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, rounds in runs.items():
        pts = [(r["sim_end_s"], r["test_acc"]) for r in rounds
               if r.get("test_acc") is not None and r["test_acc"] == r["test_acc"]]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker=".", label=label)
    if target is not None:
        ax.axhline(target, color="grey", linestyle=":", label=f"target {target:g}")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
