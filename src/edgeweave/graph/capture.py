"""A model as a DAG of costed nodes: what the profiler measures and the planner cuts.

Capturing uses ``torch.fx`` symbolic tracing because it yields the finest graph that can still be
split into runnable stages. Some models cannot be traced (data-dependent control flow); rather
than refuse them we fall back to the model's top-level children run as a chain (checked to
reproduce the model's output), or, failing that, to one node holding the whole model, so every
model can at least be placed whole on one tier. Costs follow the rules in
:mod:`edgeweave.graph.costs`.

The parts: :mod:`~edgeweave.graph.costed_graph` (the ``Graph`` and ``NodeInfo`` data),
:mod:`~edgeweave.graph.cost_recorder` (costing a traced graph) and
:mod:`~edgeweave.graph.trace_fallback` (the chain and whole-model fallbacks).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import fx, nn

from edgeweave.errors import ModelError, first_line
from edgeweave.graph.cost_recorder import describe_graph
from edgeweave.graph.costed_graph import NODE_KINDS, Graph, NodeInfo
from edgeweave.graph.trace_fallback import fallback_module, same_output
from edgeweave.graph.zoo import load_model

# the data classes live in costed_graph; callers have always imported them from here
__all__ = ["EXAMPLE_SEED", "NODE_KINDS", "Graph", "NodeInfo", "capture", "capture_spec"]

#: Seed of the random example input, so captured shapes and costs are reproducible.
EXAMPLE_SEED = 0


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
                f"running model {name!r} on input(s) of shape {shapes} failed: {first_line(exc)}"
            ) from exc
    _check_output(expected, name)
    input_shape = tuple(inputs[0].shape)

    try:
        traced = fx.symbolic_trace(_traceable_root(model, len(inputs)))
    except Exception as exc:
        reason = f"torch.fx could not trace it ({first_line(exc)})"
    else:
        traced.eval()
        nodes, outputs, result = describe_graph(traced, inputs, name)
        if same_output(result, expected):
            return Graph(traced, nodes, outputs, input_shape, name=name, spec=spec)
        reason = (
            "torch.fx traced it but the traced graph's output differs from the model's "
            "(tracing froze a data-dependent branch)"
        )

    module, used = fallback_module(model, inputs, expected)
    nodes, outputs, _ = describe_graph(module, inputs, name)
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

