"""The models a node builds stages from: its own registry, never a file a peer names.

The registry holds the zoo's built-ins, Edgent's digits branchy net (``digits-branchy:side=S,
width=W``, :func:`edgeweave.plan.branchy.branchy_spec`; it lives in the plan layer, above the
zoo, because its exits are adapt's) and the models the operator installs
when starting the node (``edgeweave serve --model path/to/net.py:factory``, repeatable), which
devices name by their model name (``net:factory``, as :func:`edgeweave.graph.capture_spec`
records it). A specifier that looks like a path is refused outright: importing it would run
code a peer chose.

A capture is cached per (model, input shape) with its weights on the meta device: every
stage built from it gets its own weights from the peer, so the cache holds structure only. A
built-in is built and captured on the meta device outright (no random initialisation, no
forward pass: vgg16's capture drops from seconds to milliseconds); the operator's models and the
parametrised ones are built and captured for real, then their weights moved to meta. The
peer also picks the input shape, so it may not exceed the model's default input (rank and
element count): activations, and so capture memory, stay what the operator expects.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import nn

from edgeweave.errors import EdgeWeaveError, ModelError, PlanError
from edgeweave.graph import (
    Graph,
    ModelSpec,
    capture,
    list_models,
    model_factory,
    model_skeleton,
    names_a_file,
)

#: Captures kept (structure only, weights on the meta device).
MAX_GRAPHS = 8
INSTALL_HINT = ("the node's operator must install it with `edgeweave serve --model "
                "path/to/file.py:factory`, and the device name it by its model name "
                "(file stem:factory)")


class UnknownModel(EdgeWeaveError):
    """The model is not in this node's registry (the operator may install it)."""


class BadModelRequest(EdgeWeaveError):
    """The peer's model request is malformed or out of bounds."""


class TrustedModels:
    """See module doc. ``installed`` are the operator's specifiers (``path.py:factory``)."""

    def __init__(self, installed: Sequence[str] = ()):
        self._builtins = {name for name, _ in list_models()}
        self._installed: dict[str, Callable[[], ModelSpec]] = {}
        for spec in installed:
            try:
                factory = model_factory(spec)
                self._installed[factory().name] = factory
            except ModelError as e:
                raise ModelError(f"--model {spec}: {e}") from None
        self._graphs: OrderedDict[tuple[str, tuple[int, ...]], Graph] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        from edgeweave.plan.branchy import BRANCHY_MODEL
        from edgeweave.serve.stems.spec import STEM_MODEL

        return [*sorted(self._builtins), f"{BRANCHY_MODEL}:side=S,width=W",
                f"{STEM_MODEL}:side=S,width=W,heads=C@D+...", *sorted(self._installed)]

    def knows(self, spec: str) -> bool:
        """``spec`` is a built-in or an installed model (not a parametrised one)."""
        return spec in self._builtins or spec in self._installed

    def model(self, spec: str) -> tuple[nn.Module, tuple[int, ...]]:
        """A fresh instance of ``spec`` (its own initial weights) and its default input."""
        return self._build(spec)

    def graph(self, spec: str, input_shape: Sequence[int]) -> Graph:
        """The captured graph of ``spec`` at ``input_shape``; UnknownModel or BadModelRequest
        name what is wrong. Captures run one at a time (each holds a whole model briefly)."""
        shape = tuple(int(d) for d in input_shape)
        key = (spec, shape)
        with self._lock:
            if key in self._graphs:
                self._graphs.move_to_end(key)
                return self._graphs[key]
            skeleton = model_skeleton(spec) if spec in self._builtins else None
            module, default = ((skeleton.module, skeleton.input_shape) if skeleton
                               else self._build(spec))
            _check_shape(spec, shape, default)
            example = torch.empty(shape, device="meta") if skeleton else shape
            try:
                graph = capture(module, example, name=spec, spec=spec)
            except EdgeWeaveError as e:
                raise BadModelRequest(f"model {_short(spec)} at input_shape {list(shape)}: "
                                      f"{e}") from None
            _weights_to_meta(graph.module)
            self._graphs[key] = graph
            while len(self._graphs) > MAX_GRAPHS:
                self._graphs.popitem(last=False)
            return graph

    def _build(self, spec: str) -> tuple[nn.Module, tuple[int, ...]]:
        if names_a_file(spec):
            raise BadModelRequest(f"model {_short(spec)} looks like a file path; nodes never "
                                  f"import a file a device names: {INSTALL_HINT}")
        if spec in self._installed:
            made = self._installed[spec]()
            return made.module, made.input_shape
        if spec in self._builtins:
            made = model_factory(spec)()
            return made.module, made.input_shape
        # deferred: the plan layer pulls in matplotlib and the datasets (~100 MB per node)
        from edgeweave.plan.branchy import BRANCHY_MODEL, branchy_from_spec

        if spec.partition(":")[0] == BRANCHY_MODEL:
            try:
                return branchy_from_spec(spec)
            except PlanError as e:
                raise BadModelRequest(str(e)) from None
        from edgeweave.serve.stems.errors import TenancyError
        from edgeweave.serve.stems.spec import STEM_MODEL, forest_from_spec

        if spec.partition(":")[0] == STEM_MODEL:  # tenants sharing one stem (Mainstream)
            try:
                return forest_from_spec(spec)
            except TenancyError as e:
                raise BadModelRequest(str(e)) from None
        raise UnknownModel(f"this node has no model {_short(spec)} (it knows "
                           f"{', '.join(self.names)}); {INSTALL_HINT}")


def _check_shape(spec: str, shape: tuple[int, ...], default: tuple[int, ...]) -> None:
    if (len(shape) != len(default) or any(d < 1 for d in shape)
            or math.prod(shape) > math.prod(default)):
        raise BadModelRequest(
            f"input_shape {list(shape)}: this node captures {_short(spec)} at no more than its "
            f"default input {list(default)} (same number of dims, at most as many elements)")


def _weights_to_meta(module: nn.Module) -> None:
    """Free a captured model's weights, keeping names, dtypes and shapes (the meta device).
    Non-persistent buffers stay: they are not weights a peer sends, they come with the code."""
    for sub in module.modules():
        for name, p in list(sub._parameters.items()):
            if p is not None:
                sub._parameters[name] = nn.Parameter(p.to("meta"), requires_grad=p.requires_grad)
        for name, b in list(sub._buffers.items()):
            if b is not None and name not in sub._non_persistent_buffers_set:
                sub._buffers[name] = b.to("meta")


def _short(spec: str) -> str:
    return repr(spec if len(spec) <= 120 else spec[:117] + "...")
