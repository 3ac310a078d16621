"""A multi-device partition replayed: one frame's tasks on a cluster whose devices share a
medium, in the simulator's queues.

A plan with a ``partition`` (`plan.multidevice.plan_cluster`) splits the first layers of each
inference across a cluster (DeepThings' fused tiles, MoDNN's layer-wise split); the gateway then
runs, or sends up, the rest of the model. Each device that runs such an application is the
gateway of its own copy of the plan's cluster: the partition's helper devices and one shared
medium (a :class:`~edgeweave.sim.links.LinkQueue` at the medium's rate: transfers take turns on
the air, FIFO).

The tasks are priced by the partition's own model, as the plan wrote them: each tile's or layer
part's compute on its device, its input and result bytes, the tiles whose results it waits for
(data reuse). They run as `plan.medium` runs them (a task's input crosses the medium, its
device computes the tasks in order, the result crosses back; a task on the gateway sends
nothing), but on the simulator's resources: the medium and the devices are shared with the
cluster's other frames, and the gateway's processor with the gateway's other work. On an idle
cluster the frame takes the partition's predicted ``cluster_ms``; a layer-wise split runs its
split layers one after the other (a run of resident layers overlapped, ``layer_split``
``overlap``, as one group of steps, each waiting for the steps whose rows its halo reads),
then the layers the gateway computes alone.

A plan priced as work stealing across frames in flight (``scheduler == "stealing"`` with
``stealers``: `plan.stealing_price`) does not pin a tile to its planned device: the runtime's
stealers take whichever tile is waiting, of whichever frame. Its frame carries each tile's
cost on every stealer (the price's ``stealing_tile_ms``), and its tiles go to the cluster's
:class:`~edgeweave.sim.stealing.StealQueue`, which hands them out as the runtime's eager
stealing does. A plan written before that field existed replays statically, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from edgeweave.errors import SimError
from edgeweave.plan.partition import Partition
from edgeweave.sim.stealing import GATEWAY, StealQueue


@dataclass(frozen=True)
class FrameTask:
    """``compute_s`` on device ``device`` (0: the gateway, k: the k-th helper), ``in_bytes``
    sent to it first and ``out_bytes`` back; ``after``: tasks (of its group) whose results must
    be at the gateway first."""

    device: int
    compute_s: float
    in_bytes: int
    out_bytes: int
    after: tuple[int, ...] = ()
    # a stealing-priced plan's: seconds on each device (by index; inf: not a stealer)
    on: tuple[float, ...] = ()


@dataclass(frozen=True)
class Frame:
    """One inference's cluster part: groups of tasks run one after the other (one group of
    fused tiles; one group per split layer), then ``gateway_s`` of the gateway alone."""

    groups: tuple[tuple[FrameTask, ...], ...]
    gateway_s: float
    helpers: tuple[str, ...]  # the helper devices' names in the plan, index k-1
    medium_mbps: float
    medium_rtt_ms: float
    predicted_ms: float  # the partition's cluster_ms
    # a stealing-priced plan's stealers (device indices, in the plan's order); empty: every
    # task runs on its own ``device``
    stealers: tuple[int, ...] = ()


def frame_of(part: Partition) -> Frame | None:
    """The partition's frame, or None when the plan runs on the gateway alone (``single``)."""
    if part.method == "single":
        return None
    helpers = tuple(d for d in part.devices if d != part.gateway)
    index = {part.gateway: GATEWAY, **{d: k + 1 for k, d in enumerate(helpers)}}
    groups: list[tuple[FrameTask, ...]] = []
    gateway_s = 0.0
    costs = _stealing_costs(part, index)
    stealers = tuple(index[d] for d in part.stealers) if costs is not None else ()
    if part.method == "fused-tiles":
        for stage in part.stages():  # several fused blocks run one after another
            tiles = sorted(stage.tiles, key=lambda t: (t.level, t.index))  # as devices run
            position = {t.index: k for k, t in enumerate(tiles)}
            groups.append(tuple(
                FrameTask(index[t.device], t.compute_ms / 1000.0, t.in_bytes, t.out_bytes,
                          tuple(sorted({position[p.source] for ps in t.reused.values()
                                        for p in ps})),
                          () if costs is None else costs[t.index])
                for t in tiles))
        cluster_ms = float(part.predicted.get("cluster_ms", 0.0))
    else:
        groups += _layer_groups(part, index)
        cluster_ms = float(part.predicted.get("cluster_ms", 0.0))
        # what the gateway computes alone between the split layers (flatten, adds, ...)
        gateway_s = max(0.0, cluster_ms - sum(la.makespan_ms for la in part.layers)) / 1000.0
    return Frame(tuple(groups), gateway_s, helpers, part.medium.mbps, part.medium.rtt_ms,
                 cluster_ms, stealers)


