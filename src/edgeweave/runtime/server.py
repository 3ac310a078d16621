"""The edge/cloud node server: runs its stage of each request and forwards the rest.

A request carries its route (which deployed stage each node runs, what each must receive, the
codec and link of each hop), so one server binary serves any plan. Everything in it is a peer's
claim and is checked before any work (`runtime.requests`): codecs, links, arrival stamps, and
each tensor's declared dtype and shape (against the stages held here, else a node-wide size
cap) before a byte is decoded, and so are its deadline and priority (`runtime.serving`).

Each deployed stage is a served model of the node's serving engine (`edgeweave.serve`, wired
in `runtime.serving`): its own bounded queue, dynamic batches, and batches chosen across models
by earliest deadline (`--policy edf`, or `fifo` for the node as it was: `--max-batch 1`). A
request the node cannot answer by its deadline is refused (DEADLINE_EXCEEDED), a full queue is
RESOURCE_EXHAUSTED, and the device answers those itself; every reply and refusal carries the
node's queued work, the load signal devices pick among edges by. Places are bounded too
(`runtime.admission`): requests computing, queued, or parked until their emulated link
delivers them. When the next node fails, the server finishes the remaining stages itself if it
holds them (`runtime.onward`) and marks the reply as a fallback. In InferStream a failed
request gets its own error reply and the stream goes on. Stages are built by the node itself
from models it trusts (`runtime.deploy`): a device sends only weights; a Deploy holds an
admission slot too. `Remove` stops serving a stage and frees it.
"""

from __future__ import annotations

import logging
import math
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import grpc
import torch

from edgeweave.codec import CodecError
from edgeweave.rpc import RateLimitedLog
from edgeweave.runtime import tensors
from edgeweave.runtime.admission import Admission, Rejected
from edgeweave.runtime.chunk_deploy import ChunkDeployer
from edgeweave.runtime.chunk_store import ChunkStore
from edgeweave.runtime.deploy import MB, Deployer
from edgeweave.runtime.flight import same_clock, stamp
from edgeweave.runtime.fronts import NodeFronts, check_fronts, request_source
from edgeweave.runtime.links import NodeLinks
from edgeweave.runtime.metrics import NodeMetrics
from edgeweave.runtime.models import TrustedModels
from edgeweave.runtime.node_config import NodeConfig
from edgeweave.runtime.node_deploy import DeployRpcs
from edgeweave.runtime.onward import FALLBACK_CODES, Onward
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.proto import edgeweave_pb2_grpc as pb_grpc
from edgeweave.runtime.requests import Malformed, Refused, check_route, check_tensors
from edgeweave.runtime.serving import (
    LOAD_KEY,
    NODE_KEY,
    ServingNode,
    deadline_of,
    grace_of,
)
from edgeweave.runtime.stage_store import StageStore
from edgeweave.serve import Answer

log = logging.getLogger("edgeweave.runtime.node")

__all__ = ["FALLBACK_CODES", "NodeConfig", "NodeService"]


