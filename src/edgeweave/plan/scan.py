"""Exhaustive cut scan along one linear order of the nodes (Neurosurgeon, Kang et al. 2017).

For a chain DNN (AlexNet, VGG) every monotone placement is "the first i nodes on the device, the
next j-i on the edge, the rest in the cloud", so scanning every (i, j) is exact. For a DAG the
same scan over a topological order covers only the placements that order admits; the planner
uses it there as a candidate generator (throughput objective, constrained search), never as
the exact answer.

Everything is vectorised over all cut tuples at once: the distinct tensors crossing a cut at
position i are the ones produced before i and consumed at or after i, which a difference array
over the order gives for every i in one pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations_with_replacement

import numpy as np

from edgeweave.plan.costs import CostModel, Weights
from edgeweave.topology import serialize_ms


@dataclass(frozen=True)
class ScanResult:
    """Per candidate cut tuple, every quantity a constrained search filters or ranks on."""

    cuts: np.ndarray  # (m, tiers-1) positions; nodes at positions >= cuts[k] are above hop k
    order: np.ndarray  # node index at each position
    valid: np.ndarray  # respects tier restrictions
    latency_ms: np.ndarray
    energy_j: np.ndarray
    bottleneck_ms: np.ndarray
    device_param_bytes: np.ndarray

    def labels(self, row: int) -> np.ndarray:
        """Tier index of every node for candidate `row`."""
        pos_label = np.searchsorted(self.cuts[row], np.arange(len(self.order)), side="right")
        labels = np.empty(len(self.order), dtype=int)
        labels[self.order] = pos_label
        return labels


def _cut_tuples(n: int, hops: int) -> np.ndarray:
    if hops == 0:
        return np.zeros((1, 0), dtype=int)
    return np.array(list(combinations_with_replacement(range(n + 1), hops)), dtype=int)


def scan(cm: CostModel, order: Sequence[int] | None = None, forbid: np.ndarray | None = None
         ) -> ScanResult:
    """Cost of every monotone placement that splits `order` (default: topological) into
    consecutive tier segments."""
    order_arr = np.asarray(cm.order if order is None else order, dtype=int)
    n, levels = cm.n, cm.n_tiers
    hops = levels - 1
    pos = np.empty(n, dtype=int)
    pos[order_arr] = np.arange(n)
    cuts = _cut_tuples(n, hops)
    bounds = np.hstack([np.zeros((len(cuts), 1), int), cuts, np.full((len(cuts), 1), n)])

    def segment_sums(per_node: np.ndarray) -> np.ndarray:
        """(m, levels): sum over each tier's segment of per_node[:, tier] in order."""
        pref = np.vstack([np.zeros(levels), np.cumsum(per_node[order_arr], axis=0)])
        return np.stack(
            [pref[bounds[:, t + 1], t] - pref[bounds[:, t], t] for t in range(levels)], axis=1
        )

    tier_ms = segment_sums(cm.lat)
    forbid_arr = np.zeros((n, levels)) if forbid is None else forbid.astype(float)
    valid = segment_sums(forbid_arr).sum(axis=1) == 0

    # live[i]: bytes of distinct tensors produced before position i, consumed at or after it
    diff = np.zeros(n + 2)
    for u in range(n):
        if cm.consumers[u]:
            last = max(pos[v] for v in cm.consumers[u])
            diff[pos[u] + 1] += cm.out_bytes[u]
            diff[last + 1] -= cm.out_bytes[u]
    live = np.cumsum(diff)[: n + 1]
    used = cuts < n  # something runs above hop k
    up_bytes = np.where(used, live[cuts], 0.0)
    out_pos = np.array([pos[o] for o in cm.outputs])
    out_bytes = np.array([cm.out_bytes[o] for o in cm.outputs])
    above = cuts[:, :, None] <= out_pos[None, None, :]  # (m, hops, outputs)
    down_bytes = (above * out_bytes).sum(axis=2)
    down_used = above.any(axis=2)

    def linear(w: Weights) -> np.ndarray:
        total = segment_sums(w.unary).sum(axis=1)
        total += (used * w.fixed_up + up_bytes * w.per_byte_up).sum(axis=1)
        total += (down_used * w.fixed_down + down_bytes * w.per_byte_down).sum(axis=1)
        return total

    mbps = np.array([lk.mbps for lk in cm.links])
    serialize = serialize_ms(1.0, mbps) if hops else np.zeros(0)
    stages = [tier_ms, up_bytes * serialize, down_bytes * serialize]
    bottleneck = np.max(np.hstack(stages), axis=1)
    param_pref = np.concatenate([[0.0], np.cumsum(cm.param_bytes[order_arr])])
    device_params = param_pref[bounds[:, 1]]
    return ScanResult(
        cuts=cuts,
        order=order_arr,
        valid=valid,
        latency_ms=linear(cm.weights("latency")),
        energy_j=linear(cm.weights("energy")),
        bottleneck_ms=bottleneck,
        device_param_bytes=device_params,
    )
