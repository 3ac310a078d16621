"""Deploy on a node: check a recipe and its weights, stream them to disk, build the stage.

Every claim is checked before the bytes it covers are accepted, and nothing a peer sent is ever
run or unpickled:

1. the first message: a v1 TorchScript program is refused; the recipe is resolved in this
   node's own registry (:class:`~edgeweave.runtime.models.TrustedModels`) and the stage module
   built on the meta device, which gives the exact weights expected (names, dtypes, shapes) and
   so the upload's size, bounded also by ``--max-stage-mb`` and the stage budget;
2. weight slices must come in that order with exactly that metadata; their bytes are hashed and
   written to a temp file in the node's cache dir, never held in memory;
3. after the last byte the digest is checked; only then are the weights loaded (slice by slice)
   into a copy of the module, which the node traces itself on zeros of the values' shapes.
"""

from __future__ import annotations

import copy
import gc
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import grpc
import torch
from torch import nn

from edgeweave.codec import CodecError
from edgeweave.codec.wire import DTYPES, dtype_name, tensor_from_bytes
from edgeweave.errors import EdgeWeaveError, GraphError
from edgeweave.graph import Graph, stage_from_nodes
from edgeweave.runtime.chunks import is_digest
from edgeweave.runtime.models import BadModelRequest, TrustedModels, UnknownModel
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.recipe import (
    SLICE_BYTES,
    StageError,
    StageHasher,
    StageRecipe,
    WeightSpec,
    trace_stage,
    weights_of,
)
from edgeweave.runtime.stage_store import DeployedStage, StageStore

MB = 1 << 20
NO_PROGRAMS = ("this node no longer accepts stage programs (TorchScript can read and write files "
               "on the node); deploy with a current client, which sends a recipe naming a model "
               "the node builds itself plus the stage's weights as tensors")


class DeployRefused(EdgeWeaveError):
    """A Deploy the node refuses: the gRPC status, a metrics reason and the peer's message."""

    def __init__(self, code: grpc.StatusCode, reason: str, message: str):
        super().__init__(message)
        self.code, self.reason = code, reason


def invalid(reason: str, message: str) -> DeployRefused:
    return DeployRefused(grpc.StatusCode.INVALID_ARGUMENT, reason, message)


@dataclass
class Deployed:
    stage: DeployedStage
    cached: bool
    build_ms: float
    name: str
    hops_ahead: int


@dataclass
class Blueprint:
    """The stage as this node builds it, weights still on the meta device."""

    module: nn.Module
    expected: list[WeightSpec]
    specs: dict[str, tuple[str, tuple[int, ...]]]

    @property
    def nbytes(self) -> int:
        return sum(w.nbytes for w in self.expected)