def _layer_groups(part: Partition, index: dict[str, int]) -> list[tuple[FrameTask, ...]]:
    """A layer-wise split's groups: one per split layer (its parts), except a run of resident
    layers overlapped (``LayerAssignment.steps``: layer_split ``overlap``), which is one
    group of all its steps in order, each waiting for the steps its halo reads."""
    layers = part.layers
    groups: list[tuple[FrameTask, ...]] = []
    k = 0
    while k < len(layers):
        if not layers[k].steps:
            la = layers[k]
            groups.append(tuple(FrameTask(index[d], ms / 1000.0, i, o) for d, ms, i, o in
                                zip(la.devices, la.compute_ms, la.in_bytes, la.out_bytes,
                                    strict=True)))
            k += 1
            continue
        end = k + 1  # the run goes on while the next layer reads the rows left on the devices
        while end < len(layers) and layers[end].steps and layers[end].resident:
            end += 1
        position = {(i, j): n for n, (i, j) in enumerate(
            (i, j) for i in range(k, end) for j in range(len(layers[i].steps)))}
        tasks = []
        for i in range(k, end):
            for step in layers[i].steps:
                after = [(a[0], a[1]) for a in step.after]
                outside = [a for a in after if a not in position]
                if outside:
                    raise SimError(f"partition.layers[{i}].steps: a step waits for "
                                   f"{outside}, not steps of its run (layers {k} to "
                                   f"{end - 1})")
                tasks.append(FrameTask(index[step.device], step.compute_ms / 1000.0,
                                       step.in_bytes, step.out_bytes,
                                       tuple(position[a] for a in after)))
        groups.append(tuple(tasks))
        k = end
    return groups


def _stealing_costs(part: Partition, index: dict[str, int]
                    ) -> list[tuple[float, ...]] | None:
    """Each tile's seconds on every device (by device index, inf where it may not run) when
    ``part`` is priced as work stealing and says what a tile costs each stealer; else None
    (a static plan, or one written before ``stealing_tile_ms``: it replays statically)."""
    if part.scheduler != "stealing" or not part.stealers or part.method != "fused-tiles":
        return None
    costs = part.predicted.get("stealing_tile_ms") or {}
    tiles = part.all_tiles()
    if len(part.stages()) != 1 or any(
            d not in index or len(costs.get(d) or ()) != len(tiles) for d in part.stealers):
        return None
    out = []
    for t in sorted(tiles, key=lambda t: t.index):
        on = [float("inf")] * len(index)
        for d in part.stealers:
            on[index[d]] = float(costs[d][t.index]) / 1000.0
        out.append(tuple(on))
    return out


class ClusterHost(Protocol):
    """What a frame needs from the engine: a clock, callbacks at a later time, the gateway's
    processor, and the cluster's medium and helper processors."""

    @property
    def now(self) -> float: ...

    def call_at(self, t: float, fn: Callable[[Any], None], arg: Any) -> None: ...

    def gateway_compute(self, dev: int, now: float, seconds: float) -> float: ...

    def gateway_free(self, dev: int) -> float:
        """When the gateway's processor is free of the work booked on it so far."""
        ...

    def cluster_of(self, dev: int, frame: Frame) -> ClusterState: ...

    def framed(self, job: Any, start: float, end: float) -> None: ...


class Framed:
    """What a request's frame calls when its cluster part is over: the host's `framed`, with
    the request and when its frame started."""

    __slots__ = ("host", "job", "start")

    def __init__(self, host: ClusterHost, job: Any, start: float) -> None:
        self.host, self.job, self.start = host, job, start

    def __call__(self, end: float) -> None:
        self.host.framed(self.job, self.start, end)


class ClusterState:
    """One gateway's cluster: its medium, when each helper's processor is next free, and
    for a stealing-priced plan the tiles waiting for a stealer (made by the first frame)."""

    __slots__ = ("free", "medium", "steal")

    def __init__(self, medium: Any, helpers: int) -> None:
        self.medium = medium
        self.free = [0.0] * (helpers + 1)  # index 0 unused: the gateway is the device itself
        self.steal: StealQueue | None = None


