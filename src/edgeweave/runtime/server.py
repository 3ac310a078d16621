"""The edge/cloud node server: runs its stage of each request and forwards the rest.

A request carries its route (which deployed stage each node runs, what each must receive, the
codec and link of each hop), so one server binary serves any plan. Admission is bounded:
`max_concurrency` requests compute at once, `max_queue` more may wait, and anything beyond is
refused with RESOURCE_EXHAUSTED instead of piling up until memory runs out. When the next node
fails, the server finishes the remaining stages itself if it holds them (Deploy caches forwarded
stages on the way) and marks the reply as a fallback. Stages are built by the node itself from
models it trusts (:mod:`edgeweave.runtime.deploy`); a Deploy holds an admission slot too.
"""

from __future__ import annotations

import math
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import torch

from edgeweave.codec import CodecError
from edgeweave.runtime import dilation, tensors
from edgeweave.runtime.deploy import MB, Deployer, DeployRefused
from edgeweave.runtime.flight import arrive, same_clock, send_on, stamp
from edgeweave.runtime.metrics import NodeMetrics
from edgeweave.runtime.models import TrustedModels
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.proto import edgeweave_pb2_grpc as pb_grpc
from edgeweave.runtime.recipe import StagePackage, deploy_stream
from edgeweave.runtime.shaper import LinkShaper
from edgeweave.runtime.stage_store import StageStore

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
    models: tuple[str, ...] = ()  # operator-installed models (path/to/file.py:factory)
    cache_dir: str | None = None  # Deploy's temp files (default: a fresh temp dir)
    max_deploy_s: float = 900.0  # the longest a Deploy stream may hold a slot
    # the longest one emulated link crossing may hold a request: a request names its own link
    # rate and arrival stamp, and a bad one must not park a server thread for hours
    max_link_s: float = 120.0
    channel_factory: object = None  # callable(target) -> grpc.Channel (auth, TLS)


class _Rejected(Exception):
    pass


class Admission:
    """At most `limit` running and `queue` waiting; the rest are refused at once."""

    def __init__(self, limit: int, queue: int):
        self._slots = threading.Semaphore(limit)
        self._lock = threading.Lock()
        self._waiting = 0
        self._queue = queue
        self.running = 0

    def __enter__(self) -> float:
        start = time.perf_counter()
        if not self._slots.acquire(blocking=False):
            with self._lock:
                if self._waiting >= self._queue:
                    raise _Rejected
                self._waiting += 1
            try:
                self._slots.acquire()
            finally:
                with self._lock:
                    self._waiting -= 1
        with self._lock:
            self.running += 1
        return (time.perf_counter() - start) * 1000.0

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.running -= 1
        self._slots.release()

    @contextmanager
    def immediate(self) -> Iterator[None]:
        """A slot now or _Rejected: a Deploy does not queue (it would hold its stream)."""
        if not self._slots.acquire(blocking=False):
            raise _Rejected
        with self._lock:
            self.running += 1
        try:
            yield
        finally:
            self.__exit__()

    @property
    def waiting(self) -> int:
        return self._waiting


