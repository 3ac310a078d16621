"""Ring all-reduce (Patarasuk & Yuan 2009; Baidu/Horovod's algorithm) and synchronous SGD on it.

The vector is cut into n chunks. Reduce-scatter: in step s (n-1 steps) node i sends its running
sum of chunk (i - s) mod n to node i+1, which adds it to its own; afterwards node i holds the
full sum of chunk (i + 1) mod n. All-gather: n-1 more steps pass the finished chunks around the
ring. Each node sends 2(n-1) chunks, 2(n-1)/n of the vector, whatever n is: bandwidth-optimal,
but 2(n-1) sequential latencies, which is what hurts it at 100 nodes on edge links.

The ring is run here step by step on the real data (not replaced by ``mean``), so the byte
counts and the result are those of the algorithm itself; the tests check it against the exact
mean and the 2(n-1)/n formula.
"""

from __future__ import annotations

import numpy as np
import torch

from edgeweave.train.decentral.stack import NodeStack
from edgeweave.train.decentral.timing import TimeModel
from edgeweave.train.decentral.trace import Recorder, RunConfig, Trace
from edgeweave.train.types import TrainError


def ring_allreduce(X: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
    """Every node's copy of the mean of the rows of ``X`` (n, D), and the bytes each node sent."""
    if X.dim() != 2 or X.shape[0] < 1:
        raise TrainError(f"ring all-reduce: need an (n, D) tensor, got shape {tuple(X.shape)}")
    n, d = X.shape
    sent = np.zeros(n, dtype=np.int64)
    if n == 1:
        return X.clone(), sent
    sizes = np.array([len(c) for c in np.array_split(np.arange(d), n)], dtype=np.int64)
    width = int(sizes.max())
    buf = X.new_zeros(n, n, width)  # buf[node, chunk]
    for c, (lo, sz) in enumerate(zip(np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes,
                                     strict=True)):
        buf[:, c, :sz] = X[:, lo:lo + sz]
    nodes = torch.arange(n)
    nxt = (nodes + 1) % n
    item = X.element_size()
    for s in range(n - 1):  # reduce-scatter
        chunk = (nodes - s) % n
        msg = buf[nodes, chunk].clone()
        buf[nxt, chunk] += msg
        sent += sizes[chunk.numpy()] * item
    for s in range(n - 1):  # all-gather: node i owns chunk (i + 1) mod n and passes it on
        chunk = (nodes + 1 - s) % n
        buf[nxt, chunk] = buf[nodes, chunk].clone()
        sent += sizes[chunk.numpy()] * item
    out = torch.cat([buf[:, c, :sizes[c]] for c in range(n)], dim=1) / n
    return out, sent


def ring_allreduce_s(n: int, nbytes: int, time: TimeModel) -> float:
    """Simulated seconds of one ring all-reduce of ``nbytes`` over n nodes."""
    if n == 1:
        return 0.0
    return 2 * (n - 1) * time.message_s(-(-nbytes // n))


def allreduce_sgd(stack: NodeStack, config: RunConfig, time: TimeModel) -> Trace:
    """Synchronous data-parallel SGD: all nodes compute a gradient at the shared model, average
    them with a ring all-reduce, and take the same step (everyone waits for the slowest)."""
    rec = Recorder("allreduce-sgd", stack, config)
    rng = np.random.default_rng([config.seed, 11])
    speeds = time.speeds(stack.n)
    X = stack.replicate()
    clock = 0.0
    comm = ring_allreduce_s(stack.n, stack.model_bytes, time)
    for r in range(1, config.rounds + 1):
        g, _ = stack.grads(X)
        mean, sent = ring_allreduce(g)
        X = X - config.lr * mean
        rec.send(np.arange(stack.n), sent)
        clock += float(time.step_times(rng, speeds).max()) + comm
        if rec.due(r):
            rec.point(r, clock, X[0])
    rec.trace.extra["allreduce_s"] = comm
    return rec.trace
