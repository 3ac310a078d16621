"""Where the rest of the model runs after a prefix is partitioned across a cluster.

The prefix (a fused block, or the layers split layer-wise) runs on the cluster and ends at the
gateway; everything after it is placed by the single-device planner on the gateway's
device-edge-cloud path, with the prefix pinned to the device tier. Latency is additive, so the
rest's optimal placement does not depend on how the prefix is split: the planner's cost minus
the prefix's device time is the rest's exact cost. For throughput the bottleneck mixes the
gateway's tile work with its share of the rest, so the rest is planned for its own throughput,
which is a heuristic for the whole.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np

from edgeweave.plan.costs import Breakdown, CostModel
from edgeweave.plan.modes import base_forbid
from edgeweave.plan.planner import Constraints, optimise


@dataclass(frozen=True)
class Rest:
    """The rest of the model placed after a prefix: its cost without the prefix's compute."""

    labels: np.ndarray
    breakdown: Breakdown
    prefix_device_ms: float
    device_ms: float
    other_stages_ms: float
    device_param_bytes: int
    exact: bool
    mode: str
    extra_ms: float = 0.0  # what a calibration added to its time on the gateway (scaled)

    @property
    def latency_ms(self) -> float:
        """The rest's share of the frame's latency (its compute on every tier and its hops)."""
        return self.breakdown.total_ms - self.prefix_device_ms + self.extra_ms

    def scaled(self, factor: float) -> Rest:
        """The rest with its compute on the gateway ``factor`` times as long (a run's
        calibration: plan.run_calibration); its edge and cloud parts and hops unchanged."""
        return replace(self, device_ms=self.device_ms * factor,
                       extra_ms=self.extra_ms + (factor - 1.0) * self.device_ms)


def place_rest(cm: CostModel, prefix: Iterable[str], objective: str,
               gateway_bytes: float | None = None) -> Rest:
    """Plan the nodes after ``prefix`` with the prefix pinned to the device (the gateway),
    keeping the rest's weights on the gateway within ``gateway_bytes``; PlanError if they
    cannot be."""
    pinned = [cm.index[name] for name in prefix]
    forbid = base_forbid(cm)
    for u in pinned:
        forbid[u, 1:] = True
    # the planner counts the pinned prefix's weights on the device too: allow for them
    limit = None if gateway_bytes is None else gateway_bytes + float(
        cm.param_bytes[pinned].sum())
    solution = optimise(cm, "latency" if objective == "latency" else "throughput", forbid,
                        Constraints(device_mem_bytes=limit))
    labels = solution.labels
    prefix_ms = float(cm.lat[pinned, 0].sum()) if pinned else 0.0
    ev = cm.evaluate_many(labels[None, :])
    stages = ev.stages[0].copy()
    device_ms = float(stages[0]) - prefix_ms
    stages[0] = 0.0
    rest_nodes = np.ones(cm.n, dtype=bool)
    rest_nodes[pinned] = False
    device_params = int(((labels == 0) & rest_nodes) @ cm.param_bytes)
    # where the rest runs, in the planner's mode names ("device-only": on the gateway)
    rest_nodes[cm.inputs] = False
    used = sorted({int(t) for t in labels[rest_nodes]}) or [0]
    names = [cm.tiers[t] for t in used]
    rest_mode = "-".join(names) + ("-only" if len(names) == 1 else "")
    return Rest(labels, solution.breakdown, prefix_ms, device_ms, float(stages.max()),
                device_params, solution.exact and objective == "latency", rest_mode)
