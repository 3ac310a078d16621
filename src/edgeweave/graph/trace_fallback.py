"""What capture falls back to when torch.fx cannot trace a model faithfully.

First the model's top-level children run as a chain (kept only if it reproduces the model's
output), else the whole model as one node, so every model can at least be placed whole on a tier.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn
from torch.utils import _pytree as pytree

from edgeweave.errors import first_line


def same_output(a: Any, b: Any) -> bool:
    """True when two model outputs have the same structure and allclose tensors."""
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


def fallback_module(
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
            why = f"running its top-level children in order failed ({first_line(exc)})"
        else:
            if same_output(result, expected):
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
