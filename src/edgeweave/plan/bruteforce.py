"""Every monotone placement, enumerated: the ground truth the fast planners are checked against.

A monotone placement over ordered tiers is a nested family of closed (upward-closed) node sets,
one per hop; walking the nodes in topological order and giving each a tier no lower than any
producer's enumerates exactly those families, each once. Exponential, so only for small graphs
(tests and benchmarks use <= 16 nodes).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from edgeweave.errors import PlanError
from edgeweave.plan.costs import CostModel

MAX_NODES = 20


def monotone_placements(cm: CostModel, forbid: np.ndarray | None = None) -> Iterator[np.ndarray]:
    if cm.n > MAX_NODES:
        raise PlanError(f"brute force is for graphs of at most {MAX_NODES} nodes, got {cm.n}")
    labels = np.zeros(cm.n, dtype=int)

    def walk(i: int) -> Iterator[np.ndarray]:
        if i == cm.n:
            yield labels.copy()
            return
        u = cm.order[i]
        low = max((labels[p] for p in cm.producers[u]), default=0)
        for t in range(low, cm.n_tiers):
            if forbid is not None and forbid[u, t]:
                continue
            labels[u] = t
            yield from walk(i + 1)

    yield from walk(0)


def best(cm: CostModel, objective: str, forbid: np.ndarray | None = None
         ) -> tuple[np.ndarray, float]:
    """The optimum of `objective` over all monotone placements, by exhaustive evaluation."""
    best_labels, best_value = None, float("inf")
    for labels in monotone_placements(cm, forbid):
        value = cm.evaluate(labels).value(objective)
        if value < best_value:
            best_labels, best_value = labels, value
    if best_labels is None:
        raise PlanError("no monotone placement satisfies the tier restrictions")
    return best_labels, best_value
