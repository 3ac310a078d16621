"""GPipe: micro-batch pipeline parallelism over 2-4 stages (Huang et al. 2019, "GPipe: efficient
training of giant neural networks using pipeline parallelism").

An ``nn.Sequential`` is cut into S contiguous stages, balanced by parameter count or by measured
time (the linear-partition problem, solved exactly by dynamic programming: minimise the most
expensive stage). Each mini-batch of B samples is split into M micro-batches. Every stage runs in
its own thread, connected to its neighbours by queues: forwards fill the pipeline (stage s works
on micro-batch m while stage s+1 works on m-1), then the backwards drain it in reverse order.
Gradients accumulate over the micro-batches and each stage takes ONE synchronous SGD step per
mini-batch, so the result is the same model that plain single-process training of the same
batches produces (up to float summation order): the loss of micro-batch m is its summed
cross-entropy divided by B, and the sum over micro-batches is the mini-batch mean.

The bubble: with equal stage times each stage idles for S-1 of the M+S-1 slots of a fill and of
a drain, so the idle fraction is (S-1)/(M+S-1); more micro-batches shrink it. We report it
measured from per-operation timestamps (wall clock, threads sharing this host's cores) and
replayed from the measured operation times as if each stage had its own device.

Memory: each stage holds only its own parameters, their gradients and the activations autograd
saves for its micro-batches (counted exactly with saved-tensor hooks; without GPipe's optional
re-materialisation all M micro-batches' activations are held at the fill/drain turn). A
``memory_cap_bytes`` models "a model too big for one device": a stage that needs more raises
TrainError, and :func:`stage_memory` shows the whole model exceeding a cap each stage fits.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edgeweave.train.types import TrainError

_STOP = object()


def balanced_bounds(costs: Sequence[float], stages: int) -> list[int]:
    """Start index of each of ``stages`` contiguous, non-empty groups of ``costs`` minimising
    the largest group sum (exact DP, O(S n^2); n is a layer count, so this is instant)."""
    n = len(costs)
    if not 1 <= stages <= n:
        raise TrainError(f"pipeline: cannot cut {n} layers into {stages} non-empty stages")
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + float(c))
    inf = float("inf")
    # best[s][i]: minimal max-stage cost of the first i layers in s stages
    best = [[inf] * (n + 1) for _ in range(stages + 1)]
    cut = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0.0
    for s in range(1, stages + 1):
        for i in range(s, n + 1):
            for j in range(s - 1, i):
                v = max(best[s - 1][j], prefix[i] - prefix[j])
                if v < best[s][i]:
                    best[s][i], cut[s][i] = v, j
    bounds, i = [], n
    for s in range(stages, 0, -1):
        i = cut[s][i]
        bounds.append(i)
    return bounds[::-1]


def layer_costs(model: nn.Sequential, by: str = "params",
                sample: torch.Tensor | None = None, repeats: int = 3) -> list[float]:
    """Per-layer cost: parameter count (+1 so parameter-free layers still weigh something), or
    measured forward+backward seconds on ``sample`` (median of ``repeats``)."""
    if by == "params":
        return [1.0 + sum(p.numel() for p in m.parameters()) for m in model]
    if by != "time":
        raise TrainError(f"pipeline: balance by {by!r} is unknown; expected 'params' or 'time'")
    if sample is None:
        raise TrainError("pipeline: balancing by time needs a sample micro-batch")
    costs, x = [], sample
    for m in model:
        times = []
        for _ in range(repeats):
            inp = x.detach().requires_grad_(x.is_floating_point())
            t0 = time.perf_counter()
            out = m(inp)
            if out.requires_grad:
                out.backward(torch.ones_like(out))
            times.append(time.perf_counter() - t0)
        costs.append(sorted(times)[len(times) // 2])
        x = out.detach()
    return costs


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


@dataclass
class StageMemory:
    """Bytes one stage holds: parameters, their gradients, and the peak saved activations."""

    stage: int
    layers: tuple[int, int]
    param_bytes: int
    grad_bytes: int
    activation_bytes: int

    @property
    def total(self) -> int:
        return self.param_bytes + self.grad_bytes + self.activation_bytes


@dataclass
class StepStats:
    """Timeline of one mini-batch: ``events`` are (stage, "F"|"B", micro-batch, start, end)."""

    loss: float
    makespan_s: float
    busy_s: list[float]
    events: list[tuple[int, str, int, float, float]] = field(default_factory=list)

    @property
    def bubble(self) -> float:
        """Measured idle fraction: 1 - sum(busy) / (S * makespan)."""
        s = len(self.busy_s)
        return 1.0 - sum(self.busy_s) / (s * self.makespan_s) if self.makespan_s > 0 else 0.0


def theoretical_bubble(stages: int, micro_batches: int) -> float:
    return (stages - 1) / (micro_batches + stages - 1)


def replay_bubble(events: Sequence[tuple[int, str, int, float, float]], stages: int,
                  micro_batches: int) -> float:
    """Idle fraction of the GPipe schedule replayed with these operation durations, each stage
    on its own device (what a host with S free cores or S accelerators would see)."""
    dur = {(s, k, m): end - start for s, k, m, start, end in events}
    fin: dict[tuple[int, str, int], float] = {}
    free = [0.0] * stages
    for m in range(micro_batches):  # forward fill
        for s in range(stages):
            ready = max(free[s], fin.get((s - 1, "F", m), 0.0))
            fin[(s, "F", m)] = free[s] = ready + dur[(s, "F", m)]
    for m in reversed(range(micro_batches)):  # backward drain
        for s in reversed(range(stages)):
            # the last stage starts draining once its fill is over; the others wait for the
            # gradient from the stage after them
            dep = fin[(s + 1, "B", m)] if s < stages - 1 else fin[(s, "F", micro_batches - 1)]
            ready = max(free[s], dep)
            fin[(s, "B", m)] = free[s] = ready + dur[(s, "B", m)]
    makespan = max(free)
    busy = sum(dur.values())
    return 1.0 - busy / (stages * makespan) if makespan > 0 else 0.0


class _Stage(threading.Thread):
    def __init__(self, index: int, module: nn.Module, pipe: GPipe) -> None:
        super().__init__(name=f"gpipe-stage-{index}", daemon=True)
        self.index, self.module, self.pipe = index, module, pipe
        self.fwd: queue.Queue[Any] = queue.Queue()
        self.bwd: queue.Queue[Any] = queue.Queue()
        self.params = list(module.parameters())
        self._param_ptrs = {p.data_ptr() for p in self.params}
        self.peak_activation_bytes = 0
        # torch's intra-op thread count is per OS thread: inherit the constructing thread's
        self.threads = torch.get_num_threads()

    def run(self) -> None:
        torch.set_num_threads(self.threads)
        while True:
            job = self.fwd.get()
            if job is _STOP:
                return
            try:
                self.pipe.done.put((self.index, self._step(job)))
            except BaseException as e:  # reported to the caller, which stops the pipeline
                self.pipe.done.put((self.index, e))
                if self.pipe._closed:  # stopped mid-batch: the STOP meant for us is used up
                    return

    def _get(self, q: queue.Queue[Any]) -> Any:
        item = q.get()
        if item is _STOP:
            raise TrainError(f"pipeline: stage {self.index} stopped mid-batch")
        return item

    def _step(self, first: tuple[torch.Tensor, list[torch.Tensor], int]) -> dict[str, Any]:
        pipe, s = self.pipe, self.index
        last = s == pipe.num_stages - 1
        _, labels, batch = first
        events, saved = [], [0]
        stash: list[tuple[torch.Tensor, torch.Tensor] | None] = []
        seen: set[int] = set()

        def pack(t: torch.Tensor) -> torch.Tensor:
            ptr = t.data_ptr()
            if ptr not in self._param_ptrs and ptr not in seen:
                seen.add(ptr)
                saved[0] += _nbytes(t)
            return t

        job = first
        for m in range(pipe.micro_batches):
            if m:
                job = self._get(self.fwd)
            x = job[0]
            inp = x.detach().requires_grad_(s > 0)
            t0 = time.perf_counter()
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                out = self.module(inp)
                if last:
                    out = nn.functional.cross_entropy(out, labels[m], reduction="sum") / batch
            events.append((s, "F", m, t0, time.perf_counter()))
            stash.append((inp, out))
            if not last:
                pipe.stages[s + 1].fwd.put((out.detach(), labels, batch))
        self.peak_activation_bytes = max(self.peak_activation_bytes, saved[0])
        loss = 0.0
        for m in reversed(range(pipe.micro_batches)):
            entry = stash[m]
            assert entry is not None  # each micro-batch goes backward once
            inp, out = entry
            g = None if last else self._get(self.bwd)
            t0 = time.perf_counter()
            if last:
                out.backward()
                loss += float(out.detach())
            else:
                out.backward(g)
            events.append((s, "B", m, t0, time.perf_counter()))
            stash[m] = None
            if s > 0:
                pipe.stages[s - 1].bwd.put(inp.grad)
        with torch.no_grad():  # one synchronous SGD step per mini-batch
            for p in self.params:
                if p.grad is not None:
                    p.sub_(pipe.lr * p.grad)
                    p.grad = None
        return {"events": events, "loss": loss}


class GPipe:
    """Train an ``nn.Sequential`` as an S-stage, M-micro-batch GPipe pipeline with SGD.

    Args:
        model: the model; its modules are shared (trained in place), not copied.
        stages: the number of stages (balanced by ``by``) or explicit start indices.
        micro_batches: M; every mini-batch must have at least M samples.
        lr: SGD learning rate.
        by: "params" or "time" (then ``sample`` is a representative micro-batch).
        memory_cap_bytes: the memory of one device; a stage needing more raises TrainError.
    """

    def __init__(self, model: nn.Sequential, stages: int | Sequence[int], micro_batches: int,
                 lr: float, *, by: str = "params", sample: torch.Tensor | None = None,
                 memory_cap_bytes: int | None = None) -> None:
        if not isinstance(model, nn.Sequential):
            raise TrainError(f"pipeline: model is a {type(model).__name__}, expected an "
                             "nn.Sequential")
        if micro_batches < 1 or lr <= 0:
            raise TrainError(f"pipeline: need micro_batches >= 1 and lr > 0, got "
                             f"{micro_batches}, {lr}")
        if isinstance(stages, int):
            bounds = balanced_bounds(layer_costs(model, by, sample), stages)
        else:
            bounds = list(stages)
            if not bounds or bounds[0] != 0 or sorted(set(bounds)) != bounds or \
                    bounds[-1] >= len(model):
                raise TrainError(f"pipeline: stage starts {bounds} must be increasing from 0 "
                                 f"and below {len(model)}")
        self.model, self.bounds = model, bounds
        self.micro_batches, self.lr = micro_batches, lr
        self.memory_cap_bytes = memory_cap_bytes
        ends = [*bounds[1:], len(model)]
        self.stages = [_Stage(i, model[a:b], self) for i, (a, b) in enumerate(zip(bounds, ends,
                                                                                   strict=True))]
        self.done: queue.Queue[tuple[int, Any]] = queue.Queue()
        self._closed = False
        if memory_cap_bytes is not None:
            self._check_cap(self.memory())
        for st in self.stages:
            st.start()

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def memory(self) -> list[StageMemory]:
        out = []
        ends = [*self.bounds[1:], len(self.model)]
        for st, a, b in zip(self.stages, self.bounds, ends, strict=True):
            pb = sum(_nbytes(p) for p in st.params)
            out.append(StageMemory(st.index, (a, b), pb, pb, st.peak_activation_bytes))
        return out

    def _check_cap(self, mem: list[StageMemory]) -> None:
        cap = self.memory_cap_bytes
        for m in mem:
            if cap is not None and m.total > cap:
                raise TrainError(f"pipeline: stage {m.stage} (layers {m.layers[0]}..{m.layers[1]}"
                                 f") needs {m.total} bytes (params {m.param_bytes}, grads "
                                 f"{m.grad_bytes}, activations {m.activation_bytes}), over the "
                                 f"{cap}-byte cap of one device; use more stages or fewer "
                                 "micro-batches in flight")

    def step(self, x: torch.Tensor, y: torch.Tensor) -> StepStats:
        """One mini-batch: fill, drain, one SGD step per stage; returns its timeline."""
        if self._closed:
            raise TrainError("pipeline: closed (a stage failed or close() was called)")
        if len(x) < self.micro_batches or len(x) != len(y):
            raise TrainError(f"pipeline: a mini-batch of {len(x)} samples (labels {len(y)}) "
                             f"cannot be split into {self.micro_batches} micro-batches")
        xs, ys = torch.tensor_split(x, self.micro_batches), list(torch.tensor_split(y,
                                                                             self.micro_batches))
        t0 = time.perf_counter()
        first = self.stages[0].fwd
        for xm in xs:
            first.put((xm, ys, len(x)))
        results: dict[int, Any] = {}
        while len(results) < self.num_stages:
            i, res = self.done.get()
            if isinstance(res, BaseException):
                self.close()
                if isinstance(res, TrainError):
                    raise res
                raise TrainError(f"pipeline: stage {i} failed: {type(res).__name__}: {res}") \
                    from res
            results[i] = res
        events = [e for i in sorted(results) for e in results[i]["events"]]
        busy = [sum(e[4] - e[3] for e in results[i]["events"]) for i in sorted(results)]
        start = min(min(e[3] for e in events), t0)
        makespan = max(e[4] for e in events) - start
        if self.memory_cap_bytes is not None:
            try:
                self._check_cap(self.memory())
            except TrainError:
                self.close()
                raise
        return StepStats(results[self.num_stages - 1]["loss"], makespan, busy,
                         [(s, k, m, a - start, b - start) for s, k, m, a, b in events])

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for st in self.stages:
            st.fwd.put(_STOP)
            st.bwd.put(_STOP)
        for st in self.stages:
            st.join(timeout=5)

    def __enter__(self) -> GPipe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stage_memory(model: nn.Sequential, stages: int | Sequence[int], micro_batches: int,
                 x: torch.Tensor, y: torch.Tensor, by: str = "params") -> list[StageMemory]:
    """Per-stage memory of one GPipe step on (x, y), measured on a throwaway copy of the model
    (the caller's weights are not changed)."""
    import copy

    with GPipe(copy.deepcopy(model), stages, micro_batches, lr=1e-9, by=by,
               sample=x[: max(1, len(x) // micro_batches)]) as pipe:
        pipe.step(x, y)
        return pipe.memory()
