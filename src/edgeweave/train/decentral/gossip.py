"""Gossip training: GoSGD (Blot et al. 2016) and synchronous D-PSGD (Lian et al. 2017).

GoSGD is asynchronous and uses sum-weight gossip (Kempe et al. 2003): node i keeps a weight
alpha_i (all start at 1/n). After a local step it picks ONE random neighbour j, halves its
weight and sends (x_i, alpha_i); j merges ``x_j <- (alpha_j x_j + alpha_i x_i) / (alpha_j +
alpha_i)`` and adds the weight. No message is ever answered, nobody waits, and the mixing steps
keep ``sum_i alpha_i x_i`` and ``sum_i alpha_i = 1`` exactly, so gossip moves the nodes toward a
consensus without moving their weighted average: only the gradient steps move it. The weighted
average is the model we evaluate.

The asynchronous run is simulated in waves: every node has its own clock; each wave takes the
nodes whose current step finishes within ``quantum`` of the earliest one, applies their
gradients (one batched call) and their pushes. A node's clock advances by its step time plus
its send time (latency + model / link), so fast nodes do more steps and gossip more often, as
on real devices. Messages are merged when sent (their latency is charged to the sender).

D-PSGD is the synchronous counterpart: ``X <- W X - lr G(X)`` with the Metropolis-Hastings
matrix of the peer graph; each node sends its model to every neighbour every round and waits
only for its neighbours (not for the whole network).
"""

from __future__ import annotations

import numpy as np
import torch

from edgeweave.train.decentral.graphs import PeerGraph
from edgeweave.train.decentral.stack import NodeStack
from edgeweave.train.decentral.timing import TimeModel
from edgeweave.train.decentral.trace import Recorder, RunConfig, Trace
from edgeweave.train.types import TrainError

WEIGHT_BYTES = 8  # the float64 alpha that travels with each GoSGD push


def gosgd_mix(X: torch.Tensor, alpha: torch.Tensor, senders: torch.Tensor,
              targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of GoSGD pushes (senders[k] -> targets[k]) from the same snapshot.

    Every sender halves its weight and ships (x, alpha/2); every receiver merges all it got.
    Returns new (X, alpha); ``(alpha[:, None] * X).sum(0)`` and ``alpha.sum()`` are unchanged.
    """
    if len(senders) != len(targets):
        raise TrainError(f"gosgd: {len(senders)} senders but {len(targets)} targets")
    if len(senders) == 0:
        return X, alpha
    if bool((senders == targets).any()):
        raise TrainError("gosgd: a node cannot push to itself")
    a = alpha.clone()
    a[senders] = a[senders] / 2
    ship_w = a[senders]
    num = a.unsqueeze(1) * X.double()
    num.index_add_(0, targets, ship_w.unsqueeze(1) * X[senders].double())
    den = a.clone()
    den.index_add_(0, targets, ship_w)
    return (num / den.unsqueeze(1)).to(X.dtype), den


def _random_neighbour(rng: np.random.Generator, nbrs: list[np.ndarray],
                      nodes: np.ndarray) -> np.ndarray:
    return np.array([nbrs[i][rng.integers(len(nbrs[i]))] for i in nodes], dtype=np.int64)


def gosgd(stack: NodeStack, graph: PeerGraph, config: RunConfig, time: TimeModel,
          push_prob: float = 1.0, quantum: float | None = None) -> Trace:
    """Asynchronous GoSGD over ``graph`` (see module doc)."""
    _check(stack, graph)
    if not 0 <= push_prob <= 1:
        raise TrainError(f"gosgd: push_prob must be in [0, 1], got {push_prob}")
    n = stack.n
    rec = Recorder("gosgd", stack, config)
    rng = np.random.default_rng([config.seed, 17])
    speeds = time.speeds(n)
    nbrs = [np.array(v, dtype=np.int64) for v in graph.neighbours()]
    q = time.step_s / 2 if quantum is None else quantum
    X = stack.replicate()
    alpha = torch.full((n,), 1.0 / n, dtype=torch.float64)
    ready = time.step_times(rng, speeds)  # when each node's current step finishes
    msg = stack.model_bytes + WEIGHT_BYTES
    send_s = time.message_s(msg)
    steps, r = 0, 0
    while r < config.rounds:
        now = float(ready.min())
        active = np.flatnonzero(ready <= now + q)
        idx = torch.from_numpy(active)
        g, _ = stack.grads(X[idx], idx)
        X[idx] -= config.lr * g
        push = active[rng.random(len(active)) < push_prob] if n > 1 else active[:0]
        if len(push):
            tgt = _random_neighbour(rng, nbrs, push)
            X, alpha = gosgd_mix(X, alpha, torch.from_numpy(push), torch.from_numpy(tgt))
            rec.send(push, msg)
        busy = np.zeros(n)
        busy[push] = send_s
        ready[active] = ready[active] + busy[active] + time.step_times(rng, speeds, active)
        steps += len(active)
        while steps >= (r + 1) * n and r < config.rounds:
            r += 1
            if rec.due(r):
                avg = (alpha.unsqueeze(1) * X.double()).sum(0).float()
                rec.point(r, now, avg, X, weight_sum=float(alpha.sum()))
    return rec.trace


def dpsgd(stack: NodeStack, graph: PeerGraph, config: RunConfig, time: TimeModel) -> Trace:
    """Synchronous D-PSGD: X <- W X - lr G(X), neighbour-synchronised clocks."""
    _check(stack, graph)
    n = stack.n
    rec = Recorder("dpsgd", stack, config)
    rng = np.random.default_rng([config.seed, 19])
    speeds = time.speeds(n)
    W = graph.mixing_matrix().float()
    reach = graph.adjacency() | torch.eye(n, dtype=torch.bool)
    deg = graph.degrees()
    send_s = torch.from_numpy(time.latency_s + deg * stack.model_bytes / time.link_Bps)
    clock = torch.zeros(n, dtype=torch.float64)
    X = stack.replicate()
    for r in range(1, config.rounds + 1):
        g, _ = stack.grads(X)
        X = W @ X - config.lr * g
        rec.send(np.arange(n), deg * stack.model_bytes)
        done = clock + torch.from_numpy(time.step_times(rng, speeds)) + send_s
        # node i can start the next round once it has every neighbour's model
        clock = torch.where(reach, done.unsqueeze(0), torch.tensor(-1.0, dtype=torch.float64)
                            ).max(1).values
        if rec.due(r):
            rec.point(r, float(clock.max()), X.mean(0), X)
    rec.trace.extra["spectral_gap"] = graph.spectral_gap()
    return rec.trace


def _check(stack: NodeStack, graph: PeerGraph) -> None:
    if graph.n != stack.n:
        raise TrainError(f"peer graph {graph.spec!r} has {graph.n} nodes but the task has "
                         f"{stack.n}")
