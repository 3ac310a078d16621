"""A cluster worker's Setup: the executor it builds from a plan's partition and weights.

The peer sends plain data (runtime.cluster.blueprint) and the weights; everything is built
from this worker's own trusted registry (:class:`~edgeweave.runtime.models.TrustedModels`,
never a file a peer names). The spec is checked before a byte of weights is read: a known
method, at most MAX_LAYERS split layers, the tile regions equal to the ones this worker
computes for its model, and the weights' recipe and total size; the weights are then
streamed to a temporary file and each checked against the layer it belongs to.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import torch

from edgeweave.errors import GraphError
from edgeweave.runtime.cluster.blueprint import (
    MAX_LAYERS,
    METHODS,
    LayerSpec,
    block_recipe,
    check_layer,
    layer_recipe,
    layer_weights,
    module_weights,
    stage_grids,
    stages_digest,
)
from edgeweave.runtime.cluster.executors import TileStages, with_weights
from edgeweave.runtime.cluster.layer_exec import LayerExecutor
from edgeweave.runtime.deploy import DeployRefused, check_head, load_weights, receive_checked
from edgeweave.runtime.models import BadModelRequest, TrustedModels, UnknownModel
from edgeweave.runtime.proto import cluster_pb2 as cpb
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.recipe import StageRecipe, WeightSpec
from edgeweave.runtime.requests import Refused

MB = 1 << 20


def invalid(details: str, reason: str = "bad_setup") -> Refused:
    return Refused(grpc.StatusCode.INVALID_ARGUMENT, details, reason)


def build_executor(stream: Iterator[cpb.SetupRequest], models: TrustedModels, cache_dir: Path,
                   max_setup_mb: float) -> tuple[TileStages | LayerExecutor, str, int]:
    """Build the executor a Setup stream asks for: the spec and weights' head first, the
    weights checked against what this worker's own model needs, then streamed to a file in
    ``cache_dir`` and loaded. Returns the executor, the weights' digest and their bytes."""
    head = next(stream, None)
    if head is None or not head.HasField("spec") or not head.HasField("weights"):
        raise invalid("the first Setup message must carry the spec and the weights' head")
    spec = head.spec
    try:
        digest = check_head(head.weights)
        given = StageRecipe.from_proto(head.weights.recipe)
        graph = models.graph(given.model, given.input_shape)
        recipe, expected = _expect(graph, spec, given)
        if recipe != given:
            raise invalid("the weights' recipe does not name the layers the spec runs "
                           f"(expected nodes {list(recipe.nodes)[:4]}...)")
        nbytes = sum(w.nbytes for w in expected)
        if nbytes > max_setup_mb * MB:
            raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, f"the weights are "
                          f"{nbytes / MB:.1f} MiB, more than this worker's --max-setup-mb "
                          f"({max_setup_mb:g})", "too_large")
        state = _receive(head, stream, recipe, expected, cache_dir)
        return _executor(graph, spec, state), digest, nbytes
    except UnknownModel as e:
        raise Refused(grpc.StatusCode.FAILED_PRECONDITION, str(e), "unknown_model") from None
    except (BadModelRequest, GraphError) as e:
        raise invalid(str(e)) from None
    except DeployRefused as e:
        raise Refused(e.code, str(e), e.reason) from None

def _expect(graph, spec: cpb.ClusterSpec, given: StageRecipe
            ) -> tuple[StageRecipe, list[WeightSpec]]:
    """The recipe and weights this worker's own model says the spec needs; refuses a
    spec whose tiles differ from the ones it computes."""
    if spec.method not in METHODS:
        raise invalid(f"method {spec.method[:40]!r}: expected one of {', '.join(METHODS)}")
    if spec.method == "fused-tiles":
        ends, grids, reuse = stage_grids(spec)
        stages = TileStages(graph, ends, grids, reuse)
        if stages_digest([s.tiles for s in stages.stages]) != spec.regions_digest:
            what = ", ".join(f"fused depth {d}, grid {r}x{c}" for d, (r, c) in
                             zip(ends, grids, strict=True))
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION,
                          f"the plan's tile regions for {what} differ from the ones this "
                          "worker computes for its model; re-plan with the same model and "
                          "EdgeWeave version", "regions_differ")
        recipe = block_recipe(given.model, given.input_shape, stages.blocks)
        names = [n for b in stages.blocks for n in b.names]
        return recipe, [w for w, _ in module_weights(graph, names)]
    if len(spec.layers) > MAX_LAYERS:
        raise invalid(f"{len(spec.layers)} split layers; a worker takes at most {MAX_LAYERS}")
    layers = [check_layer(graph, LayerSpec.from_proto(x)) for x in spec.layers]
    recipe = layer_recipe(given.model, given.input_shape, layers)
    return recipe, [w for w, _ in layer_weights(graph, layers)]

def _receive(head: cpb.SetupRequest, stream: Iterator[cpb.SetupRequest], recipe: StageRecipe,
             expected: list[WeightSpec], cache_dir: Path) -> dict[str, torch.Tensor]:
    def weights() -> Iterator[pb.DeployRequest]:
        for msg in stream:
            if msg.HasField("spec"):
                raise invalid("only the first Setup message carries the spec")
            yield msg.weights

    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix="setup-", suffix=".weights")
    try:
        with os.fdopen(fd, "wb") as f:
            receive_checked(head.weights, weights(), recipe, expected, f)
        return load_weights(Path(tmp), expected)
    finally:
        os.unlink(tmp)

def _executor(graph, spec: cpb.ClusterSpec, state: dict[str, torch.Tensor]
              ) -> TileStages | LayerExecutor:
    plain = {k: v for k, v in state.items() if not k.endswith("]")}
    with_w = with_weights(graph, plain)
    if spec.method == "fused-tiles":
        return TileStages(with_w, *stage_grids(spec))
    slices = {k: v for k, v in state.items() if k.endswith("]")}
    return LayerExecutor(with_w, [LayerSpec.from_proto(x) for x in spec.layers], slices)
