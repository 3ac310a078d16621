"""The captured model's data: costed nodes and the graph that orders them.

Plain data (frozen dataclasses with JSON round trips) so profiles and plans that embed a graph's
nodes can be saved, inspected and re-run; :mod:`edgeweave.graph.capture` builds them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import fx

from edgeweave.errors import GraphError

#: Node kinds a :class:`NodeInfo` can have (fx ``get_attr`` and ``output`` nodes are not nodes
#: of a :class:`Graph`: the former are weights, the latter is :attr:`Graph.outputs`).
NODE_KINDS = ("placeholder", "call_module", "call_function", "call_method")


@dataclass(frozen=True)
class NodeInfo:
    """One node of a captured model, as plain data so profiles and plans can be saved as JSON.

    ``inputs`` names the producer nodes in the order the node consumes them (each once);
    ``in_bytes`` is the sum of their ``out_bytes``, i.e. what must arrive if the producers run on
    another tier. ``attrs`` holds the hyper-parameters a latency regression keys on.
    """

    name: str
    op: str
    kind: str
    target: str
    inputs: tuple[str, ...] = ()
    flops: int = 0
    param_bytes: int = 0
    out_bytes: int = 0
    in_bytes: int = 0
    out_shape: tuple[int, ...] | None = None
    attrs: dict[str, Any] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (tuples become lists)."""
        return {
            "name": self.name,
            "op": self.op,
            "kind": self.kind,
            "target": self.target,
            "inputs": list(self.inputs),
            "flops": self.flops,
            "param_bytes": self.param_bytes,
            "out_bytes": self.out_bytes,
            "in_bytes": self.in_bytes,
            "out_shape": None if self.out_shape is None else list(self.out_shape),
            "attrs": dict(self.attrs),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NodeInfo:
        """Inverse of :meth:`to_dict`; a missing field is a :class:`GraphError` naming it."""
        required = ("name", "op", "kind", "target")
        missing = [key for key in required if key not in data]
        if missing:
            raise GraphError(
                f"node record {dict(data)!r} lacks field(s) {', '.join(missing)}; "
                f"expected at least {', '.join(required)}"
            )
        shape = data.get("out_shape")
        return cls(
            name=str(data["name"]),
            op=str(data["op"]),
            kind=str(data["kind"]),
            target=str(data["target"]),
            inputs=tuple(str(i) for i in data.get("inputs", ())),
            flops=int(data.get("flops", 0)),
            param_bytes=int(data.get("param_bytes", 0)),
            out_bytes=int(data.get("out_bytes", 0)),
            in_bytes=int(data.get("in_bytes", 0)),
            out_shape=None if shape is None else tuple(int(d) for d in shape),
            attrs=dict(data.get("attrs", {})),
        )


@dataclass(eq=False)
class Graph:
    """A captured model: the runnable ``fx.GraphModule`` plus its costed nodes.

    ``nodes`` are in topological order and include the model's placeholders; ``outputs`` names
    the nodes whose values the model returns, in order. ``traced`` is False when symbolic tracing
    failed and a coarser fallback was used; ``fallback_reason`` then says why and what was used.
    ``spec`` is the model specifier a node server can build this model from (its zoo name, the
    name of a model its operator installed, or a parametrised built-in); None when the graph was
    captured from an in-memory module nobody else can rebuild, so its stages cannot be deployed.
    """

    module: fx.GraphModule
    nodes: list[NodeInfo]
    outputs: list[str]
    input_shape: tuple[int, ...]
    name: str = "model"
    traced: bool = True
    fallback_reason: str | None = None
    spec: str | None = None
    _index: dict[str, NodeInfo] = field(init=False, repr=False)
    _consumers: dict[str, list[str]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._index = {}
        self._consumers = {}
        for info in self.nodes:
            if info.name in self._index:
                raise GraphError(f"graph {self.name!r} has two nodes named {info.name!r}")
            self._index[info.name] = info
            self._consumers[info.name] = []
        for producer, consumer in self.edges:
            if producer not in self._consumers:
                raise GraphError(
                    f"node {consumer!r} of graph {self.name!r} consumes {producer!r}, "
                    "which is not an earlier node"
                )
            self._consumers[producer].append(consumer)

    def node(self, name: str) -> NodeInfo:
        """The node called ``name``; a :class:`GraphError` lists some real names if absent."""
        try:
            return self._index[name]
        except KeyError:
            some = ", ".join(list(self._index)[:8])
            raise GraphError(
                f"graph {self.name!r} has no node named {name!r}; its nodes start with {some}"
            ) from None

    @property
    def edges(self) -> list[tuple[str, str]]:
        """Data edges ``(producer, consumer)`` in topological order of the consumer."""
        return [(src, info.name) for info in self.nodes for src in info.inputs]

    def consumers(self, name: str) -> list[str]:
        """Names of the nodes that consume ``name``'s value."""
        self.node(name)
        return list(self._consumers[name])

    @property
    def placeholders(self) -> list[str]:
        """Names of the model's input nodes, in call order."""
        return [info.name for info in self.nodes if info.kind == "placeholder"]

    def is_chain(self) -> bool:
        """True when every node has at most one input and one consumer (a plain sequence),
        which lets planners use the cheaper single-cut search."""
        return all(
            len(info.inputs) <= 1 and len(self._consumers[info.name]) <= 1 for info in self.nodes
        )

    @property
    def total_flops(self) -> int:
        return sum(info.flops for info in self.nodes)

    @property
    def total_param_bytes(self) -> int:
        return sum(info.param_bytes for info in self.nodes)
