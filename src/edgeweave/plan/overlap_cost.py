"""What a run of resident split layers costs when its steps overlap compute with the halo
(the layer-wise scheme ``overlap``, :mod:`edgeweave.graph.overlap`).

With ``resident`` rows each split layer is one schedule on the shared medium and the next
starts when the last one's rows are back: a per-layer barrier. Cut into steps, a run is one
task graph instead: every step is a task on its device (devices run their steps in the run's
order), and an edge step waits only for the steps whose returned rows its halo reads
(``Step.after``); an interior step waits for nothing but its device. The run is simulated
once on the medium (:mod:`edgeweave.plan.medium`), so a device computes its interior while
its neighbours' edges cross.

The plan still writes one makespan per split layer (``LayerAssignment.makespan_ms``: the
simulator and the run calibration take the cluster time minus their sum as the gateway's own
time), so a run's makespan is attributed to its splits: each split gets how much later its
last step's rows were back than the split before's (a running maximum), and the splits' shares
add up to the run's makespan. A split's medium and device time are its own steps'.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edgeweave.graph.capture import Graph
from edgeweave.graph.layerwise import LayerSplit
from edgeweave.graph.overlap import Run, Step, run_steps
from edgeweave.graph.resident import Hop, hops
from edgeweave.plan.cluster_cost import ClusterModel
from edgeweave.plan.medium import Schedule, Task
from edgeweave.topology import serialize_ms


@dataclass(frozen=True)
class PricedStep:
    """A step as the plan writes it: its device's name, its compute (without the runtime's
    cost per MiB, as ``LayerAssignment.compute_ms``), its wire bytes (codecs applied) and the
    steps it waits for as ``(split index, step index within that split)``."""

    step: Step
    device: str
    compute_ms: float
    in_bytes: int
    out_bytes: int
    after: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class RunPrice:
    """Split layers ``first..last`` priced as one task graph: the run's schedule, each
    split's share of it (makespans that add up to the run's), and each split's steps."""

    first: int
    last: int
    schedule: Schedule
    per_split: tuple[Schedule, ...]
    steps: tuple[tuple[PricedStep, ...], ...]


def step_bytes(model: ClusterModel, step: Step, frame_input: bool) -> tuple[int, int]:
    """What a step puts on the medium, as :meth:`ClusterModel.part_bytes` prices a part:
    ``frame_input``: its input is the frame's rows (the input codec), else a computed map."""
    ratio = model.input_ratio if frame_input else model.result_ratio
    return round(step.in_bytes * ratio), round(step.out_bytes * model.result_ratio)


def price_run(graph: Graph, model: ClusterModel, subset: Sequence[str],
              splits: Sequence[LayerSplit], first: int, last: int, frame_input: bool,
              every: Sequence[Hop | None] | None = None) -> RunPrice:
    """Split layers ``first..last`` of ``splits`` (resident, ``last`` gathered whole) as one
    task graph on ``model``'s medium, ``subset[d]`` running device ``d``'s steps;
    ``frame_input``: split ``first`` reads the model's input; ``every``: the splits' hops
    (graph.resident.hops) when the caller has them."""
    every = hops(graph, splits) if every is None else every
    whole = run_steps(graph, splits, first, last, every)
    run = run_steps(graph, splits, first, last, every,
                    worth_cutting(model, subset, splits, whole))
    where: list[tuple[int, int]] = []  # run step -> (split, index within the split)
    count = dict.fromkeys(range(first, last + 1), 0)
    for s in run.steps:
        where.append((s.split, count[s.split]))
        count[s.split] += 1
    tasks: list[Task] = []
    priced: list[list[PricedStep]] = [[] for _ in range(first, last + 1)]
    for s in run.steps:
        device = subset[s.device]
        compute = model.compute_ms(device, s.fractions)
        nbytes = step_bytes(model, s, frame_input and s.split == first)
        # the gateway computes its own steps in-process: no runtime cost per MiB (layer_tasks)
        tasks.append(Task(device, compute, *nbytes, s.after) if device == model.gateway
                     else model.task(device, compute, *nbytes, s.after))
        priced[s.split - first].append(PricedStep(s, device, compute, *nbytes,
                                                  tuple(where[a] for a in s.after)))
    schedule = model.simulate(tasks)
    return RunPrice(first, last, schedule, _attribute(model, run.steps, tasks, schedule,
                                                      first, last),
                    tuple(tuple(p) for p in priced))


def worth_cutting(model: ClusterModel, subset: Sequence[str], splits: Sequence[LayerSplit],
                  cut: Run) -> Callable[[int, int], bool]:
    """Which parts of a run (``cut``: every part cut) to cut into interior and edges.

    Cutting costs the device a fixed call cost per extra step (the profile's tile call cost of
    each layer of the unit, scaled to the device: a one-row edge of a deep layer reads all its
    weights again for a few rows); it saves the wait for the part's halo, at most as long as
    its interior computes (the wait it can hide). The wait is the halo's transit through the
    gateway: its bytes serialised once per hop and half a round trip per hop, two hops between
    two devices, one to or from the gateway. A local rule, part by part, not a search over
    every combination (the run is then priced as one task graph)."""
    gateway = model.gateway
    by_part: dict[tuple[int, int], list[Step]] = {}
    for s in cut.steps:
        by_part.setdefault((s.split, s.part), []).append(s)
    producers = {k: subset[s.device] for k, s in enumerate(cut.steps)}
    keep: set[tuple[int, int]] = set()
    for (i, p), mine in by_part.items():
        if len(mine) < 2:
            continue
        device = subset[mine[0].device]
        calls = model.devices[device]
        extra = (len(mine) - 1) * sum(calls.call_of(n) for n in splits[i].unit)
        wait = 0.0
        for s in mine[1:]:  # the edges: what the whole part would wait for
            far = any(producers[a] != gateway for a in s.after) and device != gateway
            hops_ = 2 if far else 1
            nbytes = round(s.in_bytes * model.result_ratio)
            wait = max(wait, hops_ * (serialize_ms(nbytes, model.medium.mbps)
                                      + model.medium.rtt_ms / 2))
        interior = model.compute_ms(device, mine[0].fractions)
        if min(wait, interior) > extra:
            keep.add((i, p))
    return lambda i, p: (i, p) in keep


def _attribute(model: ClusterModel, steps: Sequence[Step], tasks: Sequence[Task],
               schedule: Schedule, first: int, last: int) -> tuple[Schedule, ...]:
    """Each split's share of the run's schedule (module docstring)."""
    out = []
    before = 0.0
    for i in range(first, last + 1):
        mine = [t for t, s in enumerate(steps) if s.split == i]
        end = max(before, max(schedule.done_ms[t] for t in mine))
        busy: dict[str, float] = {}
        medium = 0.0
        for t in mine:
            task = tasks[t]
            busy[task.device] = busy.get(task.device, 0.0) + task.compute_ms
            if task.device != model.gateway:
                medium += (serialize_ms(task.in_bytes, model.medium.mbps)
                           + serialize_ms(task.out_bytes, model.medium.mbps))
        out.append(Schedule(end - before, tuple(schedule.done_ms[t] for t in mine),
                            tuple(schedule.start_ms[t] for t in mine), medium, busy))
        before = end
    return tuple(out)
