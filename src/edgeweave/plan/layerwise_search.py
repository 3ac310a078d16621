"""Choosing a layer-wise split (MoDNN, Mao et al. 2017): which devices, and how far into the
model to split before the rest runs on the gateway's path.

Devices join fastest first after the gateway (the group owner, which holds the frame and
computes its own share); every layer is split by one rule, MoDNN's speed-biased rows
(``biased``), equal rows (``even``) or the 2-D grid MoDNN compares it with (``grid``:
convolutions cut into rows x columns, halo on both axes, one part per device), or speed-biased
rows kept on the devices between split layers (``resident``, graph.resident; ``overlap``: the
same rows, each part's interior computed while its halo crosses, graph.overlap), so the only
choices left are how many devices and where to stop, and both are enumerated: every k and every
cut where one tensor crosses. Each split layer is a scatter, parallel compute and a gather on
the shared medium, one after the other (the gateway waits for a layer's rows before the next),
except a run of resident layers under ``overlap``, priced as one task graph of steps
(plan.overlap_cost); layers that are not split (flatten, residual adds, adaptive pooling) run
on the gateway.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from edgeweave.graph.blocks import single_value_cuts
from edgeweave.graph.capture import Graph
from edgeweave.graph.layerwise import LayerSplit, layer_units, layerwise_splits
from edgeweave.graph.overlap import run_bounds
from edgeweave.graph.resident import hops
from edgeweave.plan.cluster_cost import ClusterModel, layer_memory, layer_tasks, mib
from edgeweave.plan.costs import CostModel
from edgeweave.plan.medium import Schedule
from edgeweave.plan.overlap_cost import PricedStep, RunPrice, price_run
from edgeweave.plan.rest import Rest

if TYPE_CHECKING:  # fused_candidates imports this module
    from edgeweave.plan.fused_candidates import Search


SCHEME_NAMES = {"biased": "speed-biased 1-D", "even": "even 1-D",
                "grid": "2-D grid",
                "resident": "speed-biased 1-D (rows kept on the devices)",
                "overlap": "speed-biased 1-D (rows kept on the devices, interior computed "
                           "while the halo crosses)"}


@dataclass
class LayerChoice:
    """A priced layer-wise split of the model's first layers across ``devices``."""

    devices: list[str]
    prefix: list[str]
    splits: list[LayerSplit]
    schedules: list[Schedule]
    gateway_ms: float
    rest: Rest
    value: float
    latency_ms: float
    fps: float
    exact: bool
    note: str
    memory: dict[str, int]
    scheme: str = "biased"
    # ``overlap``: each split's steps where it is in a run of resident layers priced as one
    # task graph (plan.overlap_cost), empty elsewhere; other schemes: empty
    steps: list[tuple[PricedStep, ...]] = field(default_factory=list)


def device_order(model: ClusterModel, names: Sequence[str]) -> list[str]:
    """The gateway, then the other devices fastest first (file order among equals)."""
    others = sorted((n for n in names if n != model.gateway),
                    key=lambda n: -model.devices[n].gflops)
    return [model.gateway, *others]


