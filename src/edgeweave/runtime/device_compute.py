"""A stage run on the emulated device: traced, as edge and cloud run theirs and the profiler
times them, so every tier executes (and is predicted) the same way; on the profiler's thread
count; its compute stretched by time dilation (`runtime.dilation`) to the device's speed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from edgeweave.graph import Stage
from edgeweave.profile.measure import PROFILE_THREADS, torch_threads
from edgeweave.runtime import dilation
from edgeweave.runtime.recipe import StageError, trace_stage


def device_module(stage: Stage, args: Sequence[Any]) -> Any:
    """``stage`` traced on ``args`` and warmed up (TorchScript specialises on its first calls);
    a stage that cannot be traced runs as it is."""
    try:
        if not all(isinstance(a, torch.Tensor) for a in args):
            raise StageError("non-tensor stage input")
        module = trace_stage(stage.module, args)
        with torch.inference_mode():
            for _ in range(2):
                module(*args)
        return module
    except StageError:
        return stage.module


def run_on_device(module: Any, args: Sequence[Any], factor: float, spin: bool = True
                  ) -> tuple[Any, float]:
    """``module(*args)`` and its emulated milliseconds on a device ``factor`` times slower.
    A dilated device is emulated relative to the profiler's thread count and on this thread's
    CPU clock, so it computes on exactly that many threads; ``spin``: the stretch busy-waits
    (else it sleeps: runtime.dilation says when)."""
    threads = PROFILE_THREADS if factor > 1 else torch.get_num_threads()
    with torch_threads(threads), torch.inference_mode():
        mark = dilation.start()
        out = module(*args)
        return out, dilation.finish(mark, factor, spin=spin)
