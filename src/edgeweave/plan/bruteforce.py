"""Every monotone placement, enumerated: the ground truth the fast planners are checked against.

A monotone placement over ordered tiers is a nested family of closed (upward-closed) node sets,
one per hop; walking the nodes in topological order and giving each a tier no lower than any
producer's enumerates exactly those families, each once. Exponential, so only for small graphs
(tests and benchmarks use <= 16 nodes); rows are built and priced as arrays.
"""

from __future__ import annotations

import numpy as np

from edgeweave.errors import PlanError
from edgeweave.plan.costs import CostModel

MAX_PLACEMENTS = 3_000_000


def monotone_placements(cm: CostModel, forbid: np.ndarray | None = None) -> np.ndarray:
    """All monotone placements as rows of tier indices (columns in node order)."""
    rows = np.zeros((1, cm.n), dtype=np.int8)
    for u in cm.order:
        low = rows[:, cm.producers[u]].max(axis=1) if cm.producers[u] else np.zeros(len(rows))
        parts = []
        for t in range(cm.n_tiers):
            if forbid is not None and forbid[u, t]:
                continue
            part = rows[low <= t].copy()
            part[:, u] = t
            parts.append(part)
        rows = np.concatenate(parts) if parts else rows[:0]
        if len(rows) > MAX_PLACEMENTS:
            raise PlanError(f"brute force: more than {MAX_PLACEMENTS} placements; graph too big")
    return rows.astype(int)


def best(cm: CostModel, objective: str, forbid: np.ndarray | None = None
         ) -> tuple[np.ndarray, float]:
    """The optimum of `objective` over all monotone placements."""
    rows = monotone_placements(cm, forbid)
    if len(rows) == 0:
        raise PlanError("no monotone placement satisfies the tier restrictions")
    values = cm.evaluate_many(rows).value(objective)
    i = int(np.argmin(values))
    return rows[i], float(values[i])
