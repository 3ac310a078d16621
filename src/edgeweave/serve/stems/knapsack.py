"""Multiple-choice knapsack, exactly: pick one option (cost, value) from every group so that
the total value is largest within a budget.

Both the stem scheduler (one group per tenant) and the stream allocator (one group per stream)
are this problem on small spaces. Solved by merging Pareto frontiers group by group: after each
group only the (cost, value) pairs that no other pair beats on both survive, so the search is
exact yet stays small (the frontier is bounded by the number of distinct costs within budget).
Ties in value go to the cheaper choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Relative slack on the budget, so a choice that spends it exactly is not lost to rounding.
BUDGET_TOL = 1e-9


@dataclass(frozen=True)
class Pick:
    """The chosen option index per group, with their total cost and value."""

    indices: tuple[int, ...]
    cost: float
    value: float


def best_pick(groups: Sequence[Sequence[tuple[float, float]]], budget: float) -> Pick | None:
    """The most valuable pick of one ``(cost, value)`` per group with total cost <= budget, or
    None when even the cheapest options of every group exceed it."""
    limit = budget * (1 + BUDGET_TOL) + BUDGET_TOL
    cost = np.zeros(1)
    value = np.zeros(1)
    chosen = np.zeros((1, 0), dtype=np.int64)
    for options in groups:
        if not options:
            return None
        # the group's own dominated options can never be part of an optimum: drop them first
        oc, ov, idx = _frontier(np.array([c for c, _ in options], dtype=float),
                                np.array([v for _, v in options], dtype=float),
                                np.arange(len(options))[:, None])
        cost = (cost[:, None] + oc[None, :]).ravel()  # row-major: (frontier row, option)
        value = (value[:, None] + ov[None, :]).ravel()
        rows = np.repeat(np.arange(len(chosen)), len(oc))
        cols = np.tile(idx[:, 0], len(chosen))
        chosen = np.concatenate([chosen[rows], cols[:, None]], axis=1)
        keep = cost <= limit
        if not keep.any():
            return None
        cost, value, chosen = cost[keep], value[keep], chosen[keep]
        cost, value, chosen = _frontier(cost, value, chosen)
    best = int(np.argmax(value))  # the frontier is sorted by cost: argmax takes the cheapest
    return Pick(tuple(int(i) for i in chosen[best]), float(cost[best]), float(value[best]))


def _frontier(cost: np.ndarray, value: np.ndarray, chosen: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs no other pair beats: sorted by cost (then value, highest first), a pair
    survives only if it is worth strictly more than every cheaper one."""
    order = np.lexsort((-value, cost))
    cost, value, chosen = cost[order], value[order], chosen[order]
    best_before = np.maximum.accumulate(np.concatenate([[-np.inf], value[:-1]]))
    keep = value > best_before
    return cost[keep], value[keep], chosen[keep]