class Deployer:
    """Receives Deploy streams into ``store``; see module doc."""

    def __init__(self, models: TrustedModels, store: StageStore, cache_dir: Path,
                 max_stage_bytes: int):
        self.models, self.store = models, store
        self.cache_dir = Path(cache_dir)
        self.max_stage_bytes = max_stage_bytes
        self._build_lock = threading.Lock()  # one stage loads at a time: memory stays bounded

    def deploy(self, stream: Iterator[pb.DeployRequest], can_forward: bool,
               check_knobs: Callable[[pb.DeployRequest], None] | None = None) -> Deployed:
        """Receive one stage; `check_knobs` may refuse (DeployRefused) the first message before
        anything else is read (the serving knobs are checked there)."""
        head = next(stream, None)
        check_head(head)
        assert head is not None
        if check_knobs is not None:
            check_knobs(head)
        name, hops = head.name[:120], max(0, head.hops_ahead)
        cached = self.cached(head.stage_digest, name, hops, can_forward, "Deploy message")
        if cached is not None:  # content-addressed: the rest of the stream is not needed
            return cached
        if not head.HasField("recipe"):
            raise invalid("bad_recipe", "the first Deploy message carries no recipe")
        recipe = StageRecipe.from_proto(head.recipe)
        blueprint = self.blueprint(recipe, name)
        self.check_size(blueprint.nbytes)
        return self.build_from(recipe, head.stage_digest, blueprint, _slices(head, stream),
                               name, hops)

    def cached(self, digest: str, name: str, hops: int, can_forward: bool, where: str
               ) -> Deployed | None:
        """Check a deploy's digest and onward hops; the stage if this node already has it."""
        check_digest(digest, where)
        if hops and not can_forward:
            raise DeployRefused(grpc.StatusCode.FAILED_PRECONDITION, "no_next",
                                "this node has no --next node to deploy onward to")
        stage = self.store.get(digest)
        return None if stage is None else Deployed(stage, True, 0.0, name, hops)

    def build_from(self, recipe: StageRecipe, digest: str, blueprint: Blueprint,
                   slices: Iterable[pb.WeightSlice], name: str, hops: int) -> Deployed:
        """Receive the weights (checked, hashed, to a temp file), check the digest, build."""
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, prefix="upload-", suffix=".weights")
        try:
            with os.fdopen(fd, "wb") as f:
                receive_into(slices, digest, recipe, blueprint.expected, f)
            return self._build(recipe, digest, blueprint, Path(tmp), name, hops)
        finally:
            os.unlink(tmp)

    def graph(self, model: str, input_shape: Sequence[int]) -> Graph:
        """The node's own capture of a model a peer names (refusals say what is wrong)."""
        try:
            return self.models.graph(model, input_shape)
        except UnknownModel as e:
            raise DeployRefused(grpc.StatusCode.FAILED_PRECONDITION, "unknown_model",
                                str(e)) from None
        except BadModelRequest as e:
            raise invalid("bad_recipe", str(e)) from None

    def blueprint(self, recipe: StageRecipe, name: str) -> Blueprint:
        graph = self.graph(recipe.model, recipe.input_shape)
        try:
            stage = stage_from_nodes(graph, recipe.nodes, recipe.inputs, recipe.outputs,
                                     key=name or "stage")
            specs = {v: value_spec(graph, v) for v in (*recipe.inputs, *recipe.outputs)}
            expected = [spec for spec, _ in weights_of(stage.module)]
        except (GraphError, StageError) as e:
            raise invalid("bad_recipe", f"recipe for model {recipe.model!r}: {e}") from None
        return Blueprint(stage.module, expected, specs)

    def check_size(self, nbytes: int, *more: tuple[int, str]) -> None:
        for limit, flag in ((self.max_stage_bytes, "--max-stage-mb"),
                            (self.store.budget, "--stage-budget-mb"), *more):
            if nbytes > limit:
                raise DeployRefused(grpc.StatusCode.RESOURCE_EXHAUSTED, "stage_too_large",
                                    f"the stage's weights are {nbytes / MB:.1f} MiB, more than "
                                    f"this node's {flag} ({limit / MB:g} MiB)")

    def _build(self, recipe: StageRecipe, digest: str, blueprint: Blueprint, path: Path,
               name: str, hops: int) -> Deployed:
        with self._build_lock:
            done = self.store.get(digest)  # a concurrent upload of the same stage finished
            if done is not None:
                return Deployed(done, True, 0.0, name, hops)
            start = time.perf_counter()
            self.store.make_room(blueprint.nbytes)
            module = copy.deepcopy(blueprint.module)  # meta weights: cheap, and never shared
            module.load_state_dict(load_weights(path, blueprint.expected), strict=True,
                                   assign=True)
            module.eval()
            zeros = [torch.zeros(blueprint.specs[v][1], dtype=DTYPES[blueprint.specs[v][0]])
                     for v in recipe.inputs]
            try:
                traced = trace_stage(module, zeros)
            except RuntimeError as e:
                del module
                gc.collect()  # its weights sit in fx's reference cycles
                raise invalid("bad_recipe", f"stage {name!r} does not run on its declared "
                                             f"inputs: {str(e).splitlines()[0][:200]}") from None
            stage = DeployedStage(traced, recipe.inputs, recipe.outputs, blueprint.specs,
                                  recipe, digest, tuple(weights_of(module)))
            self.store.put(stage)
            return Deployed(stage, False, (time.perf_counter() - start) * 1000.0, name, hops)


def check_digest(digest: str, where: str) -> None:
    if not is_digest(digest):
        raise invalid("bad_recipe", f"stage_digest: expected 64 lowercase hex digits "
                                     f"(sha256) on the first {where}")


def check_head(head: pb.DeployRequest | None) -> str:
    """The first message of a Deploy stream: no program, a well-formed digest; returns it."""
    if head is None:
        raise invalid("bad_recipe", "empty Deploy stream")
    _refuse_program(head)
    check_digest(head.stage_digest, "Deploy message")
    return head.stage_digest


def receive_into(slices: Iterable[pb.WeightSlice], digest: str, recipe: StageRecipe,
                 expected: list[WeightSpec], out: BinaryIO) -> None:
    """Receive weight slices whose recipe the receiver resolved itself (``expected``: the
    weights its own module has) into ``out``, and check the announced ``digest``;
    DeployRefused names the first problem."""
    got = _receive(slices, expected, StageHasher(recipe), out)
    if got != digest:
        raise invalid("bad_digest", f"stage digest mismatch: announced {digest[:12]}, "
                                     f"the recipe and weights hash to {got[:12]}")


