"""A whole model as one served stage: how a device (or the load generator, playing many) asks an
edge to serve a model outright rather than a plan's stage.

A whole model is a stage holding every node of its graph, deployed through the same
content-addressed Deploy path as plan stages (recipe + weights; the node builds it from its own
registry), so everything a node checks, bounds and measures applies to it unchanged.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from edgeweave.graph import Graph, capture_spec, split
from edgeweave.runtime import tensors
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.recipe import StagePackage, deploy_stream, package_stage


@dataclass(frozen=True)
class WholeModel:
    name: str
    graph: Graph
    package: StagePackage
    input: str  # the model's input value
    outputs: tuple[str, ...]

    @property
    def digest(self) -> str:
        return self.package.digest

    def deploy_stream(self, serving: pb.ServingConfig | None = None):
        return deploy_stream(self.package, self.name, 0, serving=serving)

    def request(self, encoded: Sequence[pb.Tensor], deadline_ms: float = 0.0, priority: int = 0,
                request_id: str | None = None, grace_ms: float = 0.0) -> pb.InferRequest:
        """An InferRequest for this model on already encoded input tensors (`grace_ms`: see
        `InferRequest.grace_ms`)."""
        return pb.InferRequest(request_id=request_id or uuid.uuid4().hex[:12],
                               tensors=encoded, route=[pb.Hop(stage=self.digest,
                                                              needs=[self.input])],
                               want=list(self.outputs), deadline_ms=deadline_ms,
                               priority=priority, grace_ms=grace_ms)

    def encode(self, x: torch.Tensor, codec: str = "none") -> list[pb.Tensor]:
        return tensors.encode({self.input: x}, [self.input], codec)


def whole_model(spec: str, input_shape: Sequence[int] | None = None,
                graph: Graph | None = None) -> WholeModel:
    """Capture `spec` (at `input_shape`) and package all of it as one stage."""
    graph = graph or capture_spec(spec, input_shape=input_shape)
    stage = split(graph, {n.name: "edge" for n in graph.nodes}, ("edge",))[0]
    example = torch.zeros(graph.input_shape)
    pkg = package_stage(graph, stage, (example,))
    return WholeModel(spec, graph, pkg, stage.inputs[0], tuple(stage.outputs))