def layerwise_choices(graph: Graph, cm: CostModel, model: ClusterModel, names: Sequence[str],
                      objective: str, rest_after: Callable[[list[str]], Rest | None],
                      search: Search, scheme: str = "biased", count: int | None = None
                      ) -> list[LayerChoice]:
    """The best layer-wise split by ``scheme`` (graph.layerwise.SCHEMES), or none if no split
    layer fits in memory; ``count`` pins the number of devices (MoDNN compares its splits on
    a given number of devices)."""
    units = layer_units(graph, blocks=scheme in ("resident", "overlap"))
    if not units:
        search.notes.append(f"no layer-wise split: model {graph.name!r} has no convolution, "
                            "pooling or fully connected layer to split")
        return []
    first = {u[0]: k for k, u in enumerate(units)}
    unit_of = {name: k for k, u in enumerate(units) for name in u}
    cuts = set(single_value_cuts(graph))
    ordered = device_order(model, names)
    best: LayerChoice | None = None
    for k in [count] if count is not None else range(1, len(ordered) + 1):
        subset = ordered[:k]
        if scheme in ("resident", "overlap") and k >= 3:
            # the gateway's rows between two devices': the halo at both its edges crosses the
            # medium once, where two devices' halo crosses twice (through the gateway)
            subset = [subset[1], subset[0], *subset[2:]]
        splits = layerwise_splits(graph, [model.devices[n].gflops for n in subset], scheme,
                                  units, balanced(graph, model, subset, units))
        schedules = [model.simulate(layer_tasks(model, s, subset, reads_input(graph, s)))
                     for s in splits]
        # where the prefix ends, the last split's rows are gathered whole, even if the next
        # split could have read them where they were (resident rows)
        closed = [_gathered(s) for s in splits]
        closing = [sched if c is s else model.simulate(
            layer_tasks(model, c, subset, reads_input(graph, c)))
            for s, c, sched in zip(splits, closed, schedules, strict=True)]
        runs = _Runs(graph, model, subset, splits) if scheme == "overlap" else None
        gateway_ms = 0.0
        done: list[int] = []
        prefix: list[str] = []
        for info in graph.nodes:
            if info.kind == "placeholder":
                continue
            prefix.append(info.name)
            if info.name in first:
                done.append(first[info.name])
            elif info.name not in unit_of:
                gateway_ms += model.devices[model.gateway].node_ms[info.name]
            inside = info.name in unit_of and units[unit_of[info.name]][-1] != info.name
            if not done or info.name not in cuts or inside:
                continue
            rest = rest_after(list(prefix))
            if rest is None:
                continue
            search.configs += 1
            priced = [schedules[i] for i in done[:-1]] + [closing[done[-1]]]
            steps: list[tuple[PricedStep, ...]] = []
            if runs is not None:
                assert done[-1] == len(done) - 1  # the split layers in order, from the first
                priced, steps = runs.prefix(priced)
            choice = _price(graph, model, subset, list(prefix),
                            [splits[i] for i in done[:-1]] + [closed[done[-1]]],
                            priced, gateway_ms, rest, objective, search, scheme)
            if choice is not None:
                choice.steps = steps
            if choice is not None and (best is None or choice.value < best.value):
                best = choice
    return [] if best is None else [best]


class _Runs:
    """The runs of resident layers of one k's splits priced as task graphs (``overlap``),
    each ``(first, last)`` once: a cut inside a run prices the run up to the cut (its last
    split gathered whole), and every later cut reuses it."""

    def __init__(self, graph: Graph, model: ClusterModel, subset: list[str],
                 splits: list[LayerSplit]) -> None:
        self.graph, self.model, self.subset, self.splits = graph, model, subset, splits
        self.bounds = {first: last for first, last in run_bounds(splits)}
        self.every = hops(graph, splits) if self.bounds else []
        self.cache: dict[tuple[int, int], RunPrice] = {}

    def run(self, first: int, last: int) -> RunPrice:
        key = (first, last)
        if key not in self.cache:
            self.cache[key] = price_run(self.graph, self.model, self.subset, self.splits,
                                        first, last,
                                        reads_input(self.graph, self.splits[first]),
                                        self.every)
        return self.cache[key]

    def prefix(self, schedules: list[Schedule]
               ) -> tuple[list[Schedule], list[tuple[PricedStep, ...]]]:
        """The first ``len(schedules)`` splits' schedules (one per split, as priced alone,
        the last one closed) with every run among them replaced by its task graph's share,
        and each split's steps (empty outside runs)."""
        end = len(schedules) - 1
        out: list[Schedule] = []
        steps: list[tuple[PricedStep, ...]] = []
        i = 0
        while i <= end:
            last = min(self.bounds.get(i, i), end)
            if last == i:  # not in a run, or a run's first split where the prefix ends
                out.append(schedules[i])
                steps.append(())
                i += 1
                continue
            price = self.run(i, last)
            out += price.per_split
            steps += price.steps
            i = last + 1
        return out, steps