def receive_checked(head: pb.DeployRequest, stream: Iterable[pb.DeployRequest],
                    recipe: StageRecipe, expected: list[WeightSpec], out: BinaryIO) -> None:
    """:func:`receive_into` for a whole Deploy stream (its first message is ``head``)."""
    receive_into(_slices(head, stream), head.stage_digest, recipe, expected, out)


def _refuse_program(msg: pb.DeployRequest) -> None:
    if msg.program:
        raise invalid("program", NO_PROGRAMS)


def _slices(head: pb.DeployRequest, stream: Iterable[pb.DeployRequest]
            ) -> Iterator[pb.WeightSlice]:
    yield from head.weights
    for msg in stream:
        _refuse_program(msg)
        if msg.stage_digest or msg.HasField("recipe"):
            raise invalid("bad_weights", "only the first Deploy message carries the digest "
                                          "and the recipe")
        yield from msg.weights


def _receive(slices: Iterable[pb.WeightSlice], expected: list[WeightSpec], hasher: StageHasher,
             out: BinaryIO) -> str:
    """Check each slice against ``expected`` (in order, exact metadata, contiguous, no byte too
    many), hash it and write it to ``out``; returns the digest of everything received."""
    index, got, started = 0, 0, False
    for s in slices:
        if index == len(expected):
            raise invalid("bad_weights", f"weight {s.name[:80]!r} is more than the stage's "
                                          f"{len(expected)} parameters and buffers")
        want = expected[index]
        if not started:
            if s.name != want.name:
                raise invalid("bad_weights", f"expected weight {want.name!r} next (weights "
                                              f"come in name order), got {s.name[:80]!r}")
            declared = (s.dtype, tuple(s.shape))
            if declared != (want.dtype, want.shape) or s.offset != 0:
                raise invalid("bad_weights", f"weight {want.name!r}: this node's model has "
                                              f"{want.dtype} {list(want.shape)}, the upload "
                                              f"declares {s.dtype or '-'} {list(s.shape)} "
                                              f"at offset {s.offset}")
            hasher.weight(want)
            started = True
        elif s.name != want.name or s.offset != got:
            raise invalid("bad_weights", f"weight {want.name!r} stopped at {got} of "
                                          f"{want.nbytes} bytes; next slice: {s.name[:80]!r} at "
                                          f"offset {s.offset}")
        if not s.data and want.nbytes:  # would hold the slot without progress
            raise invalid("bad_weights", f"weight {want.name!r}: an empty slice")
        if got + len(s.data) > want.nbytes:
            raise invalid("bad_weights", f"weight {want.name!r}: more than the "
                                          f"{want.nbytes} bytes of {want.dtype} "
                                          f"{list(want.shape)}")
        hasher.update(s.data)
        out.write(s.data)
        got += len(s.data)
        if got == want.nbytes:
            index, got, started = index + 1, 0, False
    if index < len(expected):
        want = expected[index]
        raise invalid("bad_weights", f"the Deploy stream ended at weight {want.name!r} ({got} "
                                      f"of {want.nbytes} bytes; {len(expected) - index} of "
                                      f"{len(expected)} weights incomplete)")
    return hasher.hexdigest()


def load_weights(path: Path, expected: list[WeightSpec]) -> dict[str, torch.Tensor]:
    """The verified weights from ``path``, read a slice at a time into their own tensors."""
    state = {}
    with open(path, "rb") as f:
        for w in expected:
            tensor = torch.empty(w.shape, dtype=DTYPES[w.dtype])
            flat = tensor.view(-1)
            per = max(1, SLICE_BYTES // tensor.element_size())
            for start in range(0, flat.numel(), per):
                n = min(per, flat.numel() - start)
                data = f.read(n * tensor.element_size())
                try:
                    flat[start:start + n] = tensor_from_bytes(data, w.dtype, [n],
                                                              context=f"weight {w.name!r}")
                except CodecError as e:
                    raise invalid("bad_weights", str(e)) from None
            state[w.name] = tensor
    return state


def value_spec(graph: Graph, name: str) -> tuple[str, tuple[int, ...]]:
    """(wire dtype, shape) of a value crossing a cut, from the node's own capture."""
    shape = graph.node(name).out_shape
    fx_node = next(n for n in graph.module.graph.nodes if n.name == name)
    meta = fx_node.meta.get("tensor_meta")
    if shape is None or not hasattr(meta, "dtype"):
        raise StageError(f"value {name!r} is not a tensor; only tensors can cross a cut")
    try:
        return dtype_name(meta.dtype, context=f"value {name!r}"), tuple(shape)
    except CodecError as e:
        raise StageError(str(e)) from None