class NodeService(pb_grpc.NodeServicer):
    def __init__(self, config: NodeConfig, metrics: NodeMetrics):
        self.cfg = config
        self.metrics = metrics
        self.stages = StageStore(int(config.stage_budget_mb * MB))
        self.admission = Admission(config.max_concurrency, config.max_queue)
        if config.cache_dir:
            cache_dir = Path(config.cache_dir)
        else:  # removed when the service goes (or at exit)
            self._tmp = tempfile.TemporaryDirectory(prefix=f"edgeweave-{config.name}-")
            cache_dir = Path(self._tmp.name)
        self.deployer = Deployer(TrustedModels(config.models), self.stages, cache_dir,
                                 int(config.max_stage_mb * MB))
        self._links: dict[tuple[str, float, float], LinkShaper] = {}
        self._links_lock = threading.Lock()
        self._next = None
        if config.next_target:
            factory = config.channel_factory or grpc.insecure_channel
            self._next = pb_grpc.NodeStub(factory(config.next_target))
        torch.set_num_threads(config.threads)

    # ---- Deploy ---------------------------------------------------------------------------

    def Deploy(self, request_iterator: Iterator[pb.DeployRequest],
               context: grpc.ServicerContext) -> pb.DeployReply:
        timer = threading.Timer(self.cfg.max_deploy_s, context.cancel)  # a stalled uploader
        timer.daemon = True
        timer.start()
        try:
            with self.admission.immediate():
                done = self.deployer.deploy(request_iterator, self._next is not None)
                if done.hops_ahead > 0:
                    self._deploy_onward(done.stage.package(), done.name, done.hops_ahead - 1,
                                        context)
        except _Rejected:
            self.metrics.rejected.labels("overloaded").inc()
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"{self.cfg.name} is at capacity ({self.cfg.max_concurrency} requests "
                          f"or deploys running); deploy again later")
        except DeployRefused as e:
            self.metrics.rejected.labels(e.reason).inc()
            context.abort(e.code, str(e))
        except grpc.RpcError:  # the uploader broke the stream off; nothing was kept
            context.abort(grpc.StatusCode.CANCELLED, "Deploy stream broken off")
        finally:
            timer.cancel()
        return pb.DeployReply(digest=done.stage.digest, cached=done.cached, load_ms=done.build_ms)

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

    def Infer(self, request: pb.InferRequest, context: grpc.ServicerContext) -> pb.InferReply:
        self._arrive(request, context)
        start = time.perf_counter()
        try:
            with self.admission as queue_ms:
                self.metrics.queue_depth.set(self.admission.waiting)
                reply = self._infer(request, context, queue_ms)
        except _Rejected:
            self.metrics.rejected.labels("overloaded").inc()
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"{self.cfg.name} is at capacity ({self.cfg.max_concurrency} running, "
                          f"{self.cfg.max_queue} queued); retry later")
        self.metrics.requests.labels("fallback" if reply.fallback else "ok").inc()
        self.metrics.latency.labels("total").observe(time.perf_counter() - start)
        return reply

    def InferStream(self, request_iterator: Iterator[pb.InferRequest],
                    context: grpc.ServicerContext) -> Iterator[pb.InferReply]:
        for request in request_iterator:
            yield self.Infer(request, context)

    def _infer(self, req: pb.InferRequest, context: grpc.ServicerContext, queue_ms: float
               ) -> pb.InferReply:
        if not req.route:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request has an empty route")
        hop = req.route[0]
        t0 = time.perf_counter()
        try:
            env = tensors.decode(req.tensors)
        except (CodecError, ValueError) as e:
            self.metrics.rejected.labels("bad_tensor").inc()
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad tensor: {e}")
        decode_ms = (time.perf_counter() - t0) * 1000.0
        missing = [n for n in hop.needs if n not in env]
        if missing:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"request lacks values this node needs: {', '.join(missing)}")
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
        self._check_link(hop, timing.bytes_out, "the reply", context)
        if same_clock(req.clock) and hop.shape_bandwidth and hop.link_mbps > 0:
            # the sender shares our clock: reply at once, stamped, as it sent to us
            timing.downlink_ms = stamp(reply, self._link(hop, "down"), timing.bytes_out)
        else:
            timing.downlink_ms = self._shape(hop, timing.bytes_out, "down")
        reply.timings.extend([timing, *later])  # copies: `timing` is complete only now
        return reply

    def _run(self, digest: str, env: dict[str, torch.Tensor], context: grpc.ServicerContext
             ) -> float:
        if not digest:
            return 0.0
        stage = self.stages.get(digest)
        if stage is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"stage {digest[:12]} is not deployed on {self.cfg.name}; Deploy first")
        args = []
        for name in stage.inputs:
            if name not in env:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"stage input {name!r} missing")
            args.append(env[name])
        mark = dilation.start()
        try:
            with torch.inference_mode():
                result = stage.module(*args)
        except RuntimeError as e:  # wrong shapes or dtypes reach here
            self.metrics.rejected.labels("bad_input").inc()
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"stage {digest[:12]} failed on the given tensors: "
                          f"{str(e).splitlines()[0][:300]}")
        ms = dilation.finish(mark, self.cfg.dilation)
        env.update(zip(stage.outputs, result, strict=True))
        self.metrics.latency.labels("compute").observe(ms / 1000.0)
        return ms

    def _forward(self, req: pb.InferRequest, env: dict[str, torch.Tensor], timing: pb.Timing,
                 context: grpc.ServicerContext) -> tuple[list[pb.Timing], bool, str]:
        nxt = req.route[1]
        onward = pb.InferRequest(request_id=req.request_id, route=req.route[1:],
                                 want=[n for n in req.want if n not in env],
                                 return_codec=req.return_codec)
        onward.tensors.extend(tensors.encode(env, nxt.needs, nxt.codec))
        start = time.perf_counter()
        try:
            if self._next is None:
                raise ConnectionError(f"{self.cfg.name} has no --next node")
            self._check_link(nxt, tensors.payload_bytes(onward.tensors), "the forward", context)
            timing.uplink_ms = self._send(nxt, onward)
            remaining = context.time_remaining()
            timeout = self.cfg.forward_timeout_s if remaining is None else max(0.01, remaining)
            reply = self._next.Infer(onward, timeout=timeout)
            arrive(reply, max_wait_s=self.cfg.max_link_s)
        except (grpc.RpcError, ConnectionError) as e:
            code = e.code() if isinstance(e, grpc.RpcError) else grpc.StatusCode.UNAVAILABLE
            if code not in FALLBACK_CODES:
                context.abort(code, f"next node refused: {e.details()}")  # type: ignore[union-attr]
            return [], True, self._finish_locally(req, env, f"next node failed ({code.name})")
        timing.forward_ms = (time.perf_counter() - start) * 1000.0
        env.update(tensors.decode(reply.tensors))
        return list(reply.timings), reply.fallback, reply.note

    def _finish_locally(self, req: pb.InferRequest, env: dict[str, torch.Tensor], why: str
                        ) -> str:
        for hop in req.route[1:]:
            if hop.stage and hop.stage not in self.stages:
                return f"{why}; {self.cfg.name} lacks stage {hop.stage[:12]} to fall back"
            if hop.stage:
                self._run_local(hop.stage, env)
        self.metrics.requests.labels("fallback_local").inc()
        return f"{why}; finished on {self.cfg.name}"

    def _run_local(self, digest: str, env: dict[str, torch.Tensor]) -> None:
        stage = self.stages[digest]
        with torch.inference_mode():
            result = stage.module(*(env[n] for n in stage.inputs))
        env.update(zip(stage.outputs, result, strict=True))

    def _arrive(self, req: pb.InferRequest, context: grpc.ServicerContext) -> None:
        """Hold a request stamped by an emulated link until it has crossed it: on our clock,
        until its instant; from a sender on another clock, for the link's time from now."""
        for hop in req.route:
            mbps, rtt = hop.link_mbps, hop.link_rtt_ms
            if not (math.isfinite(mbps) and mbps >= 0 and math.isfinite(rtt) and rtt >= 0):
                self.metrics.rejected.labels("bad_link").inc()
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"route links need finite link_mbps >= 0 and link_rtt_ms >= 0, "
                              f"got {mbps!r} Mbit/s, {rtt!r} ms")
        if not (req.deliver_at_ns and req.route):
            return
        nbytes = tensors.payload_bytes(req.tensors)
        if same_clock(req.clock):
            self._bound(req.deliver_at_ns / 1e9 - time.monotonic(), "the request's arrival "
                        "stamp", context)
            arrive(req)
        else:
            self._check_link(req.route[0], nbytes, "the request", context)
            self._shape(req.route[0], nbytes, "in")

    def _check_link(self, hop: pb.Hop, nbytes: int, what: str,
                    context: grpc.ServicerContext) -> None:
        """Refuse a crossing of the request's own link that would hold it too long."""
        if hop.link_mbps > 0:
            serial = nbytes * 8 / (hop.link_mbps * 1e6) if hop.shape_bandwidth else 0.0
            self._bound(serial + hop.link_rtt_ms / 2000.0, what, context)

    def _bound(self, seconds: float, what: str, context: grpc.ServicerContext) -> None:
        if seconds > self.cfg.max_link_s:
            self.metrics.rejected.labels("bad_link").inc()
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"{what} would spend {seconds:.1f} s on the emulated link, more than "
                          f"this node allows ({self.cfg.max_link_s:g} s): check the route's "
                          f"link_mbps and link_rtt_ms, or the sender's clock")
        remaining = context.time_remaining()
        if remaining is not None and seconds > remaining:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                          f"{what} would spend {seconds:.1f} s on the emulated link; the "
                          f"request's deadline is {remaining:.1f} s away")

    def _link(self, hop: pb.Hop, direction: str) -> LinkShaper:
        """One bucket per link and direction (links are full duplex), shared by concurrent
        requests as a real link is."""
        key = (direction, hop.link_mbps, hop.link_rtt_ms)
        with self._links_lock:
            link = self._links.get(key)
            if link is None:
                link = self._links[key] = LinkShaper(hop.link_mbps, hop.link_rtt_ms)
        return link

    def _send(self, hop: pb.Hop, req: pb.InferRequest) -> float:
        """Put `req` on the hop's link: stamped with its arrival instant when shaped here (the
        receiver waits for it), or after half the RTT when the kernel shapes the bytes."""
        if hop.link_mbps <= 0:
            return 0.0
        return send_on(self._link(hop, "up") if hop.shape_bandwidth else None,
                       hop.link_rtt_ms, req)

    def _shape(self, hop: pb.Hop, nbytes: int, direction: str) -> float:
        """Emulate the hop's link for `nbytes` before sending: serialisation (unless the kernel
        shapes it) plus half the RTT (the kernel here has no netem)."""
        if hop.link_mbps <= 0:
            return 0.0
        if not hop.shape_bandwidth:
            time.sleep(hop.link_rtt_ms / 2000.0)
            return hop.link_rtt_ms / 2.0
        return self._link(hop, direction).transmit(nbytes) * 1000.0

    # ---- Health / Stats -------------------------------------------------------------------

    def Health(self, request: pb.HealthRequest, context: grpc.ServicerContext) -> pb.HealthReply:
        return pb.HealthReply(role=self.cfg.role, status="serving", stages=len(self.stages),
                              inflight=self.admission.running, next=self.cfg.next_target or "")

    def Stats(self, request: pb.StatsRequest, context: grpc.ServicerContext) -> pb.StatsReply:
        return pb.StatsReply(values=self.metrics.snapshot())
