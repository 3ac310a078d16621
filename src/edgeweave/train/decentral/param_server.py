"""Synchronous parameter server (Li et al. 2014's push/pull, in its bulk-synchronous form).

Each round every worker pushes its gradient to the server, the server averages them and
updates the model, and every worker pulls the new model. Per round a worker sends one gradient
and receives one model, but the server receives n gradients and sends n models over its one
link: the server's link, not the workers', is what grows with n, and it is counted as the
server's row in the byte totals (``max_node_bytes`` is the server's load).
"""

from __future__ import annotations

import numpy as np

from edgeweave.train.decentral.stack import NodeStack
from edgeweave.train.decentral.timing import TimeModel
from edgeweave.train.decentral.trace import Recorder, RunConfig, Trace


def server_exchange_s(n: int, nbytes: int, time: TimeModel) -> float:
    """One push-all then pull-all phase: n messages share the server's link, each also limited
    by the worker's own link."""
    one_way = time.latency_s + max(nbytes / time.link_Bps, n * nbytes / time.server_Bps)
    return 2 * one_way


def param_server_sgd(stack: NodeStack, config: RunConfig, time: TimeModel) -> Trace:
    rec = Recorder("param-server", stack, config, server=True)
    rng = np.random.default_rng([config.seed, 13])
    speeds = time.speeds(stack.n)
    x = stack.init.clone()
    n, m = stack.n, stack.model_bytes
    workers = np.arange(n)
    clock = 0.0
    comm = server_exchange_s(n, m, time)
    for r in range(1, config.rounds + 1):
        g, _ = stack.grads(x.unsqueeze(0).expand(n, -1))
        x = x - config.lr * g.mean(0)
        rec.send(workers, m)      # pushes
        rec.send(n, n * m)        # the server's pulls
        clock += float(time.step_times(rng, speeds).max()) + comm
        if rec.due(r):
            rec.point(r, clock, x, server_bytes=int(rec.sent[n]))
    rec.trace.extra["exchange_s"] = comm
    return rec.trace
