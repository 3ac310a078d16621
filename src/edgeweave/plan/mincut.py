"""Exact multi-tier placement of a DAG by one minimum s-t cut.

DADS (Hu et al., INFOCOM 2019) cuts a DAG between two tiers with a min s-t cut. We generalise
to any number of ordered tiers with Ishikawa's layered construction (Ishikawa, PAMI 2003): node
u gets binary variables x_k(u) = [tier(u) >= k] for k = 1..L-1, chained so x_{k+1} <= x_k.
Every term of the cost model is then a submodular function of these variables:
  * unary cost of u at tier l      -> the edge of u's chain that the cut crosses;
  * monotone placement             -> infinite edges x_k(u) -> x_k(v) for each data edge u->v;
  * a tensor charged ONCE per hop, however many consumers sit above it -> one auxiliary vertex
    per (tensor, hop) that any consumer above the hop drags across the cut (DADS charges per
    edge instead, which double-counts ResNet's and GoogLeNet's fan-outs);
  * the per-hop RTT paid once if anything runs above the hop -> one auxiliary vertex per hop.
So the cut is exact for the cost model in `costs.py`, for 2 or 3 tiers alike.

scipy's max-flow is C code (Dinic) but takes int32 capacities: costs are scaled so that all
finite capacities sum to at most 2**29 and "infinite" is 2**30. The rounding can only confuse
placements whose costs differ by about 1e-6 of the total; the caller re-evaluates the chosen
placement exactly in floating point.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import breadth_first_order, maximum_flow

from edgeweave.errors import PlanError
from edgeweave.plan.costs import CostModel, Weights

_INF = 2**30
_BUDGET = 2**29


def solve(
    cm: CostModel,
    w: Weights,
    allowed: Mapping[int, set[int]] | None = None,
) -> np.ndarray:
    """Minimise `w` over monotone placements; `allowed[u]` restricts node u's tiers."""
    n, levels = cm.n, cm.n_tiers
    if levels == 1:
        return np.zeros(n, dtype=int)
    unary = w.unary.copy()
    forbid = np.zeros_like(unary, dtype=bool)
    for u, tiers in (allowed or {}).items():
        for t in range(levels):
            forbid[u, t] = t not in tiers
    # the output comes back down every hop it went up: fold that into the output's unary cost
    for o in cm.outputs:
        for t in range(levels):
            unary[o, t] += cm.out_bytes[o] * w.per_byte_down[:t].sum()
    _check_feasible(cm, forbid)
    return _cut(cm, w, unary, forbid)


def _check_feasible(cm: CostModel, forbid: np.ndarray) -> None:
    """Reject impossible restrictions up front: an infeasible cut would push "infinite" flow
    through int32 capacities."""
    low = np.zeros(cm.n, dtype=int)
    for u in cm.order:
        ok = [t for t in range(low[u], cm.n_tiers) if not forbid[u, t]]
        if not ok:
            raise PlanError(
                f"no monotone placement lets node {cm.names[u]!r} run on an allowed tier"
            )
        low[u] = ok[0]
        for v in cm.consumers[u]:
            low[v] = max(low[v], low[u])


def _cut(cm: CostModel, w: Weights, unary: np.ndarray, forbid: np.ndarray) -> np.ndarray:
    n, levels = cm.n, cm.n_tiers
    hops = levels - 1
    s, t = 0, 1

    def var(k: int, u: int) -> int:  # x_{k+1}(u), k = 0..hops-1
        return 2 + k * n + u

    def aux(k: int, u: int) -> int:
        return 2 + hops * n + k * n + u

    z_up = 2 + 2 * hops * n
    z_down = z_up + hops
    size = z_down + hops

    src: list[int] = []
    dst: list[int] = []
    cap: list[float] = []  # float cost, or -1 for infinity

    def edge(a: int, b: int, c: float) -> None:
        src.append(a)
        dst.append(b)
        cap.append(c)

    for u in range(n):
        chain = [s] + [var(k, u) for k in range(hops)] + [t]
        for lab in range(levels):
            edge(chain[lab], chain[lab + 1], -1.0 if forbid[u, lab] else float(unary[u, lab]))
        for k in range(hops - 1):
            edge(var(k + 1, u), var(k, u), -1.0)
        for k in range(hops):
            for v in cm.consumers[u]:
                edge(var(k, u), var(k, v), -1.0)
            c = cm.out_bytes[u] * w.per_byte_up[k]
            if cm.consumers[u] and c > 0:
                edge(aux(k, u), var(k, u), float(c))
                for v in cm.consumers[u]:
                    edge(var(k, v), aux(k, u), -1.0)
            edge(var(k, u), z_up + k, -1.0)
    for k in range(hops):
        edge(z_up + k, t, float(w.fixed_up[k]))
        edge(z_down + k, t, float(w.fixed_down[k]))
        for o in cm.outputs:
            edge(var(k, o), z_down + k, -1.0)

    caps = np.asarray(cap)
    finite = caps >= 0
    total = caps[finite].sum()
    if not np.isfinite(total):
        raise PlanError("cost model produced a non-finite cost (check the profile's latencies)")
    scale = _BUDGET / total if total > 0 else 1.0
    icap = np.where(finite, np.rint(caps * scale), _INF).astype(np.int64)
    graph = csr_matrix((icap, (np.asarray(src), np.asarray(dst))), shape=(size, size))
    graph.sum_duplicates()  # summed in int64, then capped, so parallel edges cannot overflow
    graph.data = np.minimum(graph.data, _INF).astype(np.int32)
    flow = maximum_flow(graph, s, t, method="dinic")
    residual = (graph - flow.flow).tocsr()
    residual.data[residual.data < 0] = 0
    residual.eliminate_zeros()
    reach = np.zeros(size, dtype=bool)
    reach[breadth_first_order(residual, s, directed=True, return_predecessors=False)] = True
    labels = np.zeros(n, dtype=int)
    for k in range(hops):
        labels += reach[[var(k, u) for u in range(n)]]
    return labels
