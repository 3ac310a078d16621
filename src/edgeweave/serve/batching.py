"""Running requests of one model as a batch: stacked along dim 0, the outputs split back.

Every request holds batch-1 tensors (the node checks each request's declared shapes against the
model's before decoding), so a batch is the requests' tensors concatenated along dim 0 without
padding, and row `i` of every output is request `i`'s answer. Only requests whose tensors have
the same shapes and dtypes are stacked together (`compatible`).

Whether a model can batch at all is measured when it is deployed (`calibrate`): its values must
have batch dim 1 and its batched outputs must match its batch-1 outputs row by row (a model
that reshapes with a hard-coded batch would not); one that cannot serves batches of 1.

How the model is run for a batch (measured on this host with ResNet-18 and MobileNetV2, one
thread, `benchmarks/serving.py --runners`): the node's traced program (traced at batch 1) runs
any batch size with the same results; a program traced per batch size was not faster, and
tracing one at a new size takes about a second, which would stall the requests in that batch.
So the node's one traced program runs every batch.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Inputs = tuple[torch.Tensor, ...]
#: A model as the engine runs it: a batch of stacked inputs -> its outputs, in order.
ModelFn = Callable[..., Sequence[torch.Tensor]]
#: Times one call: its seconds on the hardware the model is served on, in this host's seconds.
SecondsOf = Callable[[Callable[[], object]], float]


def signature(inputs: Inputs) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """What must agree for two requests to share a batch."""
    return tuple((str(t.dtype), tuple(t.shape)) for t in inputs)


def stack(items: Sequence[Inputs]) -> Inputs:
    """The batch: each input position concatenated along dim 0 (a single request is passed
    through untouched)."""
    if len(items) == 1:
        return items[0]
    return tuple(torch.cat(column, dim=0) for column in zip(*items, strict=True))


def unstack(outputs: Sequence[torch.Tensor], sizes: Sequence[int]) -> list[Inputs]:
    """Each request's rows of every output, in request order (`sizes`: rows per request)."""
    total = sum(sizes)
    for k, out in enumerate(outputs):
        if out.dim() == 0 or out.shape[0] != total:
            raise ValueError(f"output {k} has shape {list(out.shape)}; a batch of {total} "
                             f"needs {total} rows along dim 0")
    if len(sizes) == 1:
        return [tuple(outputs)]
    per_output = [out.split(list(sizes), dim=0) for out in outputs]
    return [tuple(parts[i] for parts in per_output) for i in range(len(sizes))]


@dataclass
class Calibration:
    """What deploying measured: whether the model batches, and seconds per batch size."""

    batchable: bool
    seconds: dict[int, float]
    why: str = ""


def batch_dims_ok(shapes: Sequence[Sequence[int]]) -> bool:
    """Whether every value (input or output) has batch dim 1, the dim requests stack along."""
    return all(len(s) >= 1 and s[0] == 1 for s in shapes)


#: what `calibrate(every_size=True)` may spend on the sizes between 2 and the largest
EVERY_SIZE_BUDGET_S = 1.0


def calibrate(fn: ModelFn, example: Inputs, max_batch: int, repeats: int = 3,
              atol: float = 1e-4, every_size: bool = False,
              budget_s: float = EVERY_SIZE_BUDGET_S,
              seconds_of: SecondsOf | None = None) -> Calibration:
    """Time `fn` at batch 1 and at `max_batch` (after a warm-up call each: a traced program
    specialises on its first calls) and check that a batch of distinct requests gives each the
    answer it gets alone. `every_size`: time batch 2 too (a batch of one can take a faster
    path than any larger one, so a line through 1 and `max_batch` is wrong in between) and
    every size between, as long as those take at most `budget_s` by the line through 2 and
    `max_batch`: a small model gets every size measured, a large one (ResNet-18: a third of
    a second per batch of 8) the line, which is what its sizes follow (`serve.latency`
    plans deadlines with whichever sizes were measured). `seconds_of` times one call (default:
    the wall clock): a node emulating slower hardware times a call as its runs take
    (`runtime.dilation.emulated_ms`)."""
    timed = functools.partial(_timed, seconds_of=seconds_of or wall_seconds)
    rows = [_varied(example, k) for k in range(max(1, max_batch))]
    seconds = {1: timed(fn, rows[0], repeats)}
    if max_batch <= 1:
        return Calibration(False, seconds, "max batch 1")
    try:
        batched = unstack(list(fn(*stack(rows))), [1] * len(rows))
    except (RuntimeError, ValueError) as e:
        return Calibration(False, seconds, f"does not run batched: {str(e).splitlines()[0]}")
    for k in (0, len(rows) - 1):
        alone = fn(*rows[k])
        if not all(torch.allclose(a, b, atol=atol, rtol=1e-3)
                   for a, b in zip(alone, batched[k], strict=True)):
            return Calibration(False, seconds, "batched outputs differ from batch-1 outputs")
    seconds[max_batch] = timed(fn, stack(rows), repeats)
    if every_size and max_batch > 2:
        seconds[2] = timed(fn, stack(rows[:2]), repeats)
        slope = (seconds[max_batch] - seconds[2]) / (max_batch - 2)
        spent = 0.0
        for size in range(3, max_batch):
            spent += (repeats + 1) * max(0.0, seconds[2] + slope * (size - 2))
            if spent > budget_s:
                break
            seconds[size] = timed(fn, stack(rows[:size]), repeats)
    return Calibration(True, seconds)


def _varied(example: Inputs, k: int) -> Inputs:
    """A distinct request: random floats (seeded by `k`), the example's values otherwise."""
    gen = torch.Generator().manual_seed(k)
    return tuple(torch.randn(t.shape, generator=gen, dtype=t.dtype)
                 if t.is_floating_point() else t.clone() for t in example)


def wall_seconds(call: Callable[[], object]) -> float:
    """Wall-clock seconds `call` takes."""
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _timed(fn: ModelFn, args: Inputs, repeats: int, seconds_of: SecondsOf) -> float:
    """The median of `repeats` timed calls: on a shared host one call in a few stalls for 5 to
    30 times its time (measured: the digits tenants, 0.45 ms a batch, 2-4 ms in 12 of 64
    calls), and a mean of two then set a size's estimate several times too high."""
    times = []
    with torch.inference_mode():
        fn(*args)  # warm-up
        for _ in range(repeats):
            times.append(seconds_of(lambda: fn(*args)))
    return statistics.median(times)
