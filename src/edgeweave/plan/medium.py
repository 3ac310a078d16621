"""One frame's tasks on a cluster whose devices share one medium, simulated event by event.

The gateway holds the frame. A task's input crosses the medium from the gateway to its device,
the device computes, and the result crosses back; a task on the gateway itself sends nothing.
The medium carries one transfer at a time (devices on one Wi-Fi take turns on the air), serving
waiting transfers in the order they were requested (ties: task order); each transfer occupies it
for its serialisation time and arrives half a round trip later, the per-hop cost of the
co-inference cost model (topology.transfer_ms) with the bandwidth shared instead of private.
A device runs its tasks in the order given; a task waits for its input, and a task with
dependencies (data reuse) has its input sent only once their results are at the gateway.

This is the schedule the runtime's static scheduler produces for an assignment (the plan's tiles
pushed to their devices up front), and the model the partition optimiser prices plans with; it
is exact for that policy, not for work stealing or DeepThings' centralized work sharing (which
also sends each crop to the gateway first).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

from edgeweave.errors import PlanError
from edgeweave.topology import serialize_ms


@dataclass(frozen=True)
class Task:
    """One unit of work: ``compute_ms`` on ``device``, ``in_bytes`` sent to it first and
    ``out_bytes`` sent back; ``after`` lists tasks whose results must be at the gateway first.
    A replay of several data sources' frames also says where the input comes from
    (``source``) and the result goes (``home``), the gateway if None, and when the task's frame
    arrived (``release_ms``); a transfer between a device and itself costs nothing."""

    device: str
    compute_ms: float
    in_bytes: int
    out_bytes: int
    after: tuple[int, ...] = ()
    source: str | None = None
    home: str | None = None
    release_ms: float = 0.0


@dataclass(frozen=True)
class Schedule:
    """When everything happened: ``done_ms[t]`` is when task t's result is at the gateway."""

    makespan_ms: float
    done_ms: tuple[float, ...]
    start_ms: tuple[float, ...]
    medium_busy_ms: float
    device_busy_ms: dict[str, float]


def simulate(tasks: Sequence[Task], gateway: str, mbps: float, rtt_ms: float) -> Schedule:
    """Run the tasks' transfers and computations on the shared medium (module docstring)."""
    if mbps <= 0 or rtt_ms < 0:
        raise PlanError(f"medium: need mbps > 0 and rtt_ms >= 0, got {mbps} and {rtt_ms}")
    n = len(tasks)
    queues: dict[str, list[int]] = {}
    for i, task in enumerate(tasks):
        queues.setdefault(task.device, []).append(i)
        if any(not 0 <= d < n or d == i for d in task.after):
            raise PlanError(f"task {i} depends on {task.after}; expected other tasks' indices")
    events: list[tuple[float, int, str, int]] = []
    seq = 0

    def push(time: float, kind: str, task: int) -> None:
        nonlocal seq
        heapq.heappush(events, (time, seq, kind, task))
        seq += 1

    waiting: list[tuple[float, int, int, str]] = []  # (requested, task, order, direction)
    medium_free = True
    busy = 0.0
    device_free = dict.fromkeys(queues, True)
    next_of = dict.fromkeys(queues, 0)
    arrived = [False] * n
    start = [0.0] * n
    done = [float("nan")] * n
    missing = [len(set(t.after)) for t in tasks]
    needers: list[list[int]] = [[] for _ in range(n)]
    for i, task in enumerate(tasks):
        for d in set(task.after):
            needers[d].append(i)

    def release(i: int, now: float) -> None:
        if tasks[i].release_ms > now:  # its frame has not arrived yet
            push(tasks[i].release_ms, "release", i)
        elif tasks[i].device == (tasks[i].source or gateway):
            push(now, "input", i)
        else:
            waiting.append((now, i, len(waiting), "in"))

    for i in range(n):
        if missing[i] == 0:
            release(i, 0.0)
    now = 0.0
    while True:
        if medium_free and waiting:
            waiting.sort()
            _, i, _, direction = waiting.pop(0)
            nbytes = tasks[i].in_bytes if direction == "in" else tasks[i].out_bytes
            ser = serialize_ms(nbytes, mbps)
            busy += ser
            medium_free = False
            push(now + ser, "medium_free", -1)
            push(now + ser + rtt_ms / 2, direction, i)
            continue
        for device, free in device_free.items():
            k = next_of[device]
            if free and k < len(queues[device]) and arrived[queues[device][k]]:
                i = queues[device][k]
                start[i] = now
                device_free[device] = False
                next_of[device] = k + 1
                push(now + tasks[i].compute_ms, "computed", i)
        if not events:
            break
        now, _, kind, i = heapq.heappop(events)
        if kind == "medium_free":
            medium_free = True
        elif kind == "release":
            release(i, now)
        elif kind in ("in", "input"):
            arrived[i] = True
        elif kind == "computed":
            device_free[tasks[i].device] = True
            if tasks[i].device == (tasks[i].home or gateway):
                push(now, "out", i)
            else:
                waiting.append((now, i, len(waiting), "out"))
        elif kind == "out":
            done[i] = now
            for j in needers[i]:
                missing[j] -= 1
                if missing[j] == 0:
                    release(j, now)
    if any(d != d for d in done):  # NaN: a task never ran
        raise PlanError("tasks never finished: their dependencies form a cycle")
    device_busy = {d: sum(tasks[i].compute_ms for i in q) for d, q in queues.items()}
    return Schedule(max(done, default=0.0), tuple(done), tuple(start), busy, device_busy)
