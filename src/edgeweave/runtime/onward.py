"""The rest of a request's route: forward it to the next node, or finish it here when that node
fails (the node caches the stages it forwarded at Deploy, so it can).

The next node is a peer too: its reply is checked like a request. Failures a device would
survive by running locally (the next node down, slow, overloaded, garbled) are absorbed here the
same way, and the reply is marked as a fallback.
"""

from __future__ import annotations

import math
import time

import grpc
import torch

from edgeweave.codec import CodecError
from edgeweave.runtime import tensors
from edgeweave.runtime.flight import arrive
from edgeweave.runtime.links import NodeLinks
from edgeweave.runtime.metrics import NodeMetrics
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.proto import edgeweave_pb2_grpc as pb_grpc
from edgeweave.runtime.requests import Refused
from edgeweave.runtime.stage_store import DeployedStage, StageStore

#: gRPC errors from the next node that the server absorbs by finishing the work itself.
FALLBACK_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                  grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL,
                  grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED)


class Onward:
    def __init__(self, name: str, next_stub: pb_grpc.NodeStub | None, links: NodeLinks,
                 stages: StageStore, metrics: NodeMetrics, max_decoded_bytes: float,
                 forward_timeout_s: float, max_arrival_wait_s: float):
        self.name, self.next = name, next_stub
        self.links, self.stages, self.metrics = links, stages, metrics
        self.max_decoded_bytes = max_decoded_bytes
        self.forward_timeout_s = forward_timeout_s
        self.max_arrival_wait_s = max_arrival_wait_s

    def forward(self, req: pb.InferRequest, env: dict[str, torch.Tensor], timing: pb.Timing,
                context: grpc.ServicerContext, expected: tensors.Expect, deadline: float
                ) -> tuple[list[pb.Timing], bool, str]:
        """Send the request on (with what is left of its deadline); returns the later nodes'
        timings, whether the reply is a fallback, and its note."""
        nxt = req.route[1]
        onward = pb.InferRequest(request_id=req.request_id, route=req.route[1:],
                                 want=[n for n in req.want if n not in env],
                                 return_codec=req.return_codec, priority=req.priority)
        if math.isfinite(deadline):  # the next node sees what is left of it
            onward.deadline_ms = max(1e-3, (deadline - time.monotonic()) * 1000.0)
        missing = [n for n in nxt.needs if n not in env]
        if missing:  # the route is the peer's word: it may name values nothing here made
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                          f"route[1] needs {', '.join(m[:64] for m in missing[:4])}, which "
                          f"{self.name} neither received nor computed", "bad_route")
        onward.tensors.extend(tensors.encode(env, nxt.needs, nxt.codec))
        start = time.perf_counter()
        try:
            if self.next is None:
                raise ConnectionError(f"{self.name} has no --next node")
            self.links.check(nxt, tensors.payload_bytes(onward.tensors), "the forward",
                             context.time_remaining())
            timing.uplink_ms = self.links.send(nxt, onward)
            remaining = context.time_remaining()
            timeout = self.forward_timeout_s if remaining is None else max(0.01, remaining)
            reply = self.next.Infer(onward, timeout=timeout)
            arrive(reply, max_wait_s=self.max_arrival_wait_s)
            decoded = tensors.decode(reply.tensors, expected, self.max_decoded_bytes)
        except (grpc.RpcError, ConnectionError, CodecError, ValueError) as e:
            code = e.code() if isinstance(e, grpc.RpcError) else grpc.StatusCode.UNAVAILABLE
            if isinstance(e, CodecError | ValueError):
                code = grpc.StatusCode.INTERNAL  # a garbled reply: finish here, as for a crash
            if code not in FALLBACK_CODES:
                raise Refused(code, f"next node refused: {e.details()}",  # type: ignore[union-attr]
                              "next_refused") from None
            return [], True, self.finish_locally(req, env, f"next node failed ({code.name})")
        timing.forward_ms = (time.perf_counter() - start) * 1000.0
        env.update(decoded)
        return list(reply.timings), reply.fallback, reply.note

    def finish_locally(self, req: pb.InferRequest, env: dict[str, torch.Tensor], why: str
                       ) -> str:
        # the stages first (one may be evicted meanwhile): all of them, or the note says which
        stages = [self.stages.get(hop.stage) for hop in req.route[1:] if hop.stage]
        for hop, stage in zip([h for h in req.route[1:] if h.stage], stages, strict=True):
            if stage is None:
                return f"{why}; {self.name} lacks stage {hop.stage[:12]} to fall back"
        for stage in stages:
            assert stage is not None  # every one was checked above
            run_local(stage, env)
        self.metrics.requests.labels("fallback_local").inc()
        return f"{why}; finished on {self.name}"


def run_local(stage: DeployedStage, env: dict[str, torch.Tensor]) -> None:
    with torch.inference_mode():
        result = stage.module(*(env[n] for n in stage.inputs))
    env.update(zip(stage.outputs, result, strict=True))

