"""Tiles of a stealing-priced plan handed out as the runtime's stealers take them.

A plan priced as work stealing across frames in flight (`plan.stealing_price`) is run by the
runtime's eager stealing (`runtime.cluster.scheduler.Stealing` with ``eager``): every frame's
tiles wait in one queue, oldest frame first; a device holding fewer than ``1 + prefetch``
tasks asks for one (the devices holding fewest ask first) and takes the first waiting tile,
one the plan assigned to it if any is waiting. The gateway, whose device also runs every
frame's rest, takes no tile while a rest waits or runs on it (`runtime.cluster.rest.
RestLanes`: a device runs one thing at a time, and a rest goes before the tiles it does not
hold yet), and otherwise only a tile no other stealer would finish sooner, the rests of the
frames in flight counted ahead of it (``Pace``'s backlog). So over many frames the tiles
spread over every stealer, whatever device the plan wrote on them: replayed on their
planned devices, one tile per frame on three stealers runs every frame's tile on one
device: 43% of the frames/s the plan priced for digits-cnn on two rpi4 and an rpi3, where
this queue comes within 0.1% (tests/sim/test_sim_stealing.py, 12 frames in flight).

This module is that queue for the simulator (one per gateway's cluster, the frames of
`sim.cluster.FrameRun` feeding it). A tile runs for its cost on the device that takes it (the
price's ``stealing_tile_ms``); its input crosses the shared medium to that device, its result
crosses back (nothing for a tile on the gateway), and the gateway's processor is the host's,
shared with the rests and the gateway's other work. The finish estimates the gateway's test
uses are the runtime's: what each device holds, its cost for the tile, and the tile's bytes at
the medium's rate.
"""

from __future__ import annotations

from bisect import insort
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # sim.cluster imports this module
    from edgeweave.sim.cluster import ClusterHost, ClusterState, FrameRun, FrameTask

GATEWAY = 0
#: Tasks a device holds at most: one computing and one prefetched (the runtime's
#: ``1 + prefetch``, prefetch 1 as `edgeweave cluster` and the benchmarks run stealing), so a
#: prefetched crop crosses the medium while the device computes.
HOLD = 2
_EPS = 1e-9


