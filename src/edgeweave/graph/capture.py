"""A model as a DAG of costed nodes: what the profiler measures and the planner cuts.

Capturing uses ``torch.fx`` symbolic tracing because it yields the finest graph that can still be
split into runnable stages. Some models cannot be traced (data-dependent control flow); rather
than refuse them we fall back to the model's top-level children run as a chain (checked to
reproduce the model's output), or, failing that, to one node holding the whole model, so every
model can at least be placed whole on one tier. Costs follow the rules in
:mod:`edgeweave.graph.costs`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn
from torch.fx.node import _get_qualified_name
from torch.fx.passes.shape_prop import ShapeProp
from torch.utils import _pytree as pytree

from edgeweave.errors import GraphError, ModelError
from edgeweave.graph.costs import (
    function_flops,
    module_attrs,
    module_flops,
    module_op_name,
    module_param_bytes,
    value_bytes,
)
from edgeweave.graph.zoo import load_model

#: Node kinds a :class:`NodeInfo` can have (fx ``get_attr`` and ``output`` nodes are not nodes
#: of a :class:`Graph`: the former are weights, the latter is :attr:`Graph.outputs`).
NODE_KINDS = ("placeholder", "call_module", "call_function", "call_method")

#: Seed of the random example input, so captured shapes and costs are reproducible.
EXAMPLE_SEED = 0


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


def capture(
    model: nn.Module,
    example: Sequence[int] | torch.Tensor | Sequence[torch.Tensor],
    name: str = "model",
    spec: str | None = None,
) -> Graph:
    """Capture ``model`` as a :class:`Graph`.

    ``example`` is an input shape (a random input is drawn with a fixed seed), an example
    tensor, or a sequence of tensors for a model with several inputs. The model is put in eval
    mode: the graph describes inference. ``spec`` names the model for node servers (see
    :attr:`Graph.spec`).

    A model and example on the meta device give the same graph without computing a value (a
    node captures the zoo's built-ins so: it keeps only the structure); the traced graph is
    then checked against the model on output shapes and dtypes only, so use it only for models
    whose graph does not depend on values.
    """
    inputs = _example_inputs(example, name)
    model.eval()
    with torch.no_grad():
        try:
            expected = model(*inputs)
        except Exception as exc:
            shapes = ", ".join(str(tuple(t.shape)) for t in inputs)
            raise ModelError(
                f"running model {name!r} on input(s) of shape {shapes} failed: {_first_line(exc)}"
            ) from exc
    _check_output(expected, name)
    input_shape = tuple(inputs[0].shape)

    try:
        traced = fx.symbolic_trace(_traceable_root(model, len(inputs)))
    except Exception as exc:
        reason = f"torch.fx could not trace it ({_first_line(exc)})"
    else:
        traced.eval()
        nodes, outputs, result = _describe(traced, inputs, name)
        if _same(result, expected):
            return Graph(traced, nodes, outputs, input_shape, name=name, spec=spec)
        reason = (
            "torch.fx traced it but the traced graph's output differs from the model's "
            "(tracing froze a data-dependent branch)"
        )

    module, used = _fallback_module(model, inputs, expected)
    nodes, outputs, _ = _describe(module, inputs, name)
    fallback_reason = f"{reason}; {used}"
    warnings.warn(f"capturing model {name!r}: {fallback_reason}", stacklevel=2)
    return Graph(
        module,
        nodes,
        outputs,
        input_shape,
        name=name,
        traced=False,
        fallback_reason=fallback_reason,
        spec=spec,
    )


def capture_spec(
    spec: str, weights: str | None = None, input_shape: Sequence[int] | None = None
) -> Graph:
    """Load a model specifier (see :func:`edgeweave.graph.zoo.load_model`) and capture it, at
    its default input shape unless ``input_shape`` overrides it."""
    loaded = load_model(spec, weights=weights)
    shape = loaded.input_shape if input_shape is None else tuple(input_shape)
    return capture(loaded.module, shape, name=loaded.name, spec=loaded.name)


class _LeafRoot(nn.Module):
    """Holds a bare ``torch.nn`` layer so tracing records it as one module call, as it would
    appear inside a model (with its hyper-parameters), instead of tracing into its ``forward``,
    which for some layers (batch norm's input check) is not traceable at all."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> Any:
        return self.layer(x)


def _traceable_root(model: nn.Module, n_inputs: int) -> nn.Module:
    if n_inputs == 1 and fx.Tracer().is_leaf_module(model, ""):
        return _LeafRoot(model)
    return model


def _example_inputs(
    example: Sequence[int] | torch.Tensor | Sequence[torch.Tensor], name: str
) -> tuple[torch.Tensor, ...]:
    if isinstance(example, torch.Tensor):
        return (example,)
    items = list(example)
    tensors = [item for item in items if isinstance(item, torch.Tensor)]
    if items and len(tensors) == len(items):
        return tuple(tensors)
    dims = [d for d in items if isinstance(d, int) and not isinstance(d, bool) and d > 0]
    if items and len(dims) == len(items):
        generator = torch.Generator().manual_seed(EXAMPLE_SEED)
        return (torch.randn(*dims, generator=generator),)
    raise ModelError(
        f"example for model {name!r} is {example!r}; expected an input shape of positive ints "
        "such as (1, 3, 224, 224), a tensor, or a sequence of tensors"
    )


def _check_output(output: Any, name: str) -> None:
    ok = isinstance(output, torch.Tensor) or (
        isinstance(output, (tuple, list))
        and len(output) > 0
        and all(isinstance(item, torch.Tensor) for item in output)
    )
    if not ok:
        raise ModelError(
            f"model {name!r} returned {type(output).__name__}; expected a tensor or a "
            "tuple/list of tensors (put the model in eval mode and unwrap named outputs)"
        )


def _same(a: Any, b: Any) -> bool:
    flat_a = pytree.tree_leaves(a)
    flat_b = pytree.tree_leaves(b)
    if len(flat_a) != len(flat_b):
        return False
    for x, y in zip(flat_a, flat_b, strict=True):
        if isinstance(x, torch.Tensor) != isinstance(y, torch.Tensor):
            return False
        if not isinstance(x, torch.Tensor):
            continue
        if x.shape != y.shape:
            return False
        if x.is_meta or y.is_meta:  # a structure-only capture: no values to compare
            if x.dtype != y.dtype or x.is_meta != y.is_meta:
                return False
        elif not torch.allclose(x, y, rtol=1e-4, atol=1e-5):
            return False
    return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _fallback_module(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], expected: Any
) -> tuple[fx.GraphModule, str]:
    """A chain of the top-level children if it reproduces ``expected``, else the whole model as
    one node; also says which was used and why."""
    children = [name for name, _ in model.named_children()]
    if len(inputs) != 1:
        why = f"the model takes {len(inputs)} inputs"
    elif not children:
        why = "the model has no child modules"
    else:
        graph = fx.Graph()
        value = graph.placeholder("x")
        for child in children:
            value = graph.call_module(child, (value,))
        graph.output(value)
        chain = fx.GraphModule(model, graph)
        chain.eval()
        try:
            with torch.no_grad():
                result = chain(*inputs)
        except Exception as exc:
            why = f"running its top-level children in order failed ({_first_line(exc)})"
        else:
            if _same(result, expected):
                return chain, (
                    f"used the chain of its {len(children)} top-level children "
                    f"({', '.join(children)}), checked to reproduce the model's output"
                )
            why = "its top-level children run in order do not reproduce the model's output"

    holder = nn.Module()
    holder.add_module("model", model)
    graph = fx.Graph()
    args = tuple(graph.placeholder("x") for _ in inputs)
    graph.output(graph.call_module("model", args))
    whole = fx.GraphModule(holder, graph)
    whole.eval()
    return whole, f"used the whole model as a single node because {why}"


def _describe(
    module: fx.GraphModule, inputs: tuple[torch.Tensor, ...], name: str
) -> tuple[list[NodeInfo], list[str], Any]:
    recorder = _CostRecorder(module)
    with torch.no_grad():
        try:
            result = recorder.propagate(*inputs)
        except Exception as exc:
            raise ModelError(
                f"running the captured graph of model {name!r} failed: {_first_line(exc)}"
            ) from exc
    outputs: list[str] = []

    def collect(node: fx.Node) -> fx.Node:
        outputs.append(node.name)
        return node

    for node in module.graph.nodes:
        if node.op == "output":
            fx.node.map_arg(node.args[0], collect)
    return recorder.infos, outputs, result


class _CostRecorder(ShapeProp):
    """ShapeProp that also records each node's :class:`NodeInfo` from the values it sees."""

    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module)
        self.infos: list[NodeInfo] = []
        self._out_bytes: dict[str, int] = {}

    def run_node(self, n: fx.Node) -> Any:
        if n.op in ("get_attr", "output"):
            return super().run_node(n)
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        attrs: dict[str, Any] = {}
        param_bytes = 0
        if n.op == "placeholder":
            result = super().run_node(n)
            op, target, flops = "placeholder", str(n.target), 0
        elif n.op == "call_module":
            submodule = self.fetch_attr(str(n.target))
            with _leaf_flop_counter(submodule) as counter:
                result = super().run_node(n)
            # A composite module's leaves may all be skipped (functional forward): estimate it
            # as one op then.
            flops = counter.flops or module_flops(submodule, args, result)
            op, target = module_op_name(submodule), str(n.target)
            attrs = module_attrs(submodule)
            param_bytes = module_param_bytes(submodule)
        elif n.op == "call_function":
            result = super().run_node(n)
            op = getattr(n.target, "__name__", str(n.target))
            target = _get_qualified_name(n.target)  # type: ignore[arg-type]
            flops = function_flops(op, args, kwargs, result)
        else:
            result = super().run_node(n)
            op = target = str(n.target)
            flops = function_flops(op, args, kwargs, result)

        producers = tuple(p.name for p in n.all_input_nodes if p.op != "get_attr")
        out_bytes = value_bytes(result)
        self._out_bytes[n.name] = out_bytes
        self.infos.append(
            NodeInfo(
                name=n.name,
                op=op,
                kind=n.op,
                target=target,
                inputs=producers,
                flops=int(flops),
                param_bytes=param_bytes,
                out_bytes=out_bytes,
                in_bytes=sum(self._out_bytes[p] for p in producers),
                out_shape=tuple(result.shape) if isinstance(result, torch.Tensor) else None,
                attrs=attrs,
            )
        )
        return result


class _FlopCount:
    def __init__(self) -> None:
        self.flops = 0


@contextmanager
def _leaf_flop_counter(module: nn.Module) -> Iterator[_FlopCount]:
    """For a composite module (only in fallback graphs), sum the FLOPs of the leaf modules it
    calls; functional ops inside its ``forward`` are not seen, so this is a lower bound."""
    count = _FlopCount()
    leaves = [m for m in module.modules() if m is not module and not any(m.children())]
    if not leaves:
        yield count
        return

    def hook(leaf: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        count.flops += module_flops(leaf, args, output)

    handles = [leaf.register_forward_hook(hook) for leaf in leaves]
    try:
        yield count
    finally:
        for handle in handles:
            handle.remove()
