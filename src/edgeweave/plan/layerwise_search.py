"""Choosing a layer-wise split (MoDNN, Mao et al. 2017): which devices, and how far into the
model to split before the rest runs on the gateway's path.

Devices join fastest first after the gateway (the group owner, which holds the frame and
computes its own share); every layer is split by one rule, MoDNN's speed-biased rows
(``biased``, the default), equal rows (``even``) or the 2-D grid MoDNN compares it with
(``grid``: convolutions cut into rows x columns, halo on both axes, one part per device), so the
only choices left are how many devices and where to stop, and both are enumerated: every k and
every cut where one tensor crosses. Each split layer is a scatter, parallel compute and a gather
on the shared medium, one after the other (the gateway waits for a layer's rows before the
next); layers that are not split (flatten, residual adds, adaptive pooling) run on the gateway.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from edgeweave.graph.blocks import single_value_cuts
from edgeweave.graph.capture import Graph
from edgeweave.graph.layerwise import LayerSplit, layer_units, layerwise_splits
from edgeweave.plan.cluster_cost import ClusterModel, layer_memory, layer_tasks, mib
from edgeweave.plan.costs import CostModel
from edgeweave.plan.medium import Schedule
from edgeweave.plan.rest import Rest

if TYPE_CHECKING:  # fused_candidates imports this module
    from edgeweave.plan.fused_candidates import Search


SCHEME_NAMES = {"biased": "speed-biased 1-D", "even": "even 1-D",
                "grid": "2-D grid",
                "resident": "speed-biased 1-D (rows kept on the devices)"}


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
    units = layer_units(graph)
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
        if scheme == "resident" and k >= 3:
            # the gateway's rows between two devices': the halo at both its edges crosses the
            # medium once, where two devices' halo crosses twice (through the gateway)
            subset = [subset[1], subset[0], *subset[2:]]
        splits = layerwise_splits(graph, [model.devices[n].gflops for n in subset], scheme,
                                  units)
        schedules = [model.simulate(layer_tasks(model, s, subset, reads_input(graph, s)))
                     for s in splits]
        # where the prefix ends, the last split's rows are gathered whole, even if the next
        # split could have read them where they were (resident rows)
        closed = [_gathered(s) for s in splits]
        closing = [sched if c is s else model.simulate(
            layer_tasks(model, c, subset, reads_input(graph, c)))
            for s, c, sched in zip(splits, closed, schedules, strict=True)]
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
            choice = _price(graph, model, subset, list(prefix),
                            [splits[i] for i in done[:-1]] + [closed[done[-1]]],
                            [schedules[i] for i in done[:-1]] + [closing[done[-1]]],
                            gateway_ms, rest, objective, search, scheme)
            if choice is not None and (best is None or choice.value < best.value):
                best = choice
    return [] if best is None else [best]


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
