"""Costing a traced graph: run it once and record each node's FLOPs, bytes and shapes.

The costs are measured from the real values flowing through the graph (shape propagation), so
they match what a stage will ship at run time; the cost rules are :mod:`edgeweave.graph.costs`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import fx, nn
from torch.fx.node import _get_qualified_name
from torch.fx.passes.shape_prop import ShapeProp

from edgeweave.errors import ModelError, first_line
from edgeweave.graph.costed_graph import NodeInfo
from edgeweave.graph.costs import (
    function_flops,
    module_attrs,
    module_flops,
    module_op_name,
    module_param_bytes,
    value_bytes,
)


def describe_graph(
    module: fx.GraphModule, inputs: tuple[torch.Tensor, ...], name: str
) -> tuple[list[NodeInfo], list[str], Any]:
    """Run ``module`` on ``inputs`` once: its costed nodes, the names of its outputs and the
    result (so the caller can check the graph reproduces the model)."""
    recorder = _CostRecorder(module)
    with torch.no_grad():
        try:
            result = recorder.propagate(*inputs)
        except Exception as exc:
            raise ModelError(
                f"running the captured graph of model {name!r} failed: {first_line(exc)}"
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
