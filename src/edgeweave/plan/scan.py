"""Exhaustive cut scan along one linear order of the nodes (Neurosurgeon, Kang et al. 2017).

For a chain DNN (AlexNet, VGG) every monotone placement is "the first i nodes on the device, the
next j-i on the edge, the rest in the cloud", so scanning every (i, j) is exact. For a DAG the
same scan over a topological order covers only the placements that order admits; the planner
uses it there as a candidate generator (throughput objective, constrained search), never as
the exact answer. All cut tuples are priced at once by `CostModel.evaluate_many`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations_with_replacement

import numpy as np

from edgeweave.plan.costs import CostModel, Evaluation


@dataclass(frozen=True)
class ScanResult:
    labels: np.ndarray  # (m, n) tier index of every node, one row per allowed cut tuple
    costs: Evaluation


def cut_labels(n_nodes: int, n_tiers: int, order: Sequence[int],
               positions: Sequence[int] | None = None) -> np.ndarray:
    """One placement per cut tuple c_1 <= ... <= c_{T-1} drawn from `positions` (default: all
    n+1): position p of `order` gets the number of cuts at or before p."""
    hops = n_tiers - 1
    if hops == 0:
        return np.zeros((1, n_nodes), dtype=int)
    where = range(n_nodes + 1) if positions is None else sorted(set(positions))
    cuts = np.array(list(combinations_with_replacement(where, hops)), dtype=int)
    at = np.arange(n_nodes)
    by_position = (cuts[:, None, :] <= at[None, :, None]).sum(axis=2)
    labels = np.empty_like(by_position)
    labels[:, np.asarray(order)] = by_position
    return labels


def crossing_bytes(cm: CostModel, order: Sequence[int], sizes: np.ndarray | None = None
                   ) -> np.ndarray:
    """Bytes of the distinct tensors produced before position i of `order` and consumed at or
    after it, for i = 0..n: what a cut at i would have to ship (each tensor counted at
    `sizes[u]`, e.g. a codec's measured payload; default its raw bytes)."""
    size = cm.out_bytes if sizes is None else sizes
    pos = np.empty(cm.n, dtype=int)
    pos[np.asarray(order)] = np.arange(cm.n)
    diff = np.zeros(cm.n + 2)
    for u in range(cm.n):
        if cm.consumers[u]:
            diff[pos[u] + 1] += size[u]
            diff[max(pos[v] for v in cm.consumers[u]) + 1] -= size[u]
    return np.cumsum(diff)[: cm.n + 1]


def narrow_positions(cm: CostModel, order: Sequence[int], keep: int) -> list[int]:
    """The `keep` cut positions with the least data crossing them, plus both ends: where a
    good split of a long DAG almost always lies (Neurosurgeon's observation, Fig. 4)."""
    live = crossing_bytes(cm, order)
    best = np.argsort(live[1:-1], kind="stable")[:keep] + 1
    return [0, cm.n, *best.tolist()]


def scan(cm: CostModel, order: Sequence[int] | None = None, forbid: np.ndarray | None = None,
         positions: Sequence[int] | None = None) -> ScanResult:
    """Price every placement that splits `order` (default: topological) into consecutive
    tier segments at `positions` (default: everywhere), skipping those `forbid` rules out."""
    labels = cut_labels(cm.n, cm.n_tiers, cm.order if order is None else order, positions)
    if forbid is not None:
        labels = labels[~forbid[np.arange(cm.n)[None, :], labels].any(axis=1)]
    return ScanResult(labels, cm.evaluate_many(labels))
