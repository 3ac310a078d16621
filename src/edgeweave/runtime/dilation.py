"""Time dilation: emulate hardware slower than this host by stretching measured compute.

The stretch is a busy wait, not a sleep: a real slow device is computing the whole time, and
an idle core lets caches go cold and the clock drop, which made the next request's compute
~15% slower in our measurements (alexnet, one thread) and the emulation pessimistic.
"""

from __future__ import annotations

import time


def stretch(measured_ms: float, factor: float) -> float:
    """Hold the core for (factor - 1) x `measured_ms` more; returns the emulated duration."""
    if factor <= 1.0:
        return measured_ms
    deadline = time.perf_counter() + measured_ms * (factor - 1.0) / 1000.0
    while time.perf_counter() < deadline:
        pass
    return measured_ms * factor
