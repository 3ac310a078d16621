"""Keep freed tensor memory in the process instead of handing it back to the OS page by page.

glibc's malloc serves large blocks (a feature map of a few MB) with mmap, or trims the heap's
top back to the OS once enough of it is free, then faults the pages in again on the next
frame. The kernel's time for those faults counts as the thread's CPU time, so on an emulated
device (runtime.dilation) it is multiplied by the dilation (x10 for a Raspberry Pi 4 here). A
model's layers allocate their outputs in a changing order of sizes, which defeats glibc's
adaptive thresholds: measured on this host with one thread, mobilenet_v2's first 30 layers run
as one fused tile took 16-25 ms by default and 10.8-12.1 ms with the heap kept; the same layers
through torch.fx 9-15 ms and 8.4-9.3 ms; vgg16's first 10 layers 229 and 204 ms. The profiler
measures each layer alone, where glibc's thresholds do adapt, so the profile already saw the
faster allocator: keeping the heap makes the runtime agree with it (the calibration had priced
mobilenet_v2's tiles at 1.9x their profile).

Both thresholds are set: setting either one turns glibc's adaptation off for the other, and
each alone was slower than the default (53 and 30 ms for the same tile).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: blocks up to this size come from the heap (glibc's largest mmap threshold on 64 bits)
MMAP_THRESHOLD = 32 * 1024 * 1024
#: free heap kept at its top before any is returned to the OS: above a frame's feature maps
#: (vgg16's largest layer holds 25 MB of them), below what a small device can spare
TRIM_THRESHOLD = 256 * 1024 * 1024

_lock = threading.Lock()
_done: list[bool] = []


def keep_heap() -> bool:
    """Set this process's malloc to keep freed tensor memory (once; later calls do nothing).
    False where the C library is not glibc (the setting is then left as it was)."""
    with _lock:
        if _done:
            return _done[0]
        ok = False
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            pass
        else:
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
                mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
        _done.append(ok)
        return ok
