"""Per-node latency on this host, measured by running the captured graph node by node.

Timing inside an fx Interpreter keeps each node's measurement in its real context (same input
shapes, same memory layout as in the model) instead of re-building layers in isolation. Medians
over repeats after warm-up, because a shared 2-core host has outliers that a mean would absorb.

Times are this thread's CPU time (`time.thread_time`), not wall time: on a shared host, wall
time also counts the moments other processes held the core, which is load, not the model's
cost. The runtime's time dilation stretches the same clock (`edgeweave.runtime.dilation`).

Each timed run starts after an idle gap (``idle_s``), because that is how a stage runs in
co-inference: its node has been waiting on the network or for the next request, and meanwhile
other work has had the core and the caches. Back to back, a program finds its weights and
buffers still cached and runs faster than any request will: on this host MobileNetV2's first
40% ran 12-23% slower after a gap of 20 ms or more than in a tight loop, which is the error the
co-inference benchmark saw on device stages before the profile measured this way.
"""

from __future__ import annotations

import statistics
import time
import warnings
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
_clock = time.thread_time


class _TimingInterpreter(fx.Interpreter):
    def __init__(self, module: fx.GraphModule):
        super().__init__(module)
        self.times: dict[str, float] = {}

    def run_node(self, n: fx.Node) -> Any:
        start = _clock()
        out = super().run_node(n)
        self.times[n.name] = (_clock() - start) * 1000.0
        return out


#: Idle time before each timed run (see the module docstring): longer than the 20 ms after
#: which the slowdown stopped growing in our measurements, shorter than most requests' gaps.
IDLE_S = 0.05


def measure_nodes(graph: Graph, warmup: int = 3, repeats: int = 10, seed: int = 0,
                  idle_s: float = 0.0) -> dict[str, float]:
    """Median latency (ms) of every node of `graph`, run in place inside the whole model."""
    return measure(graph, warmup, repeats, seed, idle_s)[0]


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


def measure(graph: Graph, warmup: int = 3, repeats: int = 10, seed: int = 0,
            idle_s: float = 0.0) -> tuple[dict[str, float], float]:
    """Per-node medians (ms) and this host's GFLOP/s on the reference convolution, timed in
    alternation with the model so both see the same load on a shared machine: tier latencies
    are scaled by their ratio, so it is the ratio that must be stable."""
    times, gflops, _ = measure_calibrated(graph, warmup, repeats, seed, whole=False,
                                          idle_s=idle_s)
    return times, gflops


def measure_calibrated(graph: Graph, warmup: int = 3, repeats: int = 10, seed: int = 0,
                       whole: bool = True, idle_s: float = IDLE_S
                       ) -> tuple[dict[str, float], float, float | None]:
    """As :func:`measure`, plus the median of the WHOLE model run as one traced TorchScript
    program (how the runtime executes a stage), timed in the same alternation. Node by node in
    an interpreter, every node also pays the interpreter's dispatch, and the sum of nodes
    over-states a compiled run by 0-30% (most on models of many small layers, MobileNet); the
    whole-model time lets the profile scale its node times to what really runs. None when the
    model cannot be traced. ``idle_s`` is the idle gap before each timed run of the model."""
    if idle_s < 0:
        raise ValueError(f"idle_s must be >= 0, got {idle_s}")
    with torch_threads(PROFILE_THREADS):
        return _measure(graph, warmup, repeats, seed, whole, idle_s)


def _traced(graph: Graph, x: torch.Tensor) -> Any:
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            return torch.jit.trace(graph.module.eval(), (x,), check_trace=False)
    except Exception:  # untraceable models keep their node times unscaled
        return None


def _measure(graph: Graph, warmup: int, repeats: int, seed: int, whole: bool, idle_s: float
             ) -> tuple[dict[str, float], float, float | None]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(graph.input_shape, generator=gen)
    program = _traced(graph, x) if whole else None
    if program is not None:
        with torch.inference_mode():
            for _ in range(2):  # TorchScript specialises on its first calls
                program(x)
    whole_ms: list[float] = []
    interp = _TimingInterpreter(graph.module)
    conv = nn.Conv2d(64, 64, 3, padding=1, bias=False).eval()
    ref_x = torch.randn(_REF_SHAPE, generator=gen)
    samples: dict[str, list[float]] = {n.name: [] for n in graph.nodes}
    ref: list[float] = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            gap = idle_s if i >= warmup else 0.0
            interp.times = {}
            time.sleep(gap)
            interp.run(x)
            if program is not None:
                time.sleep(gap)
                start = _clock()
                program(x)
                if i >= warmup:
                    whole_ms.append((_clock() - start) * 1000.0)
            start = _clock()
            conv(ref_x)
            ref_ms = (_clock() - start) * 1000.0
            if i >= warmup:
                ref.append(ref_ms)
                for name in samples:
                    samples[name].append(interp.times.get(name, 0.0))
    gflops = _REF_FLOPS / (statistics.median(ref) / 1000.0) / 1e9
    medians = {name: statistics.median(s) for name, s in samples.items()}
    return medians, gflops, statistics.median(whole_ms) if whole_ms else None
