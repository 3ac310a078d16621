"""What a cluster worker needs to emulate its device on a shared host: one computing device at a
time, the tasks the host could not emulate faithfully, and the process's memory.

**One device computes at a time** (:class:`HostLock`). A worker stretches a task's thread-CPU
time by its device's dilation, so the emulated device is only as steady as that CPU time. Run
side by side on this 2-core host, the workers' vgg16 tiles (38 MB of weights and multi-MB
feature maps streamed per tile) took 15-49% more CPU time than the same tiles profiled alone,
and more the more workers computed at once (one device: +3%; two: +15 to +47%; the plan's
schedule replayed with the measured compute matched the measured latency within 3%, so the
difference was the emulated hardware, not the model). Real devices do not share caches or a
memory bus. So the workers of one lab take a host-wide file lock around the compute itself:
the clock starts before the lock is taken, so a wait for another device's burst is absorbed
in the stretch (a device needs only 1/dilation of a core: two rpi4 and an rpi3 about 0.3 of
one), and a wait longer than the stretch is counted as an overrun like a wait for a core.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path

from edgeweave.runtime import dilation


class HostLock:
    """A lock every worker of one lab shares (a file they all open); no path: no lock."""

    def __init__(self, path: str | None):
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600) if path else None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        if self._fd is None:
            yield
            return
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)


def note_host(stats: dict[str, float], mark: dilation.Mark, factor: float) -> None:
    """Count a task this host could not emulate faithfully: its compute waited so long for a
    core (or the host lock) that the wall time already passed the dilated target, so the
    device ran slower than its hardware (``overrun_tasks``; ``core_wait_ms``: wall minus CPU
    time, what the host's other processes and devices took from the worker while it
    computed)."""
    wall_ms, cpu_ms = dilation.elapsed_ms(mark)
    stats["core_wait_ms"] += max(0.0, wall_ms - cpu_ms)
    if factor > 1.0 and wall_ms > cpu_ms * factor:
        stats["overrun_tasks"] += 1


def rss_mb(key: str) -> float:
    """This process's ``VmRSS`` or ``VmHWM`` (peak) in MiB; NaN where /proc is missing."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return float("nan")
    match = re.search(rf"{key}:\s+(\d+) kB", text)
    return int(match.group(1)) / 1024 if match else float("nan")


def reset_peak() -> None:
    """Start the kernel's peak-RSS counter afresh (Linux; elsewhere the peak keeps counting)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
