"""The edge/cloud node server: runs its stage of each request and forwards the rest.

A request carries its route (which deployed stage each node runs, what each must receive, the
codec and link of each hop), so one server binary serves any plan. Everything in it is a peer's
claim and is checked before any work (`runtime.requests`): codecs, links, arrival stamps, and
each tensor's declared dtype and shape (against the stages held here, else a node-wide size
cap) before a byte is decoded. Admission is bounded (`runtime.admission`): `max_concurrency`
requests compute at once, `max_queue` more may wait (for a slot or their emulated link), and
anything beyond is refused with RESOURCE_EXHAUSTED. When the next node fails, the server
finishes the remaining stages itself if it holds them (Deploy caches forwarded stages on the
way) and marks the reply as a fallback. In InferStream a failed request gets its own error
reply and the stream goes on. Stages are built by the node itself
from models it trusts (`runtime.deploy`): a device sends only weights; a Deploy holds an
admission slot too.
"""

from __future__ import annotations

import logging
import math
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
import torch

from edgeweave.codec import CodecError
from edgeweave.rpc import RateLimitedLog
from edgeweave.runtime import dilation, tensors
from edgeweave.runtime.admission import Admission, Rejected
from edgeweave.runtime.chunk_deploy import ChunkDeployer
from edgeweave.runtime.chunk_store import ChunkStore
from edgeweave.runtime.deploy import MB, Deployed, Deployer, DeployRefused
from edgeweave.runtime.flight import arrive, same_clock, stamp
from edgeweave.runtime.links import NodeLinks
from edgeweave.runtime.metrics import NodeMetrics
from edgeweave.runtime.models import TrustedModels
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.proto import edgeweave_pb2_grpc as pb_grpc
from edgeweave.runtime.recipe import StagePackage, deploy_stream
from edgeweave.runtime.requests import Malformed, Refused, check_route, check_tensors
from edgeweave.runtime.stage_store import DeployedStage, StageStore

log = logging.getLogger("edgeweave.runtime.node")

R = TypeVar("R")

#: gRPC errors from the next node that the server absorbs by finishing the work itself.
FALLBACK_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                  grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL,
                  grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED)


@dataclass
class NodeConfig:
    role: str
    name: str
    next_target: str | None = None
    max_concurrency: int = 4
    max_queue: int = 16
    dilation: float = 1.0  # emulate hardware slower than this host by stretching compute
    threads: int = 1
    forward_timeout_s: float = 30.0
    max_stage_mb: float = 2048.0  # the largest stage (weights) one Deploy may upload
    stage_budget_mb: float = 1024.0  # deployed stages' weights; least recently used evicted
    chunk_budget_mb: float = 2048.0  # uploaded weight chunks on disk; least recently used go
    models: tuple[str, ...] = ()  # operator-installed models (path/to/file.py:factory)
    cache_dir: str | None = None  # Deploy's temp files (default: a fresh temp dir)
    max_deploy_s: float = 900.0  # the longest a Deploy stream may hold a slot
    # the longest one emulated link crossing may hold a request: a request names its own link
    # rate and arrival stamp, and a bad one must not park a server thread for hours
    max_link_s: float = 120.0
    # the longest an arrival stamp on our clock may hold a request (a stamp is the sender's
    # word); waited out only after admission, so parked requests are bounded in number too
    max_arrival_wait_s: float = 30.0
    # decoded bytes a request's tensors may declare when no stage here says what to expect
    max_decoded_mb: float = 128.0
    channel_factory: object = None  # callable(target) -> grpc.Channel (auth, TLS)

    @property
    def max_streams(self) -> int:
        """InferStreams open at once: each holds a server thread while it is open."""
        return self.max_concurrency + self.max_queue

    @property
    def workers(self) -> int:
        """Server threads: every place admission grants, every open stream, and spare ones so
        Health, Stats and refusals never wait behind held requests."""
        return self.max_concurrency + self.max_queue + self.max_streams + 8