class NodeService(DeployRpcs):
    """The node's gRPC service: Infer, InferStream, Health and Stats here; Deploy, the
    chunked upload and Remove in `runtime.node_deploy`."""


    def __init__(self, config: NodeConfig, metrics: NodeMetrics):
        self.cfg = config
        self.metrics = metrics
        self.serving = ServingNode(config.name, config.serving, config.dilation, metrics.serve)
        self.stages = StageStore(int(config.stage_budget_mb * MB), on_leave=self._stage_left)
        self.admission = Admission(config.max_concurrency, config.max_queue, config.max_batch)
        self.max_streams = config.max_streams
        self._streams = threading.BoundedSemaphore(self.max_streams)
        self._rejections = RateLimitedLog(log)
        self.links = NodeLinks(config.max_link_s, config.max_arrival_wait_s)
        if config.cache_dir:
            cache_dir = Path(config.cache_dir)
        else:  # removed when the service goes (or at exit)
            self._tmp = tempfile.TemporaryDirectory(prefix=f"edgeweave-{config.name}-")
            cache_dir = Path(self._tmp.name)
        self.deployer = Deployer(TrustedModels(config.models), self.stages, cache_dir,
                                 int(config.max_stage_mb * MB))
        self.fronts = NodeFronts(config.fronts, self.deployer.graph)
        check_fronts(config.fronts, self.deployer.models)
        self.serving.fronts = self.fronts
        self.chunk_deployer = ChunkDeployer(self.deployer, ChunkStore(
            cache_dir / "chunks", int(config.chunk_budget_mb * MB)))
        self._next = None
        if config.next_target:
            factory = config.channel_factory or grpc.insecure_channel
            self._next = pb_grpc.NodeStub(factory(config.next_target))
        self.onward = Onward(config.name, self._next, self.links, self.stages, metrics,
                             config.max_decoded_mb * tensors.MB, config.forward_timeout_s,
                             config.max_arrival_wait_s)
        torch.set_num_threads(config.threads)

    def close(self) -> None:
        """Refuse what is queued and stop the serving engine's workers."""
        self.serving.stop()

    def _stage_left(self, digest: str, why: str) -> None:
        self.serving.remove(digest, why, f"its stage was {why} on {self.cfg.name}")

    # ---- Infer ----------------------------------------------------------------------------

    def Infer(self, request: pb.InferRequest | Malformed, context: grpc.ServicerContext
              ) -> pb.InferReply:
        start = time.perf_counter()
        try:
            return self._serve(request, context)
        except Refused as r:
            self.note(r, context)
            context.set_trailing_metadata((
                (LOAD_KEY, f"{self.serving.queued_ms():.2f}"),
                (NODE_KEY, f"{(time.perf_counter() - start) * 1000:.2f}")))
            context.abort(r.code, r.details)
            raise  # unreachable: abort raises

    def InferStream(self, request_iterator: Iterator[pb.InferRequest | Malformed],
                    context: grpc.ServicerContext) -> Iterator[pb.InferReply]:
        """Each request of the stream is answered in order; one that fails gets a reply with
        its error (`error_code`, `error`) and the stream goes on."""
        if not self._streams.acquire(blocking=False):
            r = Refused(grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"{self.cfg.name} has {self.max_streams} streams open; retry later",
                        "overloaded", logging.INFO)
            self.note(r, context)
            context.abort(r.code, r.details)
        try:
            for request in request_iterator:
                try:
                    yield self._serve(request, context)
                except Refused as r:
                    self.note(r, context)
                    yield pb.InferReply(request_id=getattr(request, "request_id", ""),
                                        error_code=r.code.name, error=r.details,
                                        queued_ms=self.serving.queued_ms())
        finally:
            self._streams.release()

    def _serve(self, req: pb.InferRequest | Malformed, context: grpc.ServicerContext
               ) -> pb.InferReply:
        """One request: checked, admitted, arrived, computed (and forwarded). Any failure is a
        Refused naming the status to answer with."""
        if isinstance(req, Malformed):
            raise req.refusal()
        start = time.perf_counter()
        check_route(req)
        deadline = deadline_of(req, context.time_remaining(), time.monotonic())
        check_tensors(req, lambda name: self._expected(name, req.route),
                      self.cfg.max_decoded_mb * tensors.MB)
        parks = self.links.arrival_s(req, context.time_remaining()) > 0
        if req.route[0].stage and not parks:  # one the engine refuses costs no decoding
            self.serving.precheck(req.route[0].stage, deadline, req.priority, grace_of(req))
        try:
            with self.admission.admit(parks) as ticket:
                self.metrics.queue_depth.set(self.serving.engine.queued)
                if parks:
                    self.links.arrive(req)
                ticket.unpark()
                reply, answer = self._infer(req, context, deadline)
        except Rejected as e:
            raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"{self.cfg.name} is at capacity ({e.why}; at most "
                          f"{self.admission.places} computing, queued or parked); retry later",
                          "overloaded", logging.INFO) from None
        except Refused:
            raise
        except Exception as e:  # a bug, not the peer's fault: say so, keep serving
            self._rejections.log(logging.ERROR, "internal-traceback", "request %s failed",
                                 req.request_id[:64], exc_info=True)
            raise Refused(grpc.StatusCode.INTERNAL, f"{self.cfg.name} failed on the request: "
                          f"{type(e).__name__}: {str(e)[:200]}", "internal",
                          logging.ERROR) from None
        total = time.perf_counter() - start
        self.metrics.requests.labels("fallback" if reply.fallback else "ok").inc()
        self.metrics.latency.labels("total").observe(total)
        if answer is not None:
            # met: by the deadline plus the sender's grace (its answer expected in time)
            met = None if math.isinf(deadline) else time.monotonic() <= deadline + grace_of(req)
            model = self.serving.model_name(req.route[0].stage)
            self.metrics.serve.answered(model, answer.source if answer.outputs is not None
                                        else "skipped", total, met)
            front = self.fronts.get(req.route[0].stage)
            if front is not None:
                self.metrics.serve.fronted(model, answer.source, front.cache is not None,
                                           len(reply.prefetched))
        return reply

    def _expected(self, name: str, route: Iterable[pb.Hop]) -> tensors.Spec | None:
        """The (dtype, shape) a stage on `route` held here takes or makes as `name`, or None.
        Stages deployed without `specs` have no expectation (the node-wide --max-decoded-mb cap
        applies to their values)."""
        for hop in route:
            specs = getattr(self.stages.get(hop.stage), "specs", None)
            if specs and name in specs:
                return specs[name]
        return None

    def _infer(self, req: pb.InferRequest, context: grpc.ServicerContext, deadline: float
               ) -> tuple[pb.InferReply, Answer | None]:
        hop = req.route[0]
        t0 = time.perf_counter()
        expected = lambda n: self._expected(n, req.route)  # noqa: E731
        try:
            env = tensors.decode(req.tensors, expected, self.cfg.max_decoded_mb * tensors.MB)
        except (CodecError, ValueError) as e:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"bad tensor: {e}", "bad_tensor"
                          ) from None
        decode_ms = (time.perf_counter() - t0) * 1000.0
        missing = [n for n in hop.needs if n not in env]
        if missing:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"request lacks values this node "
                          f"needs: {', '.join(missing)[:300]}", "missing_value")
        bytes_in = tensors.payload_bytes(req.tensors)
        self.metrics.bytes.labels("in").inc(bytes_in)
        source = request_source(req.device, context.peer())
        answer = self._run(hop.stage, env, deadline, req.priority, source, grace_of(req))
        timing = pb.Timing(node=self.cfg.name, role=self.cfg.role, decode_ms=decode_ms,
                           bytes_in=bytes_in)
        if answer is not None:
            timing.queue_ms, timing.compute_ms = answer.queue_s * 1e3, answer.compute_s * 1e3
        if answer is not None and answer.outputs is None:  # a front stage skipped the model
            front = self.fronts.get(hop.stage)
            return pb.InferReply(request_id=req.request_id, timings=[timing],
                                 note=f"skipped by {answer.source}", answered_by=answer.source,
                                 filter_state=front.filter_state(source) if front else "",
                                 filter_step=answer.step,
                                 queued_ms=self.serving.queued_ms()), answer
        later: list[pb.Timing] = []
        fallback, note = False, ""
        if len(req.route) > 1:
            later, fallback, note = self.onward.forward(req, env, timing, context, expected,
                                                        deadline)
        t1 = time.perf_counter()
        out = tensors.encode(env, [n for n in req.want if n in env], req.return_codec)
        timing.encode_ms = (time.perf_counter() - t1) * 1000.0
        timing.bytes_out = tensors.payload_bytes(out)
        self.metrics.bytes.labels("out").inc(timing.bytes_out)
        reply = pb.InferReply(request_id=req.request_id, tensors=out, fallback=fallback,
                              note=note, queued_ms=self.serving.queued_ms(),
                              batch=answer.batch if answer is not None else 0)
        self._front_reply(reply, hop.stage, answer, source, req.prefetch)
        self.links.check(hop, timing.bytes_out, "the reply", context.time_remaining())
        if same_clock(req.clock) and hop.shape_bandwidth and hop.link_mbps > 0:
            # the sender shares our clock: reply at once, stamped, as it sent to us
            timing.downlink_ms = stamp(reply, self.links.link(hop, "down"), timing.bytes_out)
        else:
            timing.downlink_ms = self.links.shape(hop, timing.bytes_out, "down")
        reply.timings.extend([timing, *later])  # copies: `timing` is complete only now
        return reply, answer

    def _front_reply(self, reply: pb.InferReply, digest: str, answer: Answer | None,
                     source: str, wanted: int) -> None:
        """Who answered, and the cache entries pushed to the device (Precog), when the stage
        has front stages."""
        front = self.fronts.get(digest)
        if front is None or answer is None or answer.outputs is None:
            return
        reply.answered_by = answer.source
        reply.filter_state = front.filter_state(source)
        pushed = front.push(source, answer.outputs[0], wanted)
        if pushed:
            reply.prefetched.extend(pushed)
            reply.prefetch_embed = front.embed

    def _run(self, digest: str, env: dict[str, torch.Tensor], deadline: float, priority: int,
             source: str, grace: float = 0.0) -> Answer | None:
        """Run this node's stage through the serving engine (None: the route runs nothing
        here)."""
        if not digest:
            return None
        stage = self.stages.get(digest)
        if stage is None:
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION, f"stage {digest[:12]} is not "
                          f"deployed on {self.cfg.name}; Deploy first", "unknown_stage",
                          logging.INFO)
        missing = [name for name in stage.inputs if name not in env]
        if missing:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                          f"stage input {missing[0]!r} missing", "missing_value")
        answer = self.serving.run(stage, tuple(env[n] for n in stage.inputs), deadline,
                                  priority, source, grace)
        if answer.outputs is not None:
            env.update(zip(stage.outputs, answer.outputs, strict=True))
            self.metrics.latency.labels("compute").observe(answer.compute_s)
        return answer

    # ---- Health / Stats -------------------------------------------------------------------

    def Health(self, request: pb.HealthRequest, context: grpc.ServicerContext) -> pb.HealthReply:
        queued, per_worker_s = self.serving.engine.load()
        return pb.HealthReply(role=self.cfg.role, status="serving", stages=len(self.stages),
                              inflight=self.admission.held, next=self.cfg.next_target or "",
                              queued=queued, queued_ms=per_worker_s * 1000.0)

    def Stats(self, request: pb.StatsRequest, context: grpc.ServicerContext) -> pb.StatsReply:
        return pb.StatsReply(values=self.metrics.snapshot())
