"""Cut a captured graph into runnable stages, one per tier, following a placement.

Each stage is its own ``fx.GraphModule`` so a tier can run its part without the rest of the
model's code; the values crossing a cut become the stage's placeholders and tuple outputs, which
are exactly what gets shipped between tiers. Data may only flow forward through the tier order
(device -> edge -> cloud), because a placement that sends results back down would need a round
trip the planner does not model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import fx

from edgeweave.errors import GraphError
from edgeweave.graph.capture import Graph

#: Tier order used when none is given.
DEFAULT_ORDER: tuple[str, ...] = ("device", "edge", "cloud")


@dataclass
class Stage:
    """One tier's part of a model.

    Calling ``module(*values of inputs)`` returns a tuple with the values of ``outputs``, in
    order. ``inputs`` are values from earlier stages or the model's own inputs; ``outputs`` are
    the values later stages or the final result need. ``model_inputs``/``model_outputs`` name
    the whole model's inputs and result (the same on every stage) so :func:`run_stages` can run
    a list of stages on its own.
    """

    key: str
    module: fx.GraphModule
    inputs: list[str]
    outputs: list[str]
    nodes: list[str]
    model_inputs: tuple[str, ...] = field(default=())
    model_outputs: tuple[str, ...] = field(default=())


def split(
    graph: Graph,
    placement: Mapping[str, str],
    order: Sequence[str] = DEFAULT_ORDER,
) -> list[Stage]:
    """Split ``graph`` into stages following ``placement`` (node name -> stage key).

    Every node, placeholders included, must be placed on a key of ``order``; stages come out in
    ``order`` and keys with no nodes give no stage. Raises :class:`GraphError` for unplaced or
    unknown nodes, unknown keys, and edges that would send data backwards.
    """
    _validate(graph, placement, order)
    topo = {info.name: i for i, info in enumerate(graph.nodes)}
    model_outputs = set(graph.outputs)

    # Which later stages need each value: a value leaves its stage when any consumer is elsewhere.
    needed_later: dict[str, bool] = {name: name in model_outputs for name in topo}
    for producer, consumer in graph.edges:
        if placement[consumer] != placement[producer]:
            needed_later[producer] = True

    fx_nodes = {n.name: n for n in graph.module.graph.nodes}
    stages = []
    for key in order:
        members = [info.name for info in graph.nodes if placement[info.name] == key]
        if not members:
            continue
        member_set = set(members)
        external = {p for m in members for p in graph.node(m).inputs if p not in member_set}
        owned_placeholders = {m for m in members if graph.node(m).kind == "placeholder"}
        inputs = sorted(external | owned_placeholders, key=topo.__getitem__)
        outputs = [m for m in members if needed_later[m]]
        module = _build_stage(graph, fx_nodes, members, inputs, outputs, key)
        stages.append(
            Stage(
                key=key,
                module=module,
                inputs=inputs,
                outputs=outputs,
                nodes=members,
                model_inputs=tuple(graph.placeholders),
                model_outputs=tuple(graph.outputs),
            )
        )
    return stages


def run_stages(stages: Sequence[Stage], *inputs: Any) -> Any:
    """Run ``stages`` in order on the model's inputs and return the model's result: the single
    value if the model returns one, else a tuple. This is the in-process reference the tiered
    runtime must agree with."""
    if not stages:
        raise GraphError("run_stages got no stages; expected the list returned by split()")
    model_inputs = stages[0].model_inputs
    if len(inputs) != len(model_inputs):
        raise GraphError(
            f"run_stages got {len(inputs)} input(s); the model takes {len(model_inputs)} "
            f"({', '.join(model_inputs)})"
        )
    env: dict[str, Any] = dict(zip(model_inputs, inputs, strict=True))
    for stage in stages:
        missing = [name for name in stage.inputs if name not in env]
        if missing:
            raise GraphError(
                f"stage {stage.key!r} needs {', '.join(missing)}, which no earlier stage produced; "
                "pass the stages in the order split() returned them"
            )
        produced = stage.module(*(env[name] for name in stage.inputs))
        env.update(zip(stage.outputs, produced, strict=True))
    results = tuple(env[name] for name in stages[0].model_outputs)
    return results[0] if len(results) == 1 else results


def stage_from_nodes(
    graph: Graph,
    nodes: Sequence[str],
    inputs: Sequence[str],
    outputs: Sequence[str],
    key: str = "stage",
) -> Stage:
    """The stage running ``nodes`` of ``graph``, consuming ``inputs`` and returning ``outputs``,
    as :func:`split` would have cut it. For a node server building a stage a peer described, so
    every claim is checked and a :class:`GraphError` names the first node at fault: the nodes
    exist (once each), every input is a model input or produced outside the stage, every value
    the stage uses is one of its nodes or inputs, and every output is one of its nodes."""
    members = list(nodes)
    if not members:
        raise GraphError(f"stage {key!r} runs no nodes")
    for name in (*members, *inputs, *outputs):
        graph.node(name)  # a GraphError names an unknown node
    for group, names in (("nodes", members), ("inputs", inputs), ("outputs", outputs)):
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise GraphError(f"stage {key!r} lists {name!r} twice in its {group}")
            seen.add(name)
    member_set, input_set = set(members), set(inputs)
    for name in inputs:
        if name in member_set and graph.node(name).kind != "placeholder":
            raise GraphError(f"stage {key!r} input {name!r} is computed by the stage itself; "
                             "an input is a model input or a value produced outside it")
    for name in members:
        info = graph.node(name)
        if info.kind == "placeholder" and name not in input_set:
            raise GraphError(f"stage {key!r} runs model input {name!r} but does not list it as "
                             "an input")
        for producer in info.inputs:
            if producer not in member_set and producer not in input_set:
                raise GraphError(f"stage {key!r} node {name!r} uses {producer!r}, which is "
                                 "neither one of its nodes nor one of its inputs")
    for name in outputs:
        if name not in member_set:
            raise GraphError(f"stage {key!r} output {name!r} is not one of its nodes")
    topo = {info.name: i for i, info in enumerate(graph.nodes)}
    ordered = sorted(members, key=topo.__getitem__)
    fx_nodes = {n.name: n for n in graph.module.graph.nodes}
    module = _build_stage(graph, fx_nodes, ordered, list(inputs), list(outputs), key)
    return Stage(key=key, module=module, inputs=list(inputs), outputs=list(outputs),
                 nodes=ordered, model_inputs=tuple(graph.placeholders),
                 model_outputs=tuple(graph.outputs))


def _validate(graph: Graph, placement: Mapping[str, str], order: Sequence[str]) -> None:
    rank = {key: i for i, key in enumerate(order)}
    names = [info.name for info in graph.nodes]
    missing = [name for name in names if name not in placement]
    if missing:
        raise GraphError(
            f"placement for graph {graph.name!r} leaves {len(missing)} node(s) unplaced: "
            f"{_few(missing)}; every node, placeholders included, needs a stage key"
        )
    known = set(names)
    unknown_nodes = [name for name in placement if name not in known]
    if unknown_nodes:
        raise GraphError(
            f"placement for graph {graph.name!r} names node(s) it does not have: "
            f"{_few(unknown_nodes)}"
        )
    for name in names:
        if placement[name] not in rank:
            raise GraphError(
                f"placement puts node {name!r} on unknown stage key {placement[name]!r}; "
                f"expected one of {', '.join(order)}"
            )
    for producer, consumer in graph.edges:
        if rank[placement[consumer]] < rank[placement[producer]]:
            raise GraphError(
                f"placement sends data backwards along edge {producer!r} -> {consumer!r}: "
                f"producer on {placement[producer]!r}, consumer on {placement[consumer]!r}; "
                f"data may only flow forward through {' -> '.join(order)}"
            )


def _build_stage(
    graph: Graph,
    fx_nodes: Mapping[str, fx.Node],
    members: list[str],
    inputs: list[str],
    outputs: list[str],
    key: str,
) -> fx.GraphModule:
    new_graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for name in inputs:
        original = fx_nodes[name]
        if original.op == "placeholder":
            env[original] = new_graph.node_copy(original)
        else:
            env[original] = new_graph.placeholder(name)

    def lookup(node: fx.Node) -> fx.Node:
        if node not in env:
            if node.op != "get_attr":
                raise GraphError(  # unreachable for a validated placement; guards bugs
                    f"stage {key!r} uses {node.name!r}, which is neither in it nor an input"
                )
            env[node] = new_graph.node_copy(node)  # weights are copied into every user
        return env[node]

    for name in members:
        original = fx_nodes[name]
        if original.op != "placeholder":
            env[original] = new_graph.node_copy(original, lookup)
    new_graph.output(tuple(env[fx_nodes[name]] for name in outputs))
    return fx.GraphModule(graph.module, new_graph)


def _few(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(repr(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