class StealQueue:
    """One gateway's cluster's waiting tiles and what each stealer holds (module docstring).
    ``ran``: tiles each device (by index) has taken, for a replay's report."""

    __slots__ = ("cluster", "dev", "frames", "held", "host", "open", "pending_s", "ran",
                 "ready", "rest_s", "stealers", "tile_end", "waiting", "wake_at")

    def __init__(self, host: ClusterHost, dev: int, cluster: ClusterState,
                 stealers: tuple[int, ...]) -> None:
        self.host, self.dev, self.cluster, self.stealers = host, dev, cluster, stealers
        n = len(cluster.free)
        self.held = [0] * n
        self.ran = [0] * n
        self.pending_s = [0.0] * n  # compute of tiles taken whose input is still on the air
        self.ready: list[tuple[int, int, FrameRun]] = []  # (frame, task, run), oldest first
        self.frames = 0  # frames started on this cluster (FrameRun.seq)
        self.tile_end = 0.0  # when the last tile booked on the gateway's processor ends
        self.waiting: dict[int, int] = {}  # tiles of each frame (by seq) in ``ready``
        self.open = 0  # frames whose cluster part is not over (their rests still to come)
        # a frame's rest on the gateway, in seconds, when the host knows it (sim.stream);
        # the fleet engine runs rests as the request's later steps and leaves it 0, so there
        # the gateway counts only the work already booked on it
        self.rest_s = 0.0
        self.wake_at = float("inf")  # when a resting gateway is asked again

    def offer(self, run: FrameRun, tasks: list[int], now: float) -> None:
        """Tasks ``tasks`` of ``run`` can start (their reused tiles' results are in)."""
        for i in tasks:
            insort(self.ready, (run.seq, i, run), key=lambda e: (e[0], e[1]))
        self.waiting[run.seq] = self.waiting.get(run.seq, 0) + len(tasks)
        self.dispatch(now)

    def dispatch(self, now: float) -> None:
        """Devices with room ask in turn, fewest held first, one tile a turn, until no device
        takes one (the runtime's ``Stealing.dispatch``)."""
        progress = True
        while progress and self.ready:
            progress = False
            for d in sorted(self.stealers, key=lambda d: self.held[d]):
                if self.held[d] >= HOLD or not self.ready:
                    continue
                if d == GATEWAY and self._resting(now):
                    continue
                k = self._pick(d, now)
                if k is None:
                    continue
                _, i, run = self.ready.pop(k)
                self._start(d, run, i, now)
                progress = True
                self._handed(run, now)

    def _handed(self, run: FrameRun, now: float) -> None:
        left = self.waiting[run.seq] = self.waiting[run.seq] - 1
        if left == 0:
            del self.waiting[run.seq]
            if run.taken is not None and run.g == 0:
                taken, run.taken = run.taken, None  # once: its first group's tiles
                taken(now)

    def _resting(self, now: float) -> bool:
        """Whether the gateway's processor has work booked after its last tile (a rest, or
        in a fleet its other requests): it takes no tile until that is done, and is asked
        again then."""
        free = self.host.gateway_free(self.dev)
        if free <= max(now, self.tile_end) + _EPS:
            return False
        if free < self.wake_at - _EPS:
            self.wake_at = free
            self.host.call_at(free, self._wake, None)
        return True

    def _wake(self, _: Any) -> None:
        now = self.host.now
        if now >= self.wake_at - _EPS:
            self.wake_at = float("inf")
        self.dispatch(now)

    def _pick(self, d: int, now: float) -> int | None:
        """The position of the tile ``d`` takes: the first waiting one the plan assigned to
        it, else the first waiting; for the gateway, with rests of frames in flight still to
        come, only a tile no other stealer would finish sooner (the runtime's backlog
        test)."""
        backlog = self.open * self.rest_s if d == GATEWAY else 0.0
        first = None
        for k, (_, i, run) in enumerate(self.ready):
            task = run.tasks[i]
            if backlog > 0 and not self._gateway_first(task, now, backlog):
                continue
            if task.device == d:
                return k
            if first is None:
                first = k
        return first

    def _gateway_first(self, task: FrameTask, now: float, backlog: float) -> bool:
        mine = max(0.0, self.host.gateway_free(self.dev) - now) + backlog + task.on[GATEWAY]
        return all(mine <= self._finish_s(d, task, now) + _EPS
                   for d in self.stealers if d != GATEWAY)

    def _finish_s(self, d: int, task: FrameTask, now: float) -> float:
        """Seconds from ``now`` until helper ``d`` would have ``task``'s result at the
        gateway: what it holds, the task's compute there and its bytes on the medium."""
        wire = (task.in_bytes + task.out_bytes) * 8.0 / (self.cluster.medium.mbps * 1e6)
        return max(0.0, self.cluster.free[d] - now) + self.pending_s[d] + task.on[d] + wire

    def _start(self, d: int, run: FrameRun, i: int, now: float) -> None:
        task = run.tasks[i]
        seconds = task.on[d]
        self.held[d] += 1
        self.ran[d] += 1
        if d == GATEWAY:  # the gateway's own worker: nothing crosses the medium
            end = self.host.gateway_compute(self.dev, now, seconds)
            self.tile_end = max(self.tile_end, end)
            self.host.call_at(end, self._back, (d, run, i))
            return
        self.pending_s[d] += seconds
        end = self.cluster.medium.send(now, task.in_bytes)[0]
        self.host.call_at(end, self._arrived, (d, run, i))

    def _arrived(self, arg: tuple[int, FrameRun, int]) -> None:
        d, run, i = arg
        now = self.host.now
        seconds = run.tasks[i].on[d]
        self.pending_s[d] -= seconds
        end = max(now, self.cluster.free[d]) + seconds
        self.cluster.free[d] = end
        self.host.call_at(end, self._computed, arg)

    def _computed(self, arg: tuple[int, FrameRun, int]) -> None:
        _, run, i = arg
        end = self.cluster.medium.send(self.host.now, run.tasks[i].out_bytes)[0]
        self.host.call_at(end, self._back, arg)

    def _back(self, arg: Any) -> None:
        """A tile's result is at the gateway: its device has room again."""
        d, run, i = arg
        now = self.host.now
        self.held[d] -= 1
        run.result(i, now)
        self.dispatch(now)
