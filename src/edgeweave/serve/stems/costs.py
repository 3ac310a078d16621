"""Compute cost per frame, measured on this host: the scheduler's and the allocator's prices.

Times are this thread's CPU time on one torch thread, medians after warm-up, as
:mod:`edgeweave.profile.measure` times layers (a shared 2-core host's load is not the model's
cost). A block is timed on a batch of frames and divided by the batch: the serving engine runs
batches, and at batch 1 an 8x8 model's cost would be Python's per-layer overhead, not its work.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from edgeweave.serve.stems.backbone import STEM_BLOCKS
from edgeweave.serve.stems.errors import TenancyError


@dataclass(frozen=True)
class StemCosts:
    """Milliseconds of compute per frame of each backbone block and of one tenant head."""

    block_ms: tuple[float, ...]
    head_ms: float

    def __post_init__(self) -> None:
        if len(self.block_ms) != STEM_BLOCKS or any(c < 0 for c in self.block_ms) or \
                self.head_ms < 0:
            raise TenancyError(f"stem costs: expected {STEM_BLOCKS} block costs and a head "
                               f"cost, all >= 0 ms, got {self.block_ms} and {self.head_ms}")

    def tail_ms(self, depth: int) -> float:
        """A tenant's own work per frame when it shares ``depth`` blocks: the rest and its head."""
        return sum(self.block_ms[depth:]) + self.head_ms

    def to_dict(self) -> dict[str, object]:
        return {"block_ms": list(self.block_ms), "head_ms": self.head_ms}


def _median_ms(run: object, warmup: int, repeats: int) -> float:
    assert callable(run)
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        run()
        times.append((time.thread_time() - start) * 1000.0)
    return statistics.median(times)


def ms_per_frame(module: nn.Module, frames: torch.Tensor, warmup: int = 2,
                 repeats: int = 7) -> float:
    """Median CPU milliseconds per frame of ``module`` on the batch ``frames``."""
    # deferred: the profile package costs a node ~60 MB, and nodes import this package only to
    # build a served stem (spec.py), never to time one
    from edgeweave.profile.measure import PROFILE_THREADS, torch_threads

    module.eval()
    with torch_threads(PROFILE_THREADS), torch.inference_mode():
        return _median_ms(lambda: module(frames), warmup, repeats) / len(frames)


def measure_stem_costs(blocks: Sequence[nn.Module], head: nn.Module, frames: torch.Tensor,
                       warmup: int = 2, repeats: int = 7) -> StemCosts:
    """Each block timed on its real input (the previous block's output on ``frames``)."""
    costs = []
    h = frames
    with torch.inference_mode():
        for block in blocks:
            costs.append(ms_per_frame(block, h, warmup, repeats))
            h = block.eval()(h)
    return StemCosts(tuple(costs), ms_per_frame(head, h, warmup, repeats))
