"""Figures of a load test: one run (latency over time and its distribution, per model) and a
sweep over load levels (goodput and p99 latency against offered load, per system)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgeweave.durable import replace_with
from edgeweave.serve.loadgen.driver import Run
from edgeweave.serve.loadgen.stats import Row


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    replace_with(out, lambda f: fig.savefig(f, dpi=100, format=out.suffix.lstrip(".") or "png"))
    return out


def plot_run(run: Run, out: Path) -> Path:
    """Left: each request's latency against when it was sent (answered in time, late, or
    answered by its device's fallback). Right: the latency distribution of answers per model,
    with each model's deadline."""
    plt = _pyplot()
    fig, (ax_t, ax_c) = plt.subplots(1, 2, figsize=(11, 4))
    styles = {"in time": ("tab:green", "."), "late": ("tab:red", "."),
              "fallback": ("tab:gray", "x")}
    for label, (color, marker) in styles.items():
        picked = [r for r in run.records if _kind(r) == label]
        if picked:
            ax_t.scatter([r.sent for r in picked], [r.latency_s * 1000 for r in picked], s=6,
                         c=color, marker=marker, label=f"{label} ({len(picked)})")
    ax_t.set_xlabel("sent at (s)")
    ax_t.set_ylabel("latency (ms)")
    ax_t.legend(loc="upper left", fontsize=8)
    for model in sorted({r.model for r in run.records}):
        lat = np.sort([r.latency_s * 1000 for r in run.records
                       if r.model == model and r.end == "answered"])
        if len(lat):
            line = ax_c.plot(lat, np.arange(1, len(lat) + 1) / len(lat), label=model)[0]
            deadline = next(r.deadline_s for r in run.records if r.model == model) * 1000
            ax_c.axvline(deadline, color=line.get_color(), linestyle=":", linewidth=1)
    ax_c.set_xlabel("latency of answers (ms); dotted: deadline")
    ax_c.set_ylabel("share of answers")
    ax_c.legend(fontsize=8)
    for ax in (ax_t, ax_c):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        return _save(fig, out)
    finally:
        plt.close(fig)


def _kind(r) -> str:
    if r.end == "fallback":
        return "fallback"
    if r.end == "answered":
        return "in time" if r.in_time else "late"
    return ""


def plot_sweep(rows: Sequence[Row], out: Path) -> Path:
    """Per model (one column each): goodput and p99 latency against offered load, one line per
    system."""
    plt = _pyplot()
    models = sorted({r.model for r in rows if r.model != "all"})
    fig, axes = plt.subplots(2, len(models), figsize=(5 * len(models), 7), squeeze=False)
    for col, model in enumerate(models):
        for system in dict.fromkeys(r.system for r in rows):
            mine = sorted((r for r in rows if r.model == model and r.system == system
                           and isinstance(r.load, float)), key=lambda r: r.load)
            if not mine:
                continue
            loads = [r.load * 100 for r in mine]
            axes[0][col].plot(loads, [r.goodput_rps for r in mine], marker="o", label=system)
            axes[1][col].plot(loads, [r.p99_ms for r in mine], marker="o", label=system)
        axes[0][col].set_title(model)
        axes[0][col].set_ylabel("goodput (answered in time, req/s)")
        axes[1][col].set_ylabel("p99 latency of answers (ms)")
        axes[1][col].set_yscale("log")
        for ax in axes[:, col]:
            ax.set_xlabel("offered load (% of measured capacity)")
            ax.grid(alpha=0.3)
        axes[0][col].legend(fontsize=8)
    fig.tight_layout()
    try:
        return _save(fig, out)
    finally:
        plt.close(fig)
