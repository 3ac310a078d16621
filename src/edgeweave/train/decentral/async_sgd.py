"""Asynchronous parameter-server SGD with bounded staleness (stale synchronous parallel, SSP:
Ho et al. 2013, the reference the seeds cite for stale-synchronous training).

Workers pull the model, compute one minibatch gradient and push it; the server applies each
gradient the moment it arrives (no barrier), so a gradient computed on version v may land on
version v + tau: tau, its staleness, is recorded for every gradient. Without a bound a slow
worker's gradients grow arbitrarily stale. SSP bounds it with clocks: worker w's clock counts its
pushes, and w may start a new step only while ``clock_w - min_u clock_u <= s``; a worker more than
s steps ahead of the slowest WAITS until that one catches up. s = 0 is bulk-synchronous (every
worker waits for all each step); s = infinity is fully asynchronous.

The run is event driven: a heap of push arrivals in simulated time; the server's link
serialises messages (the PS bottleneck, :mod:`~edgeweave.train.decentral.timing`). A worker's
gradient depends only on the model it read, so the gradients of all workers in flight are
computed together in one batched call the first time one of them is needed.

``staleness_lr`` divides the step of a gradient of staleness tau by max(1, tau) (Zhang et al.
2016, "staleness-aware async-SGD"); off by default.
"""

from __future__ import annotations

import heapq
import math

import numpy as np
import torch

from edgeweave.train.decentral.stack import NodeStack
from edgeweave.train.decentral.timing import TimeModel
from edgeweave.train.decentral.trace import Recorder, RunConfig, Trace
from edgeweave.train.types import TrainError


class _SSP:
    def __init__(self, stack: NodeStack, config: RunConfig, time: TimeModel, staleness: float,
                 staleness_lr: bool) -> None:
        self.stack, self.config, self.time = stack, config, time
        self.s, self.staleness_lr = staleness, staleness_lr
        n = self.n = stack.n
        self.rec = Recorder(f"async-ssp{'' if math.isinf(staleness) else int(staleness)}",
                            stack, config, server=True)
        self.rng = np.random.default_rng([config.seed, 23])
        self.speeds = time.speeds(n)
        self.x = stack.init.clone()
        self.version = 0
        self.read = stack.replicate()
        self.read_version = np.zeros(n, dtype=np.int64)
        self.clock = np.zeros(n, dtype=np.int64)
        self.grad = torch.zeros(n, stack.dim)
        self.has_grad = np.zeros(n, dtype=bool)
        self.heap: list[tuple[float, int, int]] = []
        self.blocked: list[int] = []
        self.in_free = self.out_free = 0.0
        self.seq = 0
        self.taus: list[int] = []
        self.gaps: list[int] = []
        self.waits = 0

    def start(self, w: int, t: float) -> None:
        """Worker w pulls the current model at time t and starts a step."""
        m, tm = self.stack.model_bytes, self.time
        self.gaps.append(int(self.clock[w] - self.clock.min()))
        out_start = max(t, self.out_free)
        self.out_free = out_start + m / tm.server_Bps
        pulled = max(self.out_free, out_start + m / tm.link_Bps) + tm.latency_s
        self.rec.send(self.n, m)
        self.read[w] = self.x
        self.read_version[w] = self.version
        self.has_grad[w] = False
        step = float(tm.step_times(self.rng, self.speeds, np.array([w]))[0])
        arrive = pulled + step + tm.message_s(m)
        heapq.heappush(self.heap, (arrive, self.seq, w))
        self.seq += 1

    def compute_pending(self, w: int) -> None:
        """Worker w's gradient, and those of every worker still in flight without one."""
        todo = [w] + [u for _, _, u in self.heap if not self.has_grad[u]]
        idx = torch.tensor(sorted(todo), dtype=torch.long)
        g, _ = self.stack.grads(self.read[idx], idx)
        self.grad[idx] = g
        self.has_grad[idx.numpy()] = True

    def apply(self) -> float:
        arrive, _, w = heapq.heappop(self.heap)
        now = max(arrive, self.in_free) + self.stack.model_bytes / self.time.server_Bps
        self.in_free = now
        if not self.has_grad[w]:
            self.compute_pending(w)
        tau = self.version - int(self.read_version[w])
        lr = self.config.lr / max(1, tau) if self.staleness_lr else self.config.lr
        self.x -= lr * self.grad[w]
        self.version += 1
        self.taus.append(tau)
        self.rec.send(w, self.stack.model_bytes)
        self.clock[w] += 1
        low = int(self.clock.min())
        if self.clock[w] - low <= self.s:
            self.start(w, now)
        else:
            self.blocked.append(w)
            self.waits += 1
        ready = [u for u in self.blocked if self.clock[u] - low <= self.s]
        self.blocked = [u for u in self.blocked if self.clock[u] - low > self.s]
        for u in ready:
            self.start(u, now)
        return now

    def run(self) -> Trace:
        for w in range(self.n):
            self.start(w, 0.0)
        applied, r = 0, 0
        while r < self.config.rounds:
            now = self.apply()
            applied += 1
            if applied % self.n == 0:
                r += 1
                if self.rec.due(r):
                    self.rec.point(r, now, self.x, mean_staleness=float(np.mean(self.taus)),
                                   max_staleness=int(max(self.taus)))
        t = self.rec.trace
        t.extra.update(bound=None if math.isinf(self.s) else int(self.s),
                       max_clock_gap=int(max(self.gaps)), waits=self.waits,
                       mean_staleness=float(np.mean(self.taus)), max_staleness=int(max(self.taus)))
        return t


def ssp_sgd(stack: NodeStack, config: RunConfig, time: TimeModel, staleness: float = 4,
              staleness_lr: bool = False) -> tuple[Trace, list[int]]:
    """Run SSP asynchronous SGD; returns the trace and every gradient's staleness, in order."""
    if not staleness >= 0:
        raise TrainError(f"async sgd: the staleness bound must be >= 0, got {staleness}")
    sim = _SSP(stack, config, time, staleness, staleness_lr)
    return sim.run(), sim.taus