def balanced(graph: Graph, model: ClusterModel, subset: Sequence[str],
             units: Sequence[tuple[str, ...]]) -> Callable[[tuple[str, ...]], list[float]]:
    """Each device's share of a unit such that all finish together (the ``resident`` and
    ``overlap`` splits; MoDNN's ``biased`` sizes shares by speed alone).

    A device computing a share f of a layer takes ``f x latency + (1 - f) x call`` (the
    fixed cost of a call, :meth:`ClusterModel.compute_ms`), so shares by speed alone leave a
    slow device with more than its part: a call costs an rpi3 three times an rpi4's, and on
    vgg16's overlapped steps the rpi3 computed 1699 ms a frame where the rpi4s computed
    1200-1250. Equal times give ``f_d = (t - call_d) / (latency_d - call_d)`` with ``t`` set
    so the shares add up to 1; a device whose call alone outlasts ``t`` gets none. The
    convolutions and pools share one set of shares, balanced over all of them together: a
    band whose rows moved from one layer to the next would cross the medium (measured: per
    layer shares on 4 pi-cluster devices moved 12% more bytes and doubled the delivery); a
    fully connected layer is balanced alone. Speeds where a device's latency is not above its
    call cost (nothing to balance by)."""
    def solve(group: Sequence[tuple[str, ...]]) -> list[float]:
        slope, call = [], []
        for name in subset:
            device = model.devices[name]
            whole = sum(device.node_ms.get(n, 0.0) for u in group for n in u)
            fixed = sum(device.call_of(n) for u in group for n in u)
            slope.append(whole - fixed)
            call.append(fixed)
        if any(x <= 0 for x in slope):
            return [model.devices[n].gflops for n in subset]
        active = list(range(len(subset)))
        while True:
            t = (1.0 + sum(call[d] / slope[d] for d in active)) / sum(
                1.0 / slope[d] for d in active)
            out = {d: (t - call[d]) / slope[d] for d in active}
            if all(f > 0 for f in out.values()) or len(active) == 1:
                return [max(0.0, out.get(d, 0.0)) for d in range(len(subset))]
            active = [d for d in active if out[d] > 0]

    def rows(unit: tuple[str, ...]) -> bool:
        return len(graph.node(unit[0]).out_shape or ()) == 4

    maps = solve([u for u in units if rows(u)])

    def shares(unit: tuple[str, ...]) -> list[float]:
        return maps if rows(unit) else solve([unit])
    return shares


def _gathered(split: LayerSplit) -> LayerSplit:
    """``split`` with its rows gathered whole (the split before a cut)."""
    if all(p.medium_out is None for p in split.parts):
        return split
    return replace(split, parts=tuple(replace(p, medium_out=None) for p in split.parts))


def reads_input(graph: Graph, split: LayerSplit) -> bool:
    """Whether a split layer reads the model's input (its scatter is the frame's rows)."""
    return graph.node(split.unit[0]).inputs[0] in graph.placeholders


def _price(graph: Graph, model: ClusterModel, subset: list[str], prefix: list[str],
           splits: list[LayerSplit], schedules: list[Schedule], gateway_ms: float, rest: Rest,
           objective: str, search: Search, scheme: str) -> LayerChoice | None:
    memory = layer_memory(graph, splits, subset)
    memory[model.gateway] += rest.device_param_bytes + max(
        graph.node(n).in_bytes + graph.node(n).out_bytes for n in prefix)
    over = [n for n in subset if memory[n] > model.devices[n].limit_bytes]
    if over:
        name = over[0]
        search.infeasible.append(
            f"layer-wise on {len(subset)} device(s) up to {prefix[-1]!r}: {name!r} needs "
            f"{mib(memory[name])}, over its limit {mib(model.devices[name].limit_bytes)}")
        return None
    cluster_ms = sum(s.makespan_ms for s in schedules) + gateway_ms
    busy = dict.fromkeys(subset, 0.0)
    for s in schedules:
        for name, ms in s.device_busy_ms.items():
            busy[name] += ms
    busy[model.gateway] += gateway_ms + rest.device_ms
    bottleneck = max(sum(s.medium_busy_ms for s in schedules), max(busy.values()),
                     rest.other_stages_ms)
    latency = cluster_ms + rest.latency_ms
    value = latency if objective == "latency" else bottleneck
    note = (f"MoDNN {SCHEME_NAMES[scheme]} split over {len(subset)} device(s) "
            f"({', '.join(subset)}), {len(splits)} split layer(s) up to {prefix[-1]!r}")
    return LayerChoice(subset, prefix, splits, schedules, gateway_ms, rest, value, latency,
                       1000.0 / bottleneck, rest.exact, note, memory, scheme)
