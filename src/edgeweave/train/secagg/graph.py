"""Who masks with whom: the complete graph (Bonawitz et al. 2017) or a random k-regular graph
(Bell et al. 2020, "Secure single-server aggregation with (poly)logarithmic overhead").

On the complete graph every client agrees a key and expands a mask with each of the n-1 others,
so a client's work and share traffic grow linearly in n and the server's recovery work
quadratically. Bell et al. show that masking and secret-sharing only with k = O(log n) random
neighbours keeps the sum private (the honest clients' graph stays connected with high
probability) and still recovers dropouts, as long as every dropped client keeps at least t
surviving neighbours; the threshold is then set relative to k, not n.
"""

from __future__ import annotations

import math

import networkx as nx

from edgeweave.train.types import TrainError


def complete(ids: list[int]) -> dict[int, list[int]]:
    return {u: [v for v in ids if v != u] for u in ids}


def k_regular(ids: list[int], k: int, seed: int) -> dict[int, list[int]]:
    """A random k-regular graph over ``ids`` (the server samples it: Bell et al.'s semi-honest
    setting); k is raised by one when n*k is odd, and is at most n-1."""
    n = len(ids)
    k = min(k, n - 1)
    if k < 1:
        raise TrainError(f"secagg: a k-regular graph needs k >= 1 and 2+ clients, got k={k}, "
                         f"n={n}")
    if (n * k) % 2:
        k = k + 1 if k + 1 <= n - 1 else k - 1
    g = nx.random_regular_graph(k, n, seed=seed)
    return {ids[u]: sorted(ids[v] for v in g.neighbors(u)) for u in range(n)}


def default_k(n: int, dropout: float = 0.3, failure: float = 0.01) -> int:
    """The smallest even degree at which, with a fraction ``dropout`` of clients lost and
    t = threshold(k + 1), the chance that some client's secret has fewer than t live holders
    (and the sum is lost) is below ``failure``. Bell et al. choose k from n, the dropout rate
    and the failure target alike; it grows as log n. Independent-dropout binomial model."""
    from scipy.stats import binom

    for k in range(8, n, 2):
        t, live = threshold(k + 1), 1 - dropout
        # a survivor's b_u: itself plus its live neighbours; a dropped client's s_u: neighbours
        p_surv, p_drop = binom.cdf(t - 2, k, live), binom.cdf(t - 1, k, live)
        ok = (1 - p_surv) ** (n * live) * (1 - p_drop) ** (n * dropout)
        if 1 - ok < failure:
            return k
    return n - 1


def threshold(holders: int, fraction: float = 0.5) -> int:
    """Shares needed to rebuild a secret held by ``holders`` clients (a client's neighbours
    plus itself, so degree + 1): more than ``fraction`` of them, so the server cannot both
    rebuild a client's mask key and its self-mask seed
    (Bonawitz et al.: t > n/2 against an honest-but-curious server)."""
    if not 0 < fraction < 1:
        raise TrainError(f"secagg: threshold fraction must be in (0, 1), got {fraction}")
    return max(1, min(holders, math.floor(fraction * holders) + 1))
