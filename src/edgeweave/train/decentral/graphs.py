"""Peer graphs for decentralized training and their gossip mixing matrices.

A graph is given by a short spec string (``"ring"``, ``"torus"``, ``"complete"``,
``"regular:4"``, ``"erdos:0.1"``, ``"star"``) or an explicit edge list, and is checked before any
training starts: the right node count, no self loops, and connected. A disconnected peer graph
can never reach consensus (its components train separate models), so it is an error here, not
a silently worse curve later.

Mixing uses Metropolis-Hastings weights (Xiao & Boyd 2004): ``W_ij = 1 / (1 + max(d_i, d_j))``
on each edge and the rest on the diagonal. They need only each node's and its neighbours'
degrees (no global knowledge), and give a symmetric, doubly stochastic W on any connected graph,
which is what D-PSGD's convergence proof (Lian et al. 2017) asks of the mixing matrix.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import networkx as nx
import numpy as np
import torch

from edgeweave.train.types import TrainError

GRAPH_KINDS = ("ring", "torus", "complete", "regular:K", "erdos:P", "star", "edges")


@dataclass(frozen=True)
class PeerGraph:
    """An undirected, connected peer graph on nodes 0..n-1 (plain data: the edge list)."""

    n: int
    edges: tuple[tuple[int, int], ...]
    spec: str = "edges"

    def __post_init__(self) -> None:
        if self.n < 1:
            raise TrainError(f"peer graph {self.spec!r}: need at least 1 node, got {self.n}")
        g = nx.Graph()
        g.add_nodes_from(range(self.n))
        for a, b in self.edges:
            if not (0 <= a < self.n and 0 <= b < self.n):
                raise TrainError(f"peer graph {self.spec!r}: edge ({a}, {b}) names a node "
                                 f"outside 0..{self.n - 1}")
            if a == b:
                raise TrainError(f"peer graph {self.spec!r}: self loop on node {a}")
            g.add_edge(a, b)
        if self.n > 1 and not nx.is_connected(g):
            parts = sorted(len(c) for c in nx.connected_components(g))
            raise TrainError(f"peer graph {self.spec!r}: not connected (components of sizes "
                             f"{parts}); gossip cannot reach consensus across components")

    def nx(self) -> nx.Graph:
        g = nx.Graph()
        g.add_nodes_from(range(self.n))
        g.add_edges_from(self.edges)
        return g

    def neighbours(self) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in range(self.n)]
        for a, b in self.edges:
            out[a].append(b)
            out[b].append(a)
        return [sorted(set(v)) for v in out]

    def degrees(self) -> np.ndarray:
        return np.array([len(v) for v in self.neighbours()], dtype=np.int64)

    def adjacency(self) -> torch.Tensor:
        """(n, n) bool, symmetric, no diagonal."""
        a = torch.zeros(self.n, self.n, dtype=torch.bool)
        for i, j in self.edges:
            a[i, j] = a[j, i] = True
        return a

    def mixing_matrix(self) -> torch.Tensor:
        """Metropolis-Hastings weights (float64): symmetric and doubly stochastic."""
        deg = self.degrees()
        w = torch.zeros(self.n, self.n, dtype=torch.float64)
        for i, j in set((min(a, b), max(a, b)) for a, b in self.edges):
            w[i, j] = w[j, i] = 1.0 / (1 + max(deg[i], deg[j]))
        w += torch.diag(1.0 - w.sum(1))
        return w

    def spectral_gap(self) -> float:
        """1 - |second largest eigenvalue| of the mixing matrix: how fast gossip mixes."""
        if self.n == 1:
            return 1.0
        ev = np.sort(np.abs(np.linalg.eigvalsh(self.mixing_matrix().numpy())))[::-1]
        return float(1.0 - ev[1])


def _arg(spec: str, kind: str, cast: type) -> float | int:
    try:
        return cast(spec.split(":", 1)[1])
    except (IndexError, ValueError):
        raise TrainError(f"peer graph {spec!r}: {kind} needs a number after ':' "
                         f"(e.g. '{kind}:{4 if cast is int else 0.2}')") from None


def make_graph(spec: str | Sequence[tuple[int, int]], n: int, seed: int = 0) -> PeerGraph:
    """A peer graph from a spec (see module doc) or an edge list, on ``n`` nodes."""
    if not isinstance(spec, str):
        return PeerGraph(n, _edges(spec, n), "edges")
    if n < 1:
        raise TrainError(f"peer graph {spec!r}: need at least 1 node, got {n}")
    kind = spec.split(":", 1)[0]
    if kind == "ring":
        g = nx.cycle_graph(n) if n > 2 else nx.path_graph(n)
    elif kind == "complete":
        g = nx.complete_graph(n)
    elif kind == "star":
        g = nx.star_graph(n - 1)
    elif kind == "torus":
        g = _torus(n, spec)
    elif kind == "regular":
        k = int(_arg(spec, "regular", int))
        if not 0 < k < n or (k * n) % 2:
            raise TrainError(f"peer graph {spec!r}: a {k}-regular graph on {n} nodes needs "
                             "0 < k < n and k * n even")
        g = _connected(lambda s: nx.random_regular_graph(k, n, seed=s), spec, seed)
    elif kind == "erdos":
        p = float(_arg(spec, "erdos", float))
        if not 0 < p <= 1:
            raise TrainError(f"peer graph {spec!r}: edge probability must be in (0, 1]")
        g = _connected(lambda s: nx.erdos_renyi_graph(n, p, seed=s), spec, seed)
    else:
        raise TrainError(f"peer graph {spec!r}: unknown kind {kind!r}; expected one of "
                         f"{', '.join(GRAPH_KINDS)} or an edge list")
    return PeerGraph(n, tuple((int(a), int(b)) for a, b in g.edges()), spec)


def _edges(edges: Iterable[tuple[int, int]], n: int) -> tuple[tuple[int, int], ...]:
    out = []
    for e in edges:
        try:
            a, b = e
            out.append((int(a), int(b)))
        except (TypeError, ValueError):
            raise TrainError(f"peer graph edge list: {e!r} is not a pair of node ids") from None
    return tuple(out)


def _torus(n: int, spec: str) -> nx.Graph:
    rows = math.isqrt(n)
    while rows > 1 and n % rows:
        rows -= 1
    if rows < 3 or n // rows < 3:
        raise TrainError(f"peer graph {spec!r}: a torus needs n = rows * cols with both >= 3, "
                         f"got n = {n}")
    g = nx.grid_2d_graph(rows, n // rows, periodic=True)
    return nx.convert_node_labels_to_integers(g, ordering="sorted")


def _connected(make, spec: str, seed: int, tries: int = 20) -> nx.Graph:
    """Random graphs are redrawn (seeded) until connected; a spec that cannot give a connected
    graph in a few draws (too sparse) is reported rather than looped on."""
    for t in range(tries):
        g = make(seed + t)
        if g.number_of_nodes() == 1 or nx.is_connected(g):
            return g
    raise TrainError(f"peer graph {spec!r}: no connected graph in {tries} seeded draws; "
                     "use a denser graph")
