"""Incremental offloading (IONN, Jeong et al. 2018): the device answers queries from the first
one while its model's weights go up to the edge, partition by partition in the order of latency
saved per byte (`plan.ionn`), and after each partition lands it switches to the best plan over
what the edge holds.

Queries never wait for the upload: the upload runs in its own thread on its own connection,
and both pass the device's one uplink token bucket chunk by chunk, a query ahead of the next
chunk (under kernel shaping the bucket paces the upload just below the link's rate, so the
kernel holds no upload backlog for a query to queue behind). A query runs its plan's
segments in turn: device segments here (traced, dilated to the device's speed), edge segments
as one Infer call each, which carries the values the segment needs and returns the values later
segments need. An edge that fails a call (down, overloaded, lost its stage) gets the segment run
here instead, marked as a fallback; a stage the edge lost is built again from its chunks, which
are uploaded again only if the edge lost those too.

The weights go up as the schedule's weight codec says (`plan.upload_codec`: raw, fp16 or
per-channel int8), and the edge's segments run them dequantized (the device's own segments,
and a fallback, run the exact weights). A landed partition's plan is built while the next
partition uploads: the link does not idle while the edge builds stages.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
import torch

from edgeweave.codec import CodecError
from edgeweave.errors import EdgeWeaveError
from edgeweave.graph import Graph, Stage, split
from edgeweave.plan.ionn import SegmentPlan, UploadSchedule
from edgeweave.profile.weight_codecs import node_weights
from edgeweave.runtime import tensors
from edgeweave.runtime.backoff import Backoff
from edgeweave.runtime.client import ClientOptions, Result
from edgeweave.runtime.device_compute import device_module, run_on_device
from edgeweave.runtime.edge_probe import check_usable
from edgeweave.runtime.edges import RECONNECT
from edgeweave.runtime.flight import arrive, send_on
from edgeweave.runtime.node import message_options
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.proto import edgeweave_pb2_grpc as pb_grpc
from edgeweave.runtime.recipe import StageError, package_stage
from edgeweave.runtime.shaper import LinkShaper
from edgeweave.runtime.upload import ChunkUploader, UploadError, UploadStopped
from edgeweave.security import ClientTLS, authed_channel

log = logging.getLogger("edgeweave.runtime")

#: Under kernel shaping the upload is paced at this fraction of the link's rate, below the
#: goodput TCP gets through a tbf (about 95.6 % of it, `tests/runtime/test_runtime_netlab.py`):
#: the upload then never builds a queue in the kernel, and a query, which reserves the pacer
#: too, waits behind one chunk at most instead of sharing the link with a backlogged flow.
KERNEL_PACE = 0.9
#: A partition's stage serves this device's queries, one at a time (its digest covers this
#: device's plan and weights): batches of one, so the edge's build skips calibrating batches.
SERVING = pb.ServingConfig(max_batch=1)


@dataclass
class _Segment:
    tier: str
    stage: Stage
    module: Any  # device: the traced stage; edge: the stage, to run here on a fallback
    hop: pb.Hop | None = None  # edge segments: the one-hop route naming the deployed stage
    return_codec: str = "none"


@dataclass
class _Active:
    plan: SegmentPlan
    segments: list[_Segment]
    landed: int  # partitions on the edge when this plan was built


@dataclass
class QueryRecord:
    """One query on the timeline: when it started (s since the upload began) and how it ran."""

    t_s: float
    ms: float
    mode: str
    landed: int
    predicted_ms: float
    fallback: bool


@dataclass
class IncrementalRun:
    """What a run did: every query, every partition landed and plan switched, what was sent."""

    queries: list[QueryRecord] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


class IncrementalClient:
    """See module doc. ``schedule`` comes from :func:`edgeweave.plan.ionn.upload_schedule` (or
    `upload_all_schedule`, IONN's baseline) on the profile of ``graph``'s model and fleet."""

    def __init__(self, graph: Graph, schedule: UploadSchedule, edge_target: str, *,
                 link: tuple[float, float], token: str | None = None,
                 tls: ClientTLS | None = None, options: ClientOptions | None = None):
        if graph.spec is None:
            raise EdgeWeaveError(f"model {graph.name!r} was captured from an in-memory module; "
                                 "nodes build stages only of models they know (see `edgeweave "
                                 "models`)")
        self.graph, self.schedule = graph, schedule
        self.opts = options or ClientOptions()
        self.mbps, self.rtt_ms = link
        # two channels, each on its own connection: the upload's and the queries'
        opts = [*message_options(self.opts.max_message_mb), *RECONNECT,
                ("grpc.use_local_subchannel_pool", 1)]
        self._channels = [authed_channel(edge_target, token=token, tls=tls, options=opts)
                          for _ in range(2)]
        self._stub = pb_grpc.NodeStub(self._channels[0])
        # the device's uplink, shared by queries and the upload: the emulated link itself, or
        # under kernel shaping a pacer below its rate (see KERNEL_PACE)
        self._uplink = LinkShaper(self.mbps * (1.0 if self.opts.shape_bandwidth
                                               else KERNEL_PACE), self.rtt_ms)
        self._stop = threading.Event()
        self._ready = threading.Event()  # the initial plan is in force
        self.uploader = ChunkUploader(
            pb_grpc.NodeStub(self._channels[1]), graph.spec, graph.input_shape,
            graph.module.state_dict(), uplink=self._uplink, mbps=self.mbps,
            backoff_s=self.opts.backoff_s, stop=self._stop, codec=schedule.weight_codec)
        self._weights = node_weights(graph)
        self._backoff = Backoff(*self.opts.backoff_s)
        self._repair = threading.Event()
        self._landed = 0  # partitions on the edge
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._example: torch.Tensor | None = None
        self._active: _Active | None = None
        self._t0 = time.monotonic()
        self.run = IncrementalRun()

    # ---- the upload ----------------------------------------------------------------------

    def start(self, example: torch.Tensor) -> None:
        """Start uploading and build the schedule's initial plan (it needs no upload: at most
        stages without weights) meanwhile: the first chunks are on their way, and the edge is
        capturing the model to check them, while the device traces its own stages. A landed
        partition switches the plan only once the initial one is in force."""
        self._example = example
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._upload, name="edgeweave-upload",
                                        daemon=True)
        self._thread.start()
        try:
            self._active = self._build(self.schedule.initial, 0)
        except BaseException:
            self.close()
            raise
        self._event("plan", mode=self.schedule.initial.mode,
                    predicted_ms=self.schedule.initial.total_ms)
        self._ready.set()

    def _upload(self) -> None:
        """Partitions go up back to back; each one's plan is built meanwhile (a build waits
        for the edge to build and calibrate its stages: seconds the link would idle)."""
        builds: list[Future[None]] = []
        try:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgeweave-switch") as pool:
                for k, step in enumerate(self.schedule.steps, start=1):
                    self.uploader.upload(self.uploader.chunks_of(self._weights_of(step.nodes)))
                    self._event("landed", partition=k, bytes=step.nbytes,
                                nodes=list(step.nodes))
                    self._landed = k
                    builds.append(pool.submit(self._switch_to, step.plan, k))
                    for done in (b for b in builds if b.done()):
                        done.result()  # a failed build stops the upload
                for build in builds:
                    build.result()
            self._event("uploaded", bytes_sent=self.uploader.stats.bytes_sent)
            while not self._stop.is_set():
                if self._repair.wait(0.2):
                    self._heal()
        except UploadStopped:
            pass
        except (UploadError, EdgeWeaveError, grpc.RpcError) as e:
            self._stop.set()  # a build still queued gives up
            why = e.details() if isinstance(e, grpc.RpcError) else str(e)
            log.warning("incremental upload stopped: %s; queries keep the current plan", why)
            self._event("upload_failed", error=str(why))

    def _switch_to(self, plan: SegmentPlan, landed: int) -> None:
        """Build ``plan`` and put it in force, unless a later partition has landed meanwhile
        (its plan is better, and its build comes next)."""
        while not self._ready.wait(0.2):
            if self._stop.is_set():
                raise UploadStopped
        if landed == self._landed:
            self._switch(self._build(plan, landed))
        self._heal()

    def _heal(self) -> None:
        """Build the plan in force again when the edge lost one of its stages."""
        if self._repair.is_set() and self._active is not None:
            self._repair.clear()
            self._switch(self._build(self._active.plan, self._active.landed))
            self._event("rebuilt", mode=self._active.plan.mode)

    def _switch(self, active: _Active) -> None:
        self._active = active
        self._event("switched", partitions=active.landed, mode=active.plan.mode,
                    predicted_ms=active.plan.total_ms)

    def _build(self, plan: SegmentPlan, landed: int) -> _Active:
        """Stages for ``plan``: device segments traced here while the edge builds its
        segments from the chunks it holds (seconds each, on a busy host)."""
        assert self._example is not None
        stages = split(self.graph, plan.placement(), plan.keys())
        env: dict[str, Any] = {self.graph.placeholders[0]: self._example}
        inputs = []
        for stage in stages:
            inputs.append([env[n] for n in stage.inputs])
            with torch.no_grad():
                env.update(zip(stage.outputs, stage.module(*inputs[-1]), strict=True))
        device = plan.segments[0][0]
        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="edgeweave-build") as pool:
            edge = {k: pool.submit(self._edge_segment, plan, tier, stage, args,
                                   k == len(stages) - 1)
                    for k, ((tier, _), stage, args)
                    in enumerate(zip(plan.segments, stages, inputs, strict=True))
                    if tier != device}
            segments = [edge[k].result() if k in edge else
                        _Segment(device, stage, device_module(stage, args))
                        for k, (stage, args) in enumerate(zip(stages, inputs, strict=True))]
        return _Active(plan, segments, landed)

    def _edge_segment(self, plan: SegmentPlan, tier: str, stage: Stage, args: list[Any],
                      last: bool) -> _Segment:
        try:
            pkg = self.uploader.package(package_stage(self.graph, stage, args))
        except StageError as e:
            raise EdgeWeaveError(f"cannot deploy segment {stage.key}: {e}") from None
        self.uploader.deploy(pkg, f"{self.graph.name}:{stage.key}", serving=SERVING)
        hop = pb.Hop(stage=pkg.digest, needs=stage.inputs, codec=plan.codec,
                     link_mbps=self.mbps, link_rtt_ms=self.rtt_ms,
                     shape_bandwidth=self.opts.shape_bandwidth)
        # the model's outputs come back raw, as the co-inference client returns them
        return _Segment(tier, stage, stage.module, hop,
                        self.opts.return_codec if last else plan.codec)

    def _weights_of(self, nodes: Iterable[str]) -> list[str]:
        return sorted({w for n in nodes for w in self._weights.get(n, ())})

    def _event(self, kind: str, **info: Any) -> None:
        self.run.events.append({"t_s": time.monotonic() - self._t0, "event": kind, **info})

    def wait(self, timeout_s: float | None = None) -> bool:
        """Until every partition has landed (or the upload failed); False on timeout."""
        end = None if timeout_s is None else time.monotonic() + timeout_s
        while not any(e["event"] in ("uploaded", "upload_failed") for e in self.run.events):
            if end is not None and time.monotonic() >= end:
                return False
            time.sleep(0.05)
        return True

    def close(self) -> None:
        """Stop the upload (what arrived stays on the edge for next time) and hang up."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for ch in self._channels:
            ch.close()

    # ---- queries -------------------------------------------------------------------------

    def infer(self, x: torch.Tensor) -> Result:
        """One query with the plan in force now; never waits for the upload."""
        active = self._active
        if active is None:
            raise EdgeWeaveError("start() the client before sending queries")
        start, t_s = time.perf_counter(), time.monotonic() - self._t0
        env: dict[str, Any] = {self.graph.placeholders[0]: x}
        segments: dict[str, float] = {}
        notes, fallback, bytes_up = [], False, 0
        for seg in active.segments:
            args = [env[n] for n in seg.stage.inputs]
            if seg.hop is not None and not self._backoff.active:
                done, note, nbytes = self._remote(seg, env, segments)
                bytes_up += nbytes
                if done:
                    continue
                notes.append(note)
            elif seg.hop is not None:
                notes.append("edge in back-off")
            fallback = fallback or seg.hop is not None
            out, ms = run_on_device(seg.module, args, self.opts.device_dilation,
                                    self.opts.device_spin)
            env.update(zip(seg.stage.outputs, out, strict=True))
            segments[f"{seg.stage.key}_compute"] = ms
        total = (time.perf_counter() - start) * 1000.0
        outs = [env[o] for o in self.graph.outputs]
        self.run.queries.append(QueryRecord(t_s, total, active.plan.mode, active.landed,
                                            active.plan.total_ms, fallback))
        return Result(outs[0] if len(outs) == 1 else tuple(outs), total, segments,
                      {"total_ms": active.plan.total_ms}, fallback,
                      "; ".join(notes) + ("; ran locally" if notes else ""), bytes_up,
                      active.plan.mode, active.plan.total_ms)

    def _remote(self, seg: _Segment, env: dict[str, Any], segments: dict[str, float]
                ) -> tuple[bool, str, int]:
        """One edge segment: (done, why not, bytes sent)."""
        assert seg.hop is not None
        req = pb.InferRequest(request_id=f"{uuid.uuid4().hex[:8]}-{next(self._seq)}",
                              route=[seg.hop], want=seg.stage.outputs,
                              return_codec=seg.return_codec)
        req.tensors.extend(tensors.encode(env, seg.stage.inputs, seg.hop.codec))
        nbytes = tensors.payload_bytes(req.tensors)
        sent = time.perf_counter()
        try:
            if self.opts.shape_bandwidth:
                send_on(self._uplink, self.rtt_ms, req)
            else:  # the kernel shapes the bytes; the upload's pacer lets them pass first
                self._uplink.bucket.reserve(nbytes)
                send_on(None, self.rtt_ms, req)
            reply = self._stub.Infer(req, timeout=self.opts.timeout_s)
            arrive(reply, max_wait_s=self.opts.timeout_s)
            got = tensors.decode(reply.tensors, None, self.opts.max_decoded_mb * tensors.MB)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.FAILED_PRECONDITION:
                self._repair.set()  # the edge lost the stage (evicted, restarted): rebuild it
            else:
                check_usable(e.code(), e.details() or "", f"request {req.request_id}",
                             self.opts.fallback_local)
                self._backoff.fail()
            return False, f"edge failed ({e.code().name}: {e.details()})", nbytes
        except (CodecError, ValueError) as e:
            return False, f"edge reply was malformed ({e})", nbytes
        missing = [n for n in seg.stage.outputs if n not in got]
        if missing:
            return False, f"edge reply lacked {', '.join(missing)[:200]}", nbytes
        self._backoff.ok()
        env.update(got)
        segments[f"{seg.stage.key}_remote"] = (time.perf_counter() - sent) * 1000.0
        return True, "", nbytes

