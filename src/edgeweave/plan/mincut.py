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

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import breadth_first_order, maximum_flow

from edgeweave.errors import PlanError
from edgeweave.plan.costs import CostModel, Weights

_INF = 2**30
_BUDGET = 2**29


def solve(cm: CostModel, w: Weights, forbid: np.ndarray | None = None) -> np.ndarray:
    """Minimise `w` over monotone placements; `forbid[u, t]` keeps node u off tier t."""
    n, levels = cm.n, cm.n_tiers
    if levels == 1:
        return np.zeros(n, dtype=int)
    unary = w.unary.copy()
    forbid = np.zeros_like(unary, dtype=bool) if forbid is None else forbid
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


class _CutGraph:
    """The vertex/edge structure for one cost model, built once with numpy; only capacities
    change between objectives, modes and Lagrange multipliers."""

    def __init__(self, cm: CostModel):
        n, hops = cm.n, cm.n_tiers - 1
        self.n, self.hops = n, hops
        u = np.arange(n)
        var = 2 + np.arange(hops)[:, None] * n + u[None, :]  # (hops, n): x_{k+1}(u)
        aux = var + hops * n
        self.var = var
        self.z_up = 2 + 2 * hops * n + np.arange(hops)
        self.z_down = self.z_up + hops
        self.size = int(2 + 2 * hops * n + 2 * hops)
        chain = np.vstack([np.zeros((1, n), int), var, np.ones((1, n), int)])  # s, x.., t
        e_src, e_dst = cm.edge_src, cm.edge_dst
        out = np.array(cm.outputs, dtype=int)
        src, dst = [], []
        self.n_chain = hops + 1  # chain edges per node, one per tier, finite unless forbidden
        for lab in range(hops + 1):
            src.append(chain[lab])
            dst.append(chain[lab + 1])
        self.n_gadget = hops  # aux(k,u) -> x_k(u), priced per byte of u's output
        for k in range(hops):
            src.append(aux[k])
            dst.append(var[k])
        fixed_src = [self.z_up, self.z_down]
        fixed_dst = [np.ones(hops, int), np.ones(hops, int)]
        inf_src = [var[1:].ravel(), var[:, e_src].ravel(), var[:, e_dst].ravel(),
                   var.ravel(), var[:, out].ravel()]
        inf_dst = [var[:-1].ravel(), var[:, e_dst].ravel(), aux[:, e_src].ravel(),
                   np.repeat(self.z_up, n), np.repeat(self.z_down, len(out))]
        self.src = np.concatenate(src + fixed_src + inf_src)
        self.dst = np.concatenate(dst + fixed_dst + inf_dst)
        self.n_inf = sum(len(a) for a in inf_src)
        self.has_consumer = np.array([bool(c) for c in cm.consumers])

    def capacities(self, cm: CostModel, w: Weights, unary: np.ndarray, forbid: np.ndarray
                   ) -> np.ndarray:
        """Float capacities in edge order; -1 marks infinity."""
        chain = np.where(forbid, -1.0, unary).T.ravel()  # tier-major, matching the edge order
        gadget = (w.per_byte_up[:, None] * cm.hop_bytes * self.has_consumer).ravel()
        fixed = np.concatenate([w.fixed_up, w.fixed_down])
        return np.concatenate([chain, gadget, fixed, np.full(self.n_inf, -1.0)])


def _cut(cm: CostModel, w: Weights, unary: np.ndarray, forbid: np.ndarray) -> np.ndarray:
    g = cm.cache.get("cut_graph")
    if not isinstance(g, _CutGraph):  # not built yet for this cost model
        g = cm.cache["cut_graph"] = _CutGraph(cm)
    caps = g.capacities(cm, w, unary, forbid)
    finite = caps >= 0
    total = caps[finite].sum()
    if not np.isfinite(total):
        raise PlanError("cost model produced a non-finite cost (check the profile's latencies)")
    # costs below 1e-200 in total are all ties; scaling them up would overflow to inf
    scale = _BUDGET / total if total > 1e-200 else 0.0
    icap = np.where(finite, np.rint(caps * scale), _INF).astype(np.int64)
    graph = csr_matrix((icap, (g.src, g.dst)), shape=(g.size, g.size))
    graph.sum_duplicates()  # summed in int64, then capped, so parallel edges cannot overflow
    graph.data = np.minimum(graph.data, _INF).astype(np.int32)
    flow = maximum_flow(graph, 0, 1, method="dinic")
    residual = (graph - flow.flow).tocsr()
    residual.data[residual.data < 0] = 0
    residual.eliminate_zeros()
    reach = np.zeros(g.size, dtype=np.bool_)
    reach[breadth_first_order(residual, 0, directed=True, return_predecessors=False)] = True
    return reach[g.var].sum(axis=0).astype(int)