class NodeService(pb_grpc.NodeServicer):
    def __init__(self, config: NodeConfig, metrics: NodeMetrics):
        self.cfg = config
        self.metrics = metrics
        self.stages = StageStore(int(config.stage_budget_mb * MB))
        self.admission = Admission(config.max_concurrency, config.max_queue)
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
        self.chunk_deployer = ChunkDeployer(self.deployer, ChunkStore(
            cache_dir / "chunks", int(config.chunk_budget_mb * MB)))
        self._next = None
        if config.next_target:
            factory = config.channel_factory or grpc.insecure_channel
            self._next = pb_grpc.NodeStub(factory(config.next_target))
        torch.set_num_threads(config.threads)

    # ---- Deploy ---------------------------------------------------------------------------

    def Deploy(self, request_iterator: Iterator[pb.DeployRequest],
               context: grpc.ServicerContext) -> pb.DeployReply:
        return self._uploading("Deploy", context, lambda: self._deployed(
            self.deployer.deploy(request_iterator, self._next is not None), context))

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
        return self._uploading("DeployFromChunks", context, lambda: self._deployed(
            self.chunk_deployer.deploy(request, self._next is not None), context))

    def _deployed(self, done: Deployed, context: grpc.ServicerContext) -> pb.DeployReply:
        if done.hops_ahead > 0:
            self._deploy_onward(done.stage.package(), done.name, done.hops_ahead - 1, context)
        return pb.DeployReply(digest=done.stage.digest, cached=done.cached, load_ms=done.build_ms)

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
                                 f"{self.cfg.name} is at capacity ({e.why}; requests and deploys "
                                 f"share {self.cfg.max_concurrency} slots); deploy again later",
                                 "overloaded", logging.INFO), context)
        except DeployRefused as e:
            self._refuse(Refused(e.code, str(e), e.reason, logging.WARNING), context)
        except grpc.RpcError:  # the uploader broke the stream off; what it sent is checked
            self._refuse(Refused(grpc.StatusCode.CANCELLED, f"{method} stream broken off",
                                 "deploy_broken", logging.INFO), context)
        finally:
            timer.cancel()
        raise AssertionError("unreachable: a refusal aborts the call")

    def _deploy_onward(self, package: StagePackage, name: str, hops_ahead: int,
                       context: grpc.ServicerContext) -> None:
        """Forward the recipe and weights (the next node rebuilds the stage from its own
        registry); this node keeps its copy to finish requests if the next node fails."""
        try:
            self._next.Deploy(deploy_stream(package, name, hops_ahead),
                              timeout=self.cfg.forward_timeout_s * 4)
        except grpc.RpcError as e:
            context.abort(e.code(), f"next node refused the stage: {e.details()}")

    # ---- Infer ----------------------------------------------------------------------------

    def Infer(self, request: pb.InferRequest | Malformed, context: grpc.ServicerContext
              ) -> pb.InferReply:
        try:
            return self._serve(request, context)
        except Refused as r:
            self.note(r, context)
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
                                        error_code=r.code.name, error=r.details)
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
        check_tensors(req, lambda name: self._expected(name, req.route),
                      self.cfg.max_decoded_mb * tensors.MB)
        parks = self.links.arrival_s(req, context.time_remaining()) > 0
        try:
            with self.admission.admit(parks) as ticket:
                self.metrics.queue_depth.set(self.admission.waiting)
                if parks:
                    self.links.arrive(req)
                with ticket.slot() as queue_ms:
                    reply = self._infer(req, context, queue_ms)
        except Rejected as e:
            raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"{self.cfg.name} is at capacity ({e.why}; at most "
                          f"{self.cfg.max_concurrency} running, {self.cfg.max_queue} waiting); "
                          f"retry later", "overloaded", logging.INFO) from None
        except Refused:
            raise
        except Exception as e:  # a bug, not the peer's fault: say so, keep serving
            self._rejections.log(logging.ERROR, "internal-traceback", "request %s failed",
                                 req.request_id[:64], exc_info=True)
            raise Refused(grpc.StatusCode.INTERNAL, f"{self.cfg.name} failed on the request: "
                          f"{type(e).__name__}: {str(e)[:200]}", "internal",
                          logging.ERROR) from None
        self.metrics.requests.labels("fallback" if reply.fallback else "ok").inc()
        self.metrics.latency.labels("total").observe(time.perf_counter() - start)
        return reply

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

    def _expected(self, name: str, route: Iterable[pb.Hop]) -> tensors.Spec | None:
        """The (dtype, shape) a stage on `route` held here takes or makes as `name`, or None.
        Stages deployed without `specs` have no expectation (the node-wide --max-decoded-mb cap
        applies to their values)."""
        for hop in route:
            specs = getattr(self.stages.get(hop.stage), "specs", None)
            if specs and name in specs:
                return specs[name]
        return None

    def _infer(self, req: pb.InferRequest, context: grpc.ServicerContext, queue_ms: float
               ) -> pb.InferReply:
        hop = req.route[0]
        t0 = time.perf_counter()
        try:
            env = tensors.decode(req.tensors, lambda n: self._expected(n, req.route),
                                 self.cfg.max_decoded_mb * tensors.MB)
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
        compute_ms = self._run(hop.stage, env, context)
        timing = pb.Timing(node=self.cfg.name, role=self.cfg.role, queue_ms=queue_ms,
                           decode_ms=decode_ms, compute_ms=compute_ms, bytes_in=bytes_in)
        later: list[pb.Timing] = []
        fallback, note = False, ""
        if len(req.route) > 1:
            later, fallback, note = self._forward(req, env, timing, context)
        t1 = time.perf_counter()
        out = tensors.encode(env, [n for n in req.want if n in env], req.return_codec)
        timing.encode_ms = (time.perf_counter() - t1) * 1000.0
        timing.bytes_out = tensors.payload_bytes(out)
        self.metrics.bytes.labels("out").inc(timing.bytes_out)
        reply = pb.InferReply(request_id=req.request_id, tensors=out, fallback=fallback,
                              note=note)
        self.links.check(hop, timing.bytes_out, "the reply", context.time_remaining())
        if same_clock(req.clock) and hop.shape_bandwidth and hop.link_mbps > 0:
            # the sender shares our clock: reply at once, stamped, as it sent to us
            timing.downlink_ms = stamp(reply, self.links.link(hop, "down"), timing.bytes_out)
        else:
            timing.downlink_ms = self.links.shape(hop, timing.bytes_out, "down")
        reply.timings.extend([timing, *later])  # copies: `timing` is complete only now
        return reply

    def _run(self, digest: str, env: dict[str, torch.Tensor], context: grpc.ServicerContext
             ) -> float:
        if not digest:
            return 0.0
        stage = self.stages.get(digest)
        if stage is None:
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION, f"stage {digest[:12]} is not "
                          f"deployed on {self.cfg.name}; Deploy first", "unknown_stage",
                          logging.INFO)
        args = []
        for name in stage.inputs:
            if name not in env:
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                              f"stage input {name!r} missing", "missing_value")
            args.append(env[name])
        remaining = context.time_remaining()
        until = math.inf if remaining is None else time.perf_counter() + remaining
        mark = dilation.start()
        try:
            with torch.inference_mode():
                result = stage.module(*args)
        except RuntimeError as e:  # wrong shapes or dtypes reach here
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                          f"stage {digest[:12]} failed on the given tensors: "
                          f"{str(e).splitlines()[0][:300]}", "bad_input") from None
        ms = dilation.finish(mark, self.cfg.dilation, until)
        if time.perf_counter() >= until:
            raise Refused(grpc.StatusCode.DEADLINE_EXCEEDED, f"{self.cfg.name}'s emulated "
                          f"compute (x{self.cfg.dilation:g}) outlasted the request's deadline",
                          "deadline", logging.INFO)
        env.update(zip(stage.outputs, result, strict=True))
        self.metrics.latency.labels("compute").observe(ms / 1000.0)
        return ms

    def _forward(self, req: pb.InferRequest, env: dict[str, torch.Tensor], timing: pb.Timing,
                 context: grpc.ServicerContext) -> tuple[list[pb.Timing], bool, str]:
        nxt = req.route[1]
        onward = pb.InferRequest(request_id=req.request_id, route=req.route[1:],
                                 want=[n for n in req.want if n not in env],
                                 return_codec=req.return_codec)
        missing = [n for n in nxt.needs if n not in env]
        if missing:  # the route is the peer's word: it may name values nothing here made
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                          f"route[1] needs {', '.join(m[:64] for m in missing[:4])}, which "
                          f"{self.cfg.name} neither received nor computed", "bad_route")
        onward.tensors.extend(tensors.encode(env, nxt.needs, nxt.codec))
        start = time.perf_counter()
        try:
            if self._next is None:
                raise ConnectionError(f"{self.cfg.name} has no --next node")
            self.links.check(nxt, tensors.payload_bytes(onward.tensors), "the forward",
                             context.time_remaining())
            timing.uplink_ms = self.links.send(nxt, onward)
            remaining = context.time_remaining()
            timeout = self.cfg.forward_timeout_s if remaining is None else max(0.01, remaining)
            reply = self._next.Infer(onward, timeout=timeout)
            arrive(reply, max_wait_s=self.cfg.max_arrival_wait_s)
            # the next node is a peer too: its reply is checked like a request
            decoded = tensors.decode(reply.tensors, lambda n: self._expected(n, req.route),
                                     self.cfg.max_decoded_mb * tensors.MB)
        except (grpc.RpcError, ConnectionError, CodecError, ValueError) as e:
            code = e.code() if isinstance(e, grpc.RpcError) else grpc.StatusCode.UNAVAILABLE
            if isinstance(e, CodecError | ValueError):
                code = grpc.StatusCode.INTERNAL  # a garbled reply: finish here, as for a crash
            if code not in FALLBACK_CODES:
                raise Refused(code, f"next node refused: {e.details()}",  # type: ignore[union-attr]
                              "next_refused") from None
            return [], True, self._finish_locally(req, env, f"next node failed ({code.name})")
        timing.forward_ms = (time.perf_counter() - start) * 1000.0
        env.update(decoded)
        return list(reply.timings), reply.fallback, reply.note

    def _finish_locally(self, req: pb.InferRequest, env: dict[str, torch.Tensor], why: str
                        ) -> str:
        # the stages first (one may be evicted meanwhile): all of them, or the note says which
        stages = [self.stages.get(hop.stage) for hop in req.route[1:] if hop.stage]
        for hop, stage in zip([h for h in req.route[1:] if h.stage], stages, strict=True):
            if stage is None:
                return f"{why}; {self.cfg.name} lacks stage {hop.stage[:12]} to fall back"
        for stage in stages:
            self._run_local(stage, env)
        self.metrics.requests.labels("fallback_local").inc()
        return f"{why}; finished on {self.cfg.name}"

    def _run_local(self, stage: DeployedStage, env: dict[str, torch.Tensor]) -> None:
        with torch.inference_mode():
            result = stage.module(*(env[n] for n in stage.inputs))
        env.update(zip(stage.outputs, result, strict=True))

    # ---- Health / Stats -------------------------------------------------------------------

    def Health(self, request: pb.HealthRequest, context: grpc.ServicerContext) -> pb.HealthReply:
        return pb.HealthReply(role=self.cfg.role, status="serving", stages=len(self.stages),
                              inflight=self.admission.running, next=self.cfg.next_target or "")

    def Stats(self, request: pb.StatsRequest, context: grpc.ServicerContext) -> pb.StatsReply:
        return pb.StatsReply(values=self.metrics.snapshot())