class FrameRun:
    """One frame in flight (see the module doc); calls ``done(now)`` when the cluster part
    is over."""

    __slots__ = ("arrived", "cluster", "dev", "done", "finished", "frame", "g", "host",
                 "missing", "needers", "next_of", "order", "seq", "taken", "tasks")

    def __init__(self, host: ClusterHost, dev: int, frame: Frame,
                 done: Callable[[float], None]) -> None:
        self.host, self.dev, self.frame, self.done = host, dev, frame, done
        self.cluster = host.cluster_of(dev, frame)
        self.g = -1
        self.seq = 0  # a stealing frame's number on its cluster: older frames' tiles first
        # told once every tile of a stealing frame's first group was handed out (or waits for
        # the neighbours whose halo it reuses): when a DeepThings source sends its next frame
        self.taken: Callable[[float], None] | None = None
        if frame.stealers:
            if self.cluster.steal is None:
                self.cluster.steal = StealQueue(host, dev, self.cluster, frame.stealers)
            self.seq = self.cluster.steal.frames
            self.cluster.steal.frames += 1
            self.cluster.steal.open += 1

    def start(self, now: float) -> None:
        self._next_group(now)

    def _next_group(self, now: float) -> None:
        self.g += 1
        frame = self.frame
        if self.g == len(frame.groups):
            if self.cluster.steal is not None and frame.stealers:
                self.cluster.steal.open -= 1  # its rest is on the gateway's queue now
            end = now
            if frame.gateway_s > 0:
                end = self.host.gateway_compute(self.dev, now, frame.gateway_s)
            if end > now:
                self.host.call_at(end, self.done, end)
            else:
                self.done(now)
            return
        tasks = self.tasks = frame.groups[self.g]
        n = len(tasks)
        self.arrived = [False] * n
        self.finished = 0
        self.missing = [len(set(t.after)) for t in tasks]
        self.needers: list[list[int]] = [[] for _ in range(n)]
        self.order: dict[int, list[int]] = {}
        for i, t in enumerate(tasks):
            self.order.setdefault(t.device, []).append(i)
            for d in set(t.after):
                self.needers[d].append(i)
        self.next_of = dict.fromkeys(self.order, 0)
        self._release([i for i in range(n) if self.missing[i] == 0], now)

    def _release(self, ready: list[int], now: float) -> None:
        """Tasks that can start: a stealing plan's all at once to whichever stealer takes
        them (as the runtime queues a frame's tiles, then hands them out), else each to its
        device."""
        if self.cluster.steal is not None and self.frame.stealers:
            if ready:
                self.cluster.steal.offer(self, ready, now)
            return
        for i in ready:
            self._send(i, now)

    def _send(self, i: int, now: float) -> None:
        task = self.tasks[i]
        if task.device == GATEWAY:
            self._arrive(i, now)
            return
        end = self.cluster.medium.send(now, task.in_bytes)[0]
        self.host.call_at(end, self._on_input, i)

    def _on_input(self, i: int) -> None:
        self._arrive(i, self._now())

    def _now(self) -> float:
        return self.host.now

    def _arrive(self, i: int, now: float) -> None:
        self.arrived[i] = True
        device = self.tasks[i].device
        queue, k = self.order[device], self.next_of[device]
        while k < len(queue) and self.arrived[queue[k]]:
            j = queue[k]
            k += 1
            seconds = self.tasks[j].compute_s
            if device == GATEWAY:
                end = self.host.gateway_compute(self.dev, now, seconds)
            else:
                end = max(now, self.cluster.free[device]) + seconds
                self.cluster.free[device] = end
            self.host.call_at(end, self._on_computed, j)
        self.next_of[device] = k

    def _on_computed(self, i: int) -> None:
        now = self._now()
        task = self.tasks[i]
        if task.device == GATEWAY:
            self._result(i, now)
            return
        end = self.cluster.medium.send(now, task.out_bytes)[0]
        self.host.call_at(end, self._on_result, i)

    def _on_result(self, i: int) -> None:
        self._result(i, self._now())

    def result(self, i: int, now: float) -> None:
        """Task ``i``'s result is at the gateway (a stealer's, `sim.stealing`)."""
        self._result(i, now)

    def _result(self, i: int, now: float) -> None:
        self.finished += 1
        ready = []
        for j in self.needers[i]:
            self.missing[j] -= 1
            if self.missing[j] == 0:
                ready.append(j)
        self._release(ready, now)
        if self.finished == len(self.tasks):
            self._next_group(now)
