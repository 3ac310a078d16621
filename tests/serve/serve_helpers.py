"""Served models for the scheduler and engine tests: a known latency, a trivial runner."""

from __future__ import annotations

import threading
import time

import torch

from edgeweave.serve.config import NodeServing, ServingConfig, resolve
from edgeweave.serve.latency import LatencyModel
from edgeweave.serve.pending import Pending
from edgeweave.serve.queues import ServedModel
from edgeweave.serve.scheduler import Scheduler


def model(key, scheduler, seconds_per_item=0.01, overhead=0.0, **knobs):
    """A ServedModel whose latency model knows batches take overhead + n * seconds_per_item."""
    lat = LatencyModel()
    for n in (1, 8):
        lat.seed(n, overhead + n * seconds_per_item)
    cfg = resolve(ServingConfig(**knobs), NodeServing(max_batch=8, max_queue=64))
    m = ServedModel(key, key, lambda inputs, until: list(inputs), cfg, lat, scheduler.order)
    m.reconfigure(cfg)
    return m


def item(key, deadline, arrival=0.0, priority=0):
    return Pending(key, (torch.zeros(1, 1),), deadline, priority, arrival)


class Doubler:
    """A model answering 2x, each call taking `per_item` s per request (plus `fixed`); it
    records the batch sizes it ran and may fail on inputs holding NaN."""

    def __init__(self, per_item=0.0, fixed=0.0):
        self.per_item, self.fixed = per_item, fixed
        self.sizes: list[int] = []
        self.ended: dict[float, float] = {}  # an input's first value -> when its batch ended
        self.lock = threading.Lock()

    def __call__(self, inputs, until):
        with self.lock:
            self.sizes.append(len(inputs))
        time.sleep(self.fixed + self.per_item * len(inputs))
        with self.lock:
            self.ended.update((float(x[0].flatten()[0]), time.monotonic()) for x in inputs)
        batch = torch.cat([x[0] for x in inputs])
        if torch.isnan(batch).any():
            raise RuntimeError("NaN in the input")
        out = batch * 2
        return [(out[i:i + 1],) for i in range(len(inputs))]


def scheduler(policy="edf"):
    return Scheduler(policy)


class PidTarget:
    """A load generator target that refuses every request at once with its process id as the
    status (a sender process's, to see which one sent what)."""

    def send(self, model, client, deadline_s, priority, done):
        import os

        from edgeweave.serve.loadgen import REFUSED, Outcome

        done(Outcome(REFUSED, str(os.getpid())))
