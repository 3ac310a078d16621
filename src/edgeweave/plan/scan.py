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


def cut_labels(n_nodes: int, n_tiers: int, order: Sequence[int]) -> np.ndarray:
    """One placement per cut tuple c_1 <= ... <= c_{T-1}: position p of `order` gets the
    number of cuts at or before p."""
    hops = n_tiers - 1
    if hops == 0:
        return np.zeros((1, n_nodes), dtype=int)
    cuts = np.array(list(combinations_with_replacement(range(n_nodes + 1), hops)), dtype=int)
    positions = np.arange(n_nodes)
    by_position = (cuts[:, None, :] <= positions[None, :, None]).sum(axis=2)
    labels = np.empty_like(by_position)
    labels[:, np.asarray(order)] = by_position
    return labels


def scan(cm: CostModel, order: Sequence[int] | None = None, forbid: np.ndarray | None = None
         ) -> ScanResult:
    """Price every placement that splits `order` (default: topological) into consecutive
    tier segments, skipping those `forbid` rules out."""
    labels = cut_labels(cm.n, cm.n_tiers, cm.order if order is None else order)
    if forbid is not None:
        labels = labels[~forbid[np.arange(cm.n)[None, :], labels].any(axis=1)]
    return ScanResult(labels, cm.evaluate_many(labels))
