"""Time dilation: emulate hardware slower than this host by stretching measured compute.

The emulated device takes `factor` x the CPU time this host's thread spent on the work. CPU time,
not wall time: the emulated device is a dedicated machine, so time this shared host spends
running OTHER processes while our thread waits for a core is not the device's time. Counting
it (wall x factor) multiplied every scheduling hiccup by the factor (~10 for a Raspberry Pi on
this host) and was the largest source of predicted-vs-measured error. The profiler measures on
the same clock (`edgeweave.profile.measure`), so prediction and emulation agree.

The stretch is a busy wait, not a sleep: a real slow device is computing the whole time, and
an idle core lets caches go cold and the clock drop, which made the next request's compute
~15% slower in our measurements (alexnet, one thread) and the emulation pessimistic. Except
where several emulated devices share this host's few cores (a cluster's workers): there a
spinning device would take the core another device computes on, so they sleep instead
(``spin=False``). And except in a serving node (`runtime.serving`): its workers share the
process with its RPC handlers, and a busy wait in Python holds the GIL, so the handlers got it
only once per switch interval (5 ms) while a batch was being stretched, and the emulated
hardware's spare time went to the host's cores, not to serving (measured: digits-cnn at x10,
two workers on 2 cores, 800 requests/s offered: goodput 22/s with spinning workers, 808/s
sleeping).

A cluster device's decoding and encoding of the tensors it exchanges are its CPU's work too,
so they are dilated by its factor (the worker's, the layer-wise gateway's packing and decoding,
the fused-tile gateway's decoding of results): a compressing codec (``fp16+zstd``) costs the
emulated device what it saves the medium only in part. The factor is the device's on DNN
compute; byte work such as zstd gains less from this host's wide vector units than a
convolution does, so the factor likely overstates a Pi's slowness at it (an estimate, not
measured on a Pi): this errs on the slow side. Not dilated: the
fused-tile gateway's encoding of a crop, done while it holds the scheduler's lock (stretching
it there would stall every other device's results).
"""

from __future__ import annotations

import math
import time

from edgeweave.runtime.shaper import sleep_until

Mark = tuple[float, float]


def start() -> Mark:
    """Wall and thread-CPU clocks at the start of the work to dilate."""
    return time.perf_counter(), time.thread_time()


def elapsed_ms(mark: Mark) -> tuple[float, float]:
    """Wall and thread-CPU ms since ``mark``."""
    wall0, cpu0 = mark
    return (time.perf_counter() - wall0) * 1000.0, (time.thread_time() - cpu0) * 1000.0


def finish(mark: Mark, factor: float, until: float = math.inf, spin: bool = True) -> float:
    """Hold the core until `factor` x the thread's CPU time since `mark` has passed on the wall
    clock, but not past `until` (a `time.perf_counter` instant: the request's deadline, after
    which nobody waits for the result); returns the emulated duration in ms. Factor <= 1 means
    "this host's speed": the wall time is returned unchanged (nothing can make the host
    faster)."""
    ms = emulated_ms(mark, factor)
    if factor <= 1.0:
        return ms
    deadline = min(mark[0] + ms / 1000.0, until)
    if not spin:
        sleep_until(deadline, clock=time.perf_counter)
    while time.perf_counter() < deadline:
        pass
    return ms


def emulated_ms(mark: Mark, factor: float) -> float:
    """The ms the work since `mark` takes on the emulated hardware, what `finish` holds the
    core (or sleeps) until: `factor` x the thread's CPU time, or the wall time if that is
    longer (the host is not made faster); the wall time at factor <= 1. What a dilated node
    times its batches on when it calibrates them (`runtime.serving`), so that its estimates
    are of the time the dilated batches then take: timed on the wall clock and multiplied,
    a calibration call the shared host kept waiting for a core was priced `factor` times
    that wait (digits tenants at x30: 2 ms of waiting, 60 ms added to a batch's estimate)."""
    wall_ms, cpu_ms = elapsed_ms(mark)
    return wall_ms if factor <= 1.0 else max(wall_ms, cpu_ms * factor)
