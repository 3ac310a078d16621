"""The Neurosurgeon figure for a plan: per-layer latency on each tier, output size, and cuts.

Kang et al. (ASPLOS 2017, Fig. 4-6) explain split points with exactly this picture: where a
layer's output is small and the layers before it are cheap, cutting there pays. Drawn in topological
order, with the chosen placement shaded under the bars.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from edgeweave.plan.costs import CostModel
from edgeweave.plan.record import Plan

_COLORS = {"device": "#d95f02", "edge": "#1b9e77", "cloud": "#7570b3"}


def plot_plan(plan: Plan, path: str | Path) -> Path:
    cm = CostModel(plan)
    order = [u for u in cm.order if u not in cm.inputs]
    x = np.arange(len(order))
    fig, (ax_lat, ax_out) = plt.subplots(
        2, 1, figsize=(max(8, len(order) * 0.09 + 4), 6.5), sharex=True,
        gridspec_kw={"height_ratios": [3, 2]},
    )
    width = 0.8 / max(1, cm.n_tiers)
    for t, tier in enumerate(cm.tiers):
        ax_lat.bar(x + (t - (cm.n_tiers - 1) / 2) * width, cm.lat[order, t], width,
                   label=f"{tier} ({plan.tier_nodes.get(tier, tier)})",
                   color=_COLORS.get(tier))
    labels = cm.labels_of(plan.placement)
    for pos, u in enumerate(order):
        ax_lat.axvspan(pos - 0.5, pos + 0.5, color=_COLORS.get(cm.tiers[labels[u]]), alpha=0.08,
                       lw=0)
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("latency per layer (ms, log)")
    ax_lat.legend(loc="upper right", fontsize=8)
    ax_lat.set_title(
        f"{plan.model} on {plan.fleet}: {plan.mode}, predicted {plan.predicted['total_ms']:.1f} ms"
        f"\n{plan.objective} objective; shading = chosen tier, dashed = cut",
        fontsize=10,
    )
    ax_out.plot(x, cm.out_bytes[order] / 1024, color="black", lw=1)
    ax_out.set_yscale("log")
    ax_out.set_ylabel("output size (KiB, log)")
    for pos in range(1, len(order)):
        if labels[order[pos]] != labels[order[pos - 1]]:
            for ax in (ax_lat, ax_out):
                ax.axvline(pos - 0.5, color="red", ls="--", lw=1)
    step = max(1, len(order) // 40)
    ax_out.set_xticks(x[::step])
    ax_out.set_xticklabels([cm.names[u] for u in order][::step], rotation=90, fontsize=6)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
