"""A node server's Deploy, chunked upload and Remove RPCs (split from `runtime.server`).

A deploy is admitted like a request (it holds one of the node's slots, for at most
--max-deploy-s), the stage is built by the node from a model it trusts (`runtime.deploy`), and
then served by the node's serving engine with the knobs the Deploy names, checked against the
node's own. Hops ahead are deployed onward to the next node.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import grpc

from edgeweave.errors import ServeError
from edgeweave.rpc import RateLimitedLog
from edgeweave.runtime.admission import Admission, Rejected
from edgeweave.runtime.chunk_deploy import ChunkDeployer
from edgeweave.runtime.deploy import Deployed, Deployer, DeployRefused
from edgeweave.runtime.metrics import NodeMetrics
from edgeweave.runtime.node_config import NodeConfig
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.proto import edgeweave_pb2_grpc as pb_grpc
from edgeweave.runtime.recipe import StagePackage, deploy_stream
from edgeweave.runtime.requests import Refused
from edgeweave.runtime.serving import ServingNode, serving_config, to_proto
from edgeweave.runtime.stage_store import StageStore
from edgeweave.serve import ServingConfig

log = logging.getLogger("edgeweave.runtime.node")

R = TypeVar("R")


class DeployRpcs(pb_grpc.NodeServicer):
    """Deploy, HaveChunks, PutChunks, DeployFromChunks and Remove, and how a node counts and
    answers a refusal; `runtime.server.NodeService` sets the parts they use."""

    cfg: NodeConfig
    metrics: NodeMetrics
    serving: ServingNode
    stages: StageStore
    admission: Admission
    deployer: Deployer
    chunk_deployer: ChunkDeployer
    _next: pb_grpc.NodeStub | None
    _rejections: RateLimitedLog

    def Deploy(self, request_iterator: Iterator[pb.DeployRequest],
               context: grpc.ServicerContext) -> pb.DeployReply:
        knobs: list[ServingConfig] = []

        def deploy() -> pb.DeployReply:
            done = self.deployer.deploy(request_iterator, self._next is not None,
                                        lambda head: knobs.append(self._knobs(head)))
            return self._deployed(done, knobs[0], context)

        return self._uploading("Deploy", context, deploy)

    def HaveChunks(self, request: pb.HaveChunksRequest, context: grpc.ServicerContext
                   ) -> pb.HaveChunksReply:
        try:
            return self.chunk_deployer.have(request)
        except DeployRefused as e:
            self._refuse(Refused(e.code, str(e), e.reason, logging.WARNING), context)
            raise  # unreachable: abort raises

    def PutChunks(self, request_iterator: Iterator[pb.PutChunksRequest],
                  context: grpc.ServicerContext) -> pb.PutChunksReply:
        return self._uploading("PutChunks", context,
                               lambda: self.chunk_deployer.put(request_iterator))

    def DeployFromChunks(self, request: pb.DeployFromChunksRequest,
                         context: grpc.ServicerContext) -> pb.DeployReply:
        """A stage built from uploaded chunks is served with the knobs the request names (the
        node's defaults for those it does not)."""
        return self._uploading("DeployFromChunks", context, lambda: self._deployed(
            self.chunk_deployer.deploy(request, self._next is not None),
            serving_config(request.serving), context))

    def _deployed(self, done: Deployed, knobs: ServingConfig, context: grpc.ServicerContext
                  ) -> pb.DeployReply:
        """A stage is on this node: serve it, and deploy it onward when asked to."""
        max_batch = self.serving.add(done.stage, done.name, knobs, here=done.hops_ahead == 0)
        if done.hops_ahead > 0:
            self._deploy_onward(done.stage.package(), done.name, done.hops_ahead - 1,
                                to_proto(knobs), context)
        return pb.DeployReply(digest=done.stage.digest, cached=done.cached, load_ms=done.build_ms,
                              max_batch=max_batch)

    def _uploading(self, method: str, context: grpc.ServicerContext, work: Callable[[], R]
                   ) -> R:
        """Run an upload or a stage build in an admission slot, for at most --max-deploy-s;
        refusals become their gRPC status."""
        timer = threading.Timer(self.cfg.max_deploy_s, context.cancel)  # a stalled uploader
        timer.daemon = True
        timer.start()
        try:
            with self.admission.immediate():
                return work()
        except Rejected as e:
            self._refuse(Refused(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                 f"{self.cfg.name} is at capacity ({e.why}; deploys take one of "
                                 f"{self.cfg.max_concurrency} slots); deploy again later",
                                 "overloaded", logging.INFO), context)
        except DeployRefused as e:
            self._refuse(Refused(e.code, str(e), e.reason, logging.WARNING), context)
        except grpc.RpcError:  # the uploader broke the stream off; what it sent is checked
            self._refuse(Refused(grpc.StatusCode.CANCELLED, f"{method} stream broken off",
                                 "deploy_broken", logging.INFO), context)
        finally:
            timer.cancel()
        raise AssertionError("unreachable: a refusal aborts the call")

    def _knobs(self, head: pb.DeployRequest) -> ServingConfig:
        """The serving knobs on a Deploy's first message, checked against this node's."""
        try:
            self.serving.check(head.serving)
        except ServeError as e:
            raise DeployRefused(grpc.StatusCode.INVALID_ARGUMENT, "bad_serving",
                                f"{e} (on {self.cfg.name})") from None
        return serving_config(head.serving)

    def _deploy_onward(self, package: StagePackage, name: str, hops_ahead: int,
                       serving: pb.ServingConfig, context: grpc.ServicerContext) -> None:
        """Forward the recipe and weights (the next node rebuilds the stage from its own
        registry); this node keeps its copy to finish requests if the next node fails."""
        if self._next is None:  # the deployer refused hops ahead already; never reached
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"{self.cfg.name} has no next node to deploy onward to")
            return
        try:
            self._next.Deploy(deploy_stream(package, name, hops_ahead, serving=serving),
                              timeout=self.cfg.forward_timeout_s * 4)
        except grpc.RpcError as e:
            context.abort(e.code(), f"next node refused the stage: {e.details()}")

    def Remove(self, request: pb.RemoveRequest, context: grpc.ServicerContext
               ) -> pb.RemoveReply:
        digest = request.stage_digest
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            self._refuse(Refused(grpc.StatusCode.INVALID_ARGUMENT, "stage_digest: expected 64 "
                                 "lowercase hex digits (the digest Deploy answered with)",
                                 "bad_remove"), context)
        if digest not in self.stages:
            self._refuse(Refused(grpc.StatusCode.NOT_FOUND, f"{self.cfg.name} holds no stage "
                                 f"{digest[:12]}", "unknown_stage", logging.INFO), context)
        refused = self.serving.remove(digest, "removed", "it was removed")
        removed = self.stages.remove(digest)
        log.info("%s: stage %s removed (%d queued requests refused)", self.cfg.name,
                 digest[:12], refused)
        return pb.RemoveReply(removed=removed, refused=refused)

    def note(self, r: Refused, context: grpc.ServicerContext) -> None:
        """Count and log a refusal (with the peer's address; one line per reason every few
        seconds, so a peer sending garbage cannot flood the log)."""
        self.metrics.rejected.labels(r.reason).inc()
        self._rejections.log(r.level, r.reason, "%s refused a request from %s: %s %s",
                             self.cfg.name, context.peer(), r.code.name, r.details[:300])

    def _refuse(self, r: Refused, context: grpc.ServicerContext) -> None:
        """Count, log and answer a refusal (abort raises)."""
        self.note(r, context)
        context.abort(r.code, r.details)
