"""Per-node latency on this host, measured by running the captured graph node by node.

Timing inside an fx Interpreter keeps each node's measurement in its real context (same input
shapes, same memory layout as in the model) instead of re-building layers in isolation. Medians
over repeats after warm-up, because a shared 2-core host has outliers that a mean would absorb.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import fx, nn

from edgeweave.graph import Graph

#: The reference layer whose speed defines "GFLOP/s" on every tier: a dense 3x3 convolution,
#: 64 -> 64 channels on 56x56 (ResNet's second stage), the workload hardware profiles quote.
_REF_SHAPE = (1, 64, 56, 56)
_REF_FLOPS = 2 * 56 * 56 * 64 * 64 * 9
PROFILE_THREADS = 1


class _TimingInterpreter(fx.Interpreter):
    def __init__(self, module: fx.GraphModule):
        super().__init__(module)
        self.times: dict[str, float] = {}

    def run_node(self, n: fx.Node) -> Any:
        start = time.perf_counter()
        out = super().run_node(n)
        self.times[n.name] = (time.perf_counter() - start) * 1000.0
        return out


def measure_nodes(graph: Graph, warmup: int = 3, repeats: int = 10, seed: int = 0
                  ) -> dict[str, float]:
    """Median latency (ms) of every node of `graph`, run in place inside the whole model."""
    return measure(graph, warmup, repeats, seed)[0]


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with `n` intra-op threads. Profiling uses one: on a shared 2-core host an OpenMP
    barrier waits a whole scheduler slice for a descheduled worker, which quantises every
    layer's time to ~8 ms steps; one thread measures the work, not the scheduler."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def measure(graph: Graph, warmup: int = 3, repeats: int = 10, seed: int = 0
            ) -> tuple[dict[str, float], float]:
    """Per-node medians (ms) and this host's GFLOP/s on the reference convolution, timed in
    alternation with the model so both see the same load on a shared machine: tier latencies
    are scaled by their ratio, so it is the ratio that must be stable."""
    with torch_threads(PROFILE_THREADS):
        return _measure(graph, warmup, repeats, seed)


def _measure(graph: Graph, warmup: int, repeats: int, seed: int
             ) -> tuple[dict[str, float], float]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(graph.input_shape, generator=gen)
    interp = _TimingInterpreter(graph.module)
    conv = nn.Conv2d(64, 64, 3, padding=1, bias=False).eval()
    ref_x = torch.randn(_REF_SHAPE, generator=gen)
    samples: dict[str, list[float]] = {n.name: [] for n in graph.nodes}
    ref: list[float] = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            interp.times = {}
            interp.run(x)
            start = time.perf_counter()
            conv(ref_x)
            ref_ms = (time.perf_counter() - start) * 1000.0
            if i >= warmup:
                ref.append(ref_ms)
                for name in samples:
                    samples[name].append(interp.times.get(name, 0.0))
    gflops = _REF_FLOPS / (statistics.median(ref) / 1000.0) / 1e9
    return {name: statistics.median(s) for name, s in samples.items()}, gflops
