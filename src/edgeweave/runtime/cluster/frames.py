"""A cluster frame in flight at the gateway, and what an answered one reports.

Besides totals, every frame keeps its tasks' timeline (:class:`TaskTiming`: when each tile was
handed out, how long its bytes were on the medium, its compute, when its result was back) and
how long its rest waited for its device, so a run can be set beside the plan's schedule task by
task: where measured and predicted part is a question of which task, not of a total.

A submitted frame's future (:class:`FrameFuture`) also says when the frame was *taken*: every
task of its first fused block (the ones in its source's queue) handed out to a device, or
waiting for the neighbours whose halo it reuses. A DeepThings data source sends its next frame
then, without waiting for the answer
(runtime.cluster.drive).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from edgeweave.graph.tile_exec import ShareStore


@dataclass(frozen=True)
class TaskTiming:
    """One task of a frame, in ms from the frame's submission (``sent``, ``done``) or long
    (``medium``: its input's time on the shared medium, waited by the worker; ``compute``: the
    device's emulated compute; ``trip``: handed out to result accepted)."""

    tile: int
    device: str
    sent_ms: float
    done_ms: float
    medium_ms: float
    compute_ms: float

    @property
    def trip_ms(self) -> float:
        return self.done_ms - self.sent_ms

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "trip_ms": self.trip_ms}


@dataclass
class FrameResult:
    """One answered frame: the model's output and how it was computed."""

    frame: int
    source: str
    output: Any
    latency_ms: float  # submitted -> answered
    cluster_ms: float  # submitted -> every tile stitched
    rest_ms: float
    medium_bytes: int  # what this frame put on the shared medium
    tasks: dict[str, int]  # device -> tiles it ran
    compute_ms: dict[str, float]  # device -> emulated compute
    stolen: int  # tiles run by a device other than the frame's source
    rerun: int  # tiles re-run after their device died
    note: str = ""
    # layer-wise: each split layer's scatter-to-gather time less its slowest part's compute
    delivery_ms: float = 0.0
    # each task's runtime cost besides compute and the medium (cropping, encoding, the RPC,
    # decoding), for the tasks that did not queue behind another on their device, and the
    # wire bytes each of those carried (task and result)
    task_overhead_ms: list[float] = field(default_factory=list)
    task_overhead_bytes: list[int] = field(default_factory=list)
    # the part of each of those costs the device spent decoding the task and encoding its
    # result (emulated); the rest is the RPC, the gateway's encoding and decoding and the
    # hand-offs between threads
    task_codec_ms: list[float] = field(default_factory=list)
    # each task as it ran, and how long the rest waited for its device to finish the tiles
    # it held (a device runs one thing at a time: its tiles or a frame's rest)
    timeline: list[TaskTiming] = field(default_factory=list)
    rest_wait_ms: float = 0.0
    home: str = ""  # where the frame was gathered and its rest ran
    submitted: float = 0.0  # the perf_counter instant it was submitted (0: not recorded)


def codec_ms(result: Any) -> float:
    """What a worker says it spent decoding a task and encoding its result (a TaskResult's
    ``decode_ms + encode_ms``): a peer's claim, so a negative or non-finite figure counts as
    0 and none counts as more than an hour; it only feeds the run's statistics."""
    ms = float(result.decode_ms) + float(result.encode_ms)
    return min(ms, 3.6e6) if ms > 0.0 else 0.0


@dataclass
class TaskCosts:
    """The runtime's cost of each timed task (FrameResult.task_overhead_ms, _bytes and
    task_codec_ms), as the gateway gathers them for a frame, a split layer or a run of steps."""

    ms: list[float] = field(default_factory=list)
    nbytes: list[int] = field(default_factory=list)
    codec_ms: list[float] = field(default_factory=list)

    def note(self, ms: float, nbytes: int, result: Any) -> None:
        """One task: its cost ``ms``, the ``nbytes`` it carried both ways, and the device's
        decoding and encoding from its ``result`` (:func:`codec_ms`)."""
        self.ms.append(ms)
        self.nbytes.append(nbytes)
        self.codec_ms.append(codec_ms(result))

    def extend(self, other: TaskCosts) -> None:
        self.ms += other.ms
        self.nbytes += other.nbytes
        self.codec_ms += other.codec_ms


class FrameFuture(Future):
    """A submitted frame's answer (a :class:`FrameResult`), and ``taken``: set once every task
    of the frame's first fused block has been handed out or waits for its neighbours' halo (a
    task handed back later, its device dead, does not unset it: the source has moved on), or
    the frame is answered, whichever is first."""

    def __init__(self) -> None:
        super().__init__()
        self.taken = threading.Event()
        self.add_done_callback(lambda _: self.taken.set())


@dataclass
class Frame:
    """A frame at the gateway until it is answered."""

    id: int
    source: str
    x: torch.Tensor
    stores: list[ShareStore]  # one per fused block (data reuse)
    future: FrameFuture
    submitted: float = field(default_factory=time.perf_counter)
    outputs: dict[int, torch.Tensor] = field(default_factory=dict)
    level0_done: set[int] = field(default_factory=set)
    running: set[int] = field(default_factory=set)  # tiles on a device now
    handed: set[int] = field(default_factory=set)  # tiles handed out at least once
    medium_bytes: int = 0
    tasks: Counter = field(default_factory=Counter)
    compute: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    stolen: int = 0
    rerun: int = 0
    stitched: float = 0.0
    block_out: torch.Tensor | None = None
    # several fused blocks: the stitched output of the block before the one running now
    stage_input: torch.Tensor | None = None
    costs: TaskCosts = field(default_factory=TaskCosts)
    timeline: list[TaskTiming] = field(default_factory=list)
    # work sharing: the monotonic instant each tile's crop reached the gateway from the source
    at_gateway: dict[int, float] = field(default_factory=dict)

    def hand(self, tile: int, first: int) -> None:
        """Tile ``tile`` handed out to a device (or the gateway); the frame is taken once all
        ``first`` tiles of its first fused block (numbered 0 to first - 1) have been: those
        wait in its data source's queue, so the source is free for its next frame (DeepThings'
        source partitions the next frame once its queue is empty; a later block's tiles are
        queued where the frame is gathered, after the sync point)."""
        self.handed.add(tile)
        if tile < first and sum(k < first for k in self.handed) == first:
            self.future.taken.set()

    def ms(self, instant: float) -> float:
        """A perf_counter instant as ms since the frame was submitted."""
        return (instant - self.submitted) * 1000.0

    def result(self, output: Any, end: float, rest_start: float, note: str, home: str,
               rest_wait_ms: float) -> FrameResult:
        return FrameResult(
            self.id, self.source, output, self.ms(end), self.ms(self.stitched),
            (end - rest_start) * 1000.0, self.medium_bytes, dict(self.tasks),
            dict(self.compute), self.stolen, self.rerun, note,
            task_overhead_ms=list(self.costs.ms), task_overhead_bytes=list(self.costs.nbytes),
            task_codec_ms=list(self.costs.codec_ms), timeline=list(self.timeline),
            rest_wait_ms=rest_wait_ms, home=home, submitted=self.submitted)
