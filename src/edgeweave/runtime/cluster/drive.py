"""Data sources feeding a cluster gateway: the frames dealt round-robin to the sources, each
source with up to ``in_flight`` of its frames unanswered.

With one frame in flight a source sends its next frame once its last is answered (a camera
that waits for the answer), so one source measures latency. DeepThings pipelines instead: a
source starts its next frame as soon as its queue holds nothing a device could take: every
tile of its last handed out to a device or waiting for the neighbours whose halo it reuses
(``FrameFuture.taken``; with several fused blocks, the first block's: the later blocks' tiles
are queued where the frame is gathered), without waiting for the answer, so the next frame's
tiles fill the devices that are idle while the last frame's final tiles, its sync points and
its rest run. ``in_flight`` k > 1 does that, with at most k of a source's frames unanswered
at once (a source's frames then wait in the scheduler's queues rather than piling up without
bound).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, wait
from typing import Protocol

import torch

from edgeweave.errors import EdgeWeaveError
from edgeweave.plan import Plan
from edgeweave.runtime.cluster.frames import FrameFuture, FrameResult
from edgeweave.topology import Fleet

#: The most frames a source may keep unanswered (``edgeweave distribute --in-flight``): each
#: holds a frame and its tiles' results at the gateway.
MAX_IN_FLIGHT = 16


class Gateway(Protocol):
    def submit(self, x: torch.Tensor, source: str | None = None) -> FrameFuture: ...


def check_in_flight(in_flight: int, flag: str = "in_flight") -> int:
    """``in_flight`` if it is a whole number from 1 to MAX_IN_FLIGHT, else one clear error
    (``flag``: how the caller's user spells it)."""
    if isinstance(in_flight, bool) or not isinstance(in_flight, int) or not (
            1 <= in_flight <= MAX_IN_FLIGHT):
        raise EdgeWeaveError(f"{flag} {in_flight!r}: expected a whole number of frames from 1 "
                             f"to {MAX_IN_FLIGHT} each data source keeps unanswered")
    return in_flight


def with_sources(plan: Plan, fleet: Fleet, sources: Sequence[str]) -> Plan:
    """``plan`` with every data source among its partition's devices. A plan may leave slow
    devices of its cluster out (plan.subclusters), but a camera on one of them still sends
    frames: it joins the plan's devices (and so gets a worker, as every source does) without
    work planned for it. A source outside the plan's cluster is an error."""
    part = plan.partition
    assert part is not None
    missing = [s for s in sources if s not in part.devices]
    if not missing:
        return plan
    cluster = fleet.cluster(part.cluster)
    unknown = [s for s in missing if s not in cluster.devices]
    if unknown:
        raise EdgeWeaveError(f"data source {unknown[0]!r} is not a device of the plan's cluster "
                             f"{part.cluster!r} ({', '.join(cluster.devices)})")
    devices = [d for d in cluster.devices if d in part.devices or d in missing]
    return plan.model_copy(update={"partition": part.model_copy(update={"devices": devices})})


def drive(gw: Gateway, frames: Sequence[torch.Tensor], sources: Sequence[str],
          timeout_s: float, in_flight: int = 1) -> list[FrameResult]:
    """Every frame answered, in the order the answers came (module docstring). A frame that
    failed raises its error; a frame not taken or not answered within ``timeout_s`` raises
    TimeoutError."""
    check_in_flight(in_flight)
    mine = {s: [x for k, x in enumerate(frames) if k % len(sources) == i]
            for i, s in enumerate(sources)}
    results: list[FrameResult] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def answered(waiting: set[FrameFuture], until: int) -> set[FrameFuture]:
        """Wait until at most ``until`` of ``waiting`` are unanswered; keep the answers."""
        while len(waiting) > until:
            done, _ = wait(waiting, timeout=timeout_s, return_when=FIRST_COMPLETED)
            waiting = waiting - done
            if not done:
                raise TimeoutError(f"no frame answered in {timeout_s:g} s")
            for future in done:
                result = future.result()
                with lock:
                    results.append(result)
        return waiting

    def source(name: str) -> None:
        try:
            waiting: set[FrameFuture] = set()
            last: FrameFuture | None = None
            for x in mine[name]:
                if last is not None and not last.taken.wait(timeout_s):
                    raise TimeoutError(f"a frame's tiles were not all taken in {timeout_s:g} s")
                waiting = answered(waiting, in_flight - 1)
                last = gw.submit(x, name)
                waiting.add(last)
            answered(waiting, 0)
        except BaseException as e:  # raised in the caller below
            errors.append(e)

    threads = [threading.Thread(target=source, args=(s,), daemon=True) for s in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results
