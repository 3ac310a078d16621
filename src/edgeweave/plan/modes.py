"""The inference modes of Alemayehu & Cho (seed 000, Figs. 7-11), plus cloud-only.

Each mode is a restriction on where nodes may run. A split mode pins the input's first consumers
to the lower tier and the output to the upper one, so it is a real split (both tiers do work)
rather than silently collapsing into a single-tier mode; within that, the cut is optimised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeweave.plan.costs import CostModel


@dataclass(frozen=True)
class Mode:
    name: str
    tiers: tuple[str, ...]  # tiers the model's operators may use, lowest first
    description: str


MODES = (
    Mode("device-only", ("device",), "everything on the end device"),
    Mode("edge-only", ("edge",), "device sends the input, the edge server runs the model"),
    Mode("cloud-only", ("cloud",), "device sends the input through the edge to the cloud"),
    Mode("device-edge", ("device", "edge"), "first layers on the device, the rest on the edge"),
    Mode("edge-cloud", ("edge", "cloud"), "first layers on the edge, the rest in the cloud"),
    Mode("device-edge-cloud", ("device", "edge", "cloud"), "two cuts across all three tiers"),
)


def base_forbid(cm: CostModel) -> np.ndarray:
    """What every plan obeys: the input is produced on the device; no tier without a cost."""
    forbid = ~np.isfinite(cm.lat)
    for i in cm.inputs:
        forbid[i, 1:] = True
    return forbid


def mode_forbid(cm: CostModel, mode: Mode) -> np.ndarray | None:
    """Tier restrictions for `mode`, or None when the fleet lacks one of its tiers."""
    if any(t not in cm.tiers for t in mode.tiers):
        return None
    forbid = base_forbid(cm)
    allowed = [cm.tiers.index(t) for t in mode.tiers]
    operators = [u for u in range(cm.n) if u not in cm.inputs]
    for u in operators:
        for t in range(cm.n_tiers):
            if t not in allowed:
                forbid[u, t] = True
    if len(allowed) > 1:
        low, high = allowed[0], allowed[-1]
        first = {v for i in cm.inputs for v in cm.consumers[i]}
        for u in first:
            forbid[u, :] = True
            forbid[u, low] = False
        for o in cm.outputs:
            if o not in first:
                forbid[o, :] = True
                forbid[o, high] = False
    return forbid


def mode_of(cm: CostModel, labels: np.ndarray) -> str:
    """Name the mode a placement falls in, by the tiers its operators use."""
    used = sorted({int(labels[u]) for u in range(cm.n) if u not in cm.inputs})
    if not used:
        return "device-only"
    names = [cm.tiers[t] for t in used]
    return "-".join(names) + ("-only" if len(names) == 1 else "")
