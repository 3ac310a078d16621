"""A stage as nodes receive it: a recipe they build from models they trust, plus raw weights.

Why not ship code: a TorchScript program may call ``torch.from_file(path, shared=True)`` in its
forward (reading, overwriting or creating any file the server's user can) and may run code
while it loads (``__setstate__``), so no check of a loaded program comes early enough (issue 12).
Instead a node builds each stage itself: the recipe names a model from the node's own registry
(:mod:`edgeweave.runtime.models`), the input shape it was captured at and which of the captured
graph's nodes the stage runs; the stage's parameters and buffers then arrive as plain tensors
(:mod:`edgeweave.codec.wire` bytes) that the node checks against its own module.

The digest is sha256 over the canonical recipe and every weight's name, dtype, shape and bytes
in name order (:class:`StageHasher`), computed the same way by the device and by every node;
routes name stages by it, so re-deploying the same stage is a cache hit. Both sides run a stage
as a program traced on their own side (:func:`trace_stage`), as the profiler times it.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgeweave.codec import CodecError
from edgeweave.codec.wire import dtype_name, nbytes_for, tensor_to_bytes
from edgeweave.errors import EdgeWeaveError
from edgeweave.graph import Graph, Stage
from edgeweave.runtime.proto import edgeweave_pb2 as pb

#: Weight bytes per Deploy message: far below the 64 MiB message limit, large enough that the
#: per-message overhead is noise.
SLICE_BYTES = 2 << 20
_DOMAIN = b"edgeweave-stage/1\n"


class StageError(EdgeWeaveError):
    """A stage cannot be described, packaged or traced for deployment."""


@dataclass(frozen=True)
class StageRecipe:
    """What a node needs, besides weights, to build a stage from a model it trusts."""

    model: str
    input_shape: tuple[int, ...]
    nodes: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def canonical(self) -> bytes:
        return json.dumps({"model": self.model, "input_shape": list(self.input_shape),
                           "nodes": list(self.nodes), "inputs": list(self.inputs),
                           "outputs": list(self.outputs)},
                          sort_keys=True, separators=(",", ":")).encode()

    def to_proto(self) -> pb.StageRecipe:
        return pb.StageRecipe(model=self.model, input_shape=list(self.input_shape),
                              nodes=list(self.nodes), inputs=list(self.inputs),
                              outputs=list(self.outputs))

    @classmethod
    def from_proto(cls, msg: pb.StageRecipe) -> StageRecipe:
        return cls(msg.model, tuple(msg.input_shape), tuple(msg.nodes), tuple(msg.inputs),
                   tuple(msg.outputs))


@dataclass(frozen=True)
class WeightSpec:
    """One parameter or buffer as it crosses the wire: its state-dict name, dtype and shape."""

    name: str
    dtype: str  # an edgeweave.codec.wire dtype name
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return nbytes_for(self.dtype, self.shape, context=f"weight {self.name!r}")


def weights_of(module: nn.Module) -> list[tuple[WeightSpec, torch.Tensor]]:
    """A module's parameters and buffers in name order (also for a module on the meta device:
    a node lists what it expects before any byte arrives)."""
    out = []
    for name, tensor in sorted(module.state_dict().items()):
        try:
            dtype = dtype_name(tensor.dtype, context=f"weight {name!r}")
        except CodecError as e:
            raise StageError(str(e)) from None
        out.append((WeightSpec(name, dtype, tuple(tensor.shape)), tensor))
    return out


class StageHasher:
    """The stage digest, fed incrementally: the recipe, then per weight in name order its
    header (:meth:`weight`) and its raw bytes (:meth:`update`)."""

    def __init__(self, recipe: StageRecipe):
        self._h = hashlib.sha256(_DOMAIN)
        self._field(recipe.canonical())

    def _field(self, data: bytes) -> None:
        self._h.update(len(data).to_bytes(8, "little") + data)

    def weight(self, spec: WeightSpec) -> None:
        self._field(json.dumps([spec.name, spec.dtype, list(spec.shape)]).encode())

    def update(self, data: bytes) -> None:
        self._h.update(data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def tensor_pieces(tensor: torch.Tensor, max_bytes: int) -> Iterator[tuple[int, bytes]]:
    """``(byte offset, bytes)`` pieces of a tensor's wire bytes, at most ``max_bytes`` each (at
    least one element), without materialising the whole tensor's bytes at once."""
    flat = tensor.detach().reshape(-1)
    size = flat.element_size()
    if flat.numel() == 0:
        yield 0, b""
        return
    per = max(1, max_bytes // size)
    for start in range(0, flat.numel(), per):
        yield start * size, tensor_to_bytes(flat[start:start + per])[0]


@dataclass(frozen=True)
class StagePackage:
    """A stage ready to deploy: its recipe, its weights in name order and its digest."""

    recipe: StageRecipe
    weights: tuple[tuple[WeightSpec, torch.Tensor], ...]
    digest: str

    @property
    def nbytes(self) -> int:
        return sum(spec.nbytes for spec, _ in self.weights)


def package(recipe: StageRecipe, weights: Sequence[tuple[WeightSpec, torch.Tensor]]
            ) -> StagePackage:
    hasher = StageHasher(recipe)
    for spec, tensor in weights:
        hasher.weight(spec)
        for _, data in tensor_pieces(tensor, SLICE_BYTES):
            hasher.update(data)
    return StagePackage(recipe, tuple(weights), hasher.hexdigest())


def package_stage(graph: Graph, stage: Stage, example_args: Sequence[Any]) -> StagePackage:
    """The device side: describe ``stage`` of ``graph`` for nodes, with its weights."""
    if graph.spec is None:
        raise StageError(
            f"model {graph.name!r} was captured from an in-memory module, so node servers "
            "cannot build its stages: capture it from a model specifier they know (a zoo name "
            "such as resnet18, or a model file their operator installs with `edgeweave serve "
            "--model path/to/file.py:factory`), or pass capture(..., spec=NAME) naming it")
    _check_tensors(stage, example_args)
    recipe = StageRecipe(graph.spec, tuple(graph.input_shape), tuple(stage.nodes),
                         tuple(stage.inputs), tuple(stage.outputs))
    return package(recipe, weights_of(stage.module))


def deploy_stream(pkg: StagePackage, name: str, hops_ahead: int,
                  slice_bytes: int = SLICE_BYTES, serving: pb.ServingConfig | None = None
                  ) -> Iterator[pb.DeployRequest]:
    """A package as a Deploy stream: digest, recipe (and the serving knobs) first, then weight
    slices in name order, several small tensors to a message and a large one over several."""
    msg = pb.DeployRequest(stage_digest=pkg.digest, recipe=pkg.recipe.to_proto(), name=name,
                           hops_ahead=hops_ahead, serving=serving)
    used = 0
    for spec, tensor in pkg.weights:
        for offset, data in tensor_pieces(tensor, slice_bytes):
            if msg.weights and used + len(data) > slice_bytes:
                yield msg
                msg, used = pb.DeployRequest(hops_ahead=hops_ahead), 0
            first = offset == 0
            msg.weights.append(pb.WeightSlice(
                name=spec.name, dtype=spec.dtype if first else "",
                shape=list(spec.shape) if first else [], offset=offset, data=data))
            used += len(data)
    yield msg


def trace_stage(module: nn.Module, example_args: Sequence[Any]) -> torch.jit.ScriptModule:
    """``module`` as a TorchScript program traced on ``example_args``: how every tier runs a
    stage (and the profiler times a model), built locally from trusted code only."""
    args = tuple(example_args)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice, once per stage
        traced = torch.jit.trace(module, args, check_trace=False)
    traced.eval()
    return traced


def _check_tensors(stage: Stage, args: Sequence[Any]) -> None:
    if not all(isinstance(a, torch.Tensor) for a in args):
        kinds = ", ".join(type(a).__name__ for a in args)
        raise StageError(
            f"stage {stage.key!r} receives non-tensor values ({kinds}); only tensors can cross "
            "a cut on the wire: move the cut so it does not split shape arithmetic"
        )
