"""The device side of co-inference: run the head, ship activations, survive the network.

The device holds the whole model (it must: a request may have to finish here), so when the edge
is unreachable, crashed or too slow, the remaining stages run locally and the result is marked
as a fallback; the edge is retried after an exponential back-off. Every input gets exactly one
result or one clear error.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import torch

from edgeweave.codec import CodecError
from edgeweave.errors import EdgeWeaveError
from edgeweave.graph import Graph, Stage, split
from edgeweave.plan import Plan, plan
from edgeweave.plan.costs import CostModel
from edgeweave.profile import Profile
from edgeweave.runtime import tensors
from edgeweave.runtime.backoff import Backoff
from edgeweave.runtime.bandwidth import BandwidthEstimator
from edgeweave.runtime.device_compute import device_module, run_on_device
from edgeweave.runtime.edge_probe import check_usable, health
from edgeweave.runtime.flight import arrive, send_on
from edgeweave.runtime.load import LoadFactors
from edgeweave.runtime.node import message_options
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.proto import edgeweave_pb2_grpc as pb_grpc
from edgeweave.runtime.recipe import (
    StageError,
    StagePackage,
    deploy_stream,
    package_stage,
)
from edgeweave.runtime.segments import fill_segments, predicted_segments
from edgeweave.runtime.shaper import LinkShaper
from edgeweave.security import ClientTLS, authed_channel

log = logging.getLogger("edgeweave.runtime")


#: A freshly deployed stage's first calls are slow (TorchScript specialises on them: 2-3x on
#: alexnet here), which says nothing about the machines' load, so they are not learnt from.
COLD_REQUESTS = 2
#: Our own back-off decides when to retry the edge; gRPC's reconnect back-off (1 s and growing)
#: would otherwise keep failing fast after the edge is back.
RECONNECT = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
             ("grpc.max_reconnect_backoff_ms", 2000)]


class _Unreachable(Exception):
    """The edge could not take the stages; the request finishes on the device."""


@dataclass
class Result:
    output: Any
    total_ms: float
    segments: dict[str, float]
    predicted: dict[str, float]
    fallback: bool = False
    note: str = ""
    bytes_up: int = 0
    plan_mode: str = ""
    predicted_now_ms: float = 0.0  # the plan's total scaled by load factors, made beforehand


@dataclass
class ClientOptions:
    codec: str | None = None  # activation codec on every cut; None: the plan's choice per cut
    return_codec: str = "none"
    device_dilation: float = 1.0  # emulate a device slower than this host
    shape_bandwidth: bool = True  # False when netlab's kernel shaping is in place
    timeout_s: float = 30.0
    backoff_s: tuple[float, float] = (0.5, 8.0)
    max_message_mb: float = 64.0
    adapt: bool = False  # re-plan when measured bandwidth or tier load moves the optimum
    min_gain: float = 0.05
    load_change: float = 0.2  # a load factor moving this much (relative) triggers a re-plan check
    # run locally even when the edge refuses our token or TLS handshake (default: an error
    # naming the cause; a misconfigured client must not look like a slow edge)
    fallback_local: bool = False
    max_decoded_mb: float = 128.0  # decoded MiB an edge's reply may declare


@dataclass
class _Deployment:
    plan: Plan
    stages: dict[str, Stage]
    packages: dict[str, StagePackage] = field(default_factory=dict)  # remote stages
    route: list[pb.Hop] = field(default_factory=list)
    want: list[str] = field(default_factory=list)
    uploaded: bool = False
    device_module: Any = None  # the device stage traced, as nodes run theirs
    stage_ids: dict[str, str] = field(default_factory=dict)  # tier -> id of its stage (load)
    served: int = 0  # requests answered under this deployment


class CoInferenceClient:
    def __init__(self, graph: Graph, chosen: Plan, edge_target: str | None, *,
                 token: str | None = None, tls: ClientTLS | None = None,
                 options: ClientOptions | None = None, profile: Profile | None = None,
                 load: LoadFactors | None = None):
        self.graph = graph
        self.opts = options or ClientOptions()
        self.profile = profile
        self.estimator = BandwidthEstimator()
        # shared by clients of one device: they all sample the same machines' speed
        self.load = load or LoadFactors()
        self._checked_load: dict[str, float] = {}  # factors the last re-plan check used
        self.switches: list[dict[str, Any]] = []
        self._stub = None
        self._target = edge_target
        if edge_target:
            channel = authed_channel(edge_target, token=token, tls=tls,
                                     options=message_options(self.opts.max_message_mb)
                                     + RECONNECT)
            self._stub = pb_grpc.NodeStub(channel)
        self._backoff = Backoff(*self.opts.backoff_s)
        self._example: torch.Tensor | None = None
        self._seq = itertools.count()
        # the emulated network as it really is; the plan only holds a belief about it
        self.network = {h: (lk.mbps, lk.rtt_ms) for h, lk in chosen.links.items()}
        hops = chosen.hop_names()
        self._uplink = LinkShaper(*self.network[hops[0]]) if hops else None
        self.deployment = self._prepare(chosen)

    def set_link_mbps(self, hop: str, mbps: float) -> None:
        """Change the emulated network's bandwidth on `hop` (a step, or a trace sample); the
        plan learns of it only through its own transfers."""
        self.network[hop] = (mbps, self.network[hop][1])
        if self._uplink is not None and hop == self.deployment.plan.hop_names()[0]:
            self._uplink.set_mbps(mbps)
        for k, name in enumerate(self.deployment.plan.hop_names()[: len(self.deployment.route)]):
            self.deployment.route[k].link_mbps = self.network[name][0]

    # ---- plan -> stages, route ------------------------------------------------------------

    def _prepare(self, chosen: Plan) -> _Deployment:
        stages = {s.key: s for s in split(self.graph, chosen.placement, chosen.tiers)}
        dep = _Deployment(chosen, stages, stage_ids={k: _stage_id(self.graph.name, s)
                                                     for k, s in stages.items()})
        tier_of = {n: chosen.tiers.index(t) for n, t in chosen.placement.items()}
        top = max(tier_of[n] for s in stages.values() for n in s.nodes)
        for level in range(1, top + 1):
            needs = sorted({v for s in stages.values() if chosen.tiers.index(s.key) >= level
                            for v in s.inputs if tier_of[v] < level})
            hop_name = chosen.hop_names()[level - 1]
            mbps, rtt = self.network[hop_name]
            codec = self.opts.codec or chosen.cuts.get(hop_name, "none")
            dep.route.append(pb.Hop(stage="", needs=needs, codec=codec,
                                    link_mbps=mbps, link_rtt_ms=rtt,
                                    shape_bandwidth=self.opts.shape_bandwidth))
        dep.want = [o for o in self.graph.outputs if tier_of[o] > 0]
        return dep

    def deploy(self, example: torch.Tensor) -> list[pb.DeployReply]:
        """Describe the remote stages (recipe + weights; each node builds and traces its stage
        itself) and upload them, content-addressed, so a re-deploy of the same stage is a cache
        hit. If the edge is unreachable, requests run locally and the upload is retried with
        the edge."""
        self._example = example
        dep = self.deployment
        env: dict[str, Any] = {self.graph.placeholders[0]: example}
        for key in dep.plan.tiers:
            stage = dep.stages.get(key)
            if stage is None:
                continue
            args = tuple(env[n] for n in stage.inputs)
            with torch.no_grad():
                env.update(zip(stage.outputs, stage.module(*args), strict=True))
            level = dep.plan.tiers.index(key)
            if level > 0:
                try:
                    dep.packages[key] = (dep.packages.get(key)
                                         or package_stage(self.graph, stage, args))
                except StageError as e:
                    raise EdgeWeaveError(f"cannot deploy the {key} stage: {e}") from None
                dep.route[level - 1].stage = dep.packages[key].digest
        if dep.packages and self._stub is None:
            raise EdgeWeaveError("the plan runs stages off the device but no edge address was "
                                 "given (--edge host:port)")
        return self._upload(dep)

    def _upload(self, dep: _Deployment) -> list[pb.DeployReply]:
        replies = []
        for key, pkg in dep.packages.items():
            # nodes on the way cache the stage too, so each can finish a request if the node
            # above it fails
            try:
                replies.append(self._stub.Deploy(
                    deploy_stream(pkg, f"{self.graph.name}:{key}",
                                  dep.plan.tiers.index(key) - 1),
                    timeout=max(self.opts.timeout_s, 120.0)))
            except grpc.RpcError as e:
                self._check_usable(e.code(), e.details() or "", f"the {key} stage")
                log.warning("deploy failed (%s); running locally until the edge is back",
                            e.code().name)
                dep.uploaded = False
                self._mark_down()
                return replies
        dep.uploaded = True
        return replies

    # ---- inference ------------------------------------------------------------------------

    def infer(self, x: torch.Tensor) -> Result:
        dep = self.deployment
        run = self._begin(dep, x)
        fallback, note, bytes_up = False, "", 0
        if dep.route:
            if self._backoff.active:
                fallback, note = True, "edge in back-off; ran locally"
                self._finish_locally(dep, run.env)
            else:
                fallback, note, bytes_up = self._remote(dep, run)
        return self._end(dep, run, fallback, note, bytes_up)

    def infer_stream(self, xs: Sequence[torch.Tensor]) -> Iterator[Result]:
        """Results for `xs`, in order, sent over one InferStream (their device heads run
        first). A request the edge fails is handled alone, as `infer` handles it (fallback, or
        an EdgeWeaveError raised at its turn); the others are unaffected."""
        dep = self.deployment
        if not dep.route or not dep.uploaded or self._backoff.active:
            yield from (self.infer(x) for x in xs)
            return
        runs = [self._begin(dep, x) for x in xs]
        for run in runs:
            run.req, run.nbytes = self._request(dep, run)
            run.segments[self._uplink_key(dep)] = self._send_uplink(run.req)
            run.sent = time.perf_counter()
        replies = self._stub.InferStream(iter([r.req for r in runs]),
                                         timeout=self.opts.timeout_s * max(1, len(runs)))
        done = 0
        code, why = grpc.StatusCode.UNKNOWN, "the edge ended the stream early"
        try:
            for reply in replies:
                if done == len(runs):  # more replies than requests: the edge is not sane
                    replies.cancel()
                    break
                run = runs[done]
                done += 1
                if reply.request_id != run.req.request_id:
                    reply = pb.InferReply(error_code="UNKNOWN", error=(
                        f"reply for {reply.request_id[:64]!r} in {run.req.request_id}'s place"))
                arrive(reply, max_wait_s=self.opts.timeout_s)
                yield self._end(dep, run, *self._settle(dep, run, reply))
        except grpc.RpcError as e:  # the stream itself broke: the unanswered requests failed
            code, why = e.code(), e.details()
        for run in runs[done:]:
            yield self._end(dep, run, *self._failed(dep, run, code, why))

    def _begin(self, dep: _Deployment, x: torch.Tensor) -> _Run:
        """Start a request: the load-scaled prediction, then the device's own stage."""
        run = _Run(self.load.predict_ms(dep.plan.predicted, dep.stage_ids), time.perf_counter(),
                   {self.graph.placeholders[0]: x})
        run.segments[f"{dep.plan.tiers[0]}_compute"] = self._run_device(dep, run.env)
        return run

    def _end(self, dep: _Deployment, run: _Run, fallback: bool, note: str, bytes_up: int
             ) -> Result:
        total = (time.perf_counter() - run.start) * 1000.0
        outs = [run.env[o] for o in self.graph.outputs]
        result = Result(outs[0] if len(outs) == 1 else tuple(outs), total, run.segments,
                        predicted_segments(dep.plan), fallback, note, bytes_up, dep.plan.mode,
                        run.predicted_now)
        dep.served += 1
        if not fallback and dep.served > COLD_REQUESTS:
            self.load.observe_request(dep.plan.predicted, run.segments, dep.stage_ids)
        if self.opts.adapt and not fallback and dep.route:
            self._maybe_replan(result)
        return result

    def _run_device(self, dep: _Deployment, env: dict[str, Any]) -> float:
        stage = dep.stages.get(dep.plan.tiers[0])
        if stage is None or all(self.graph.node(n).kind == "placeholder" for n in stage.nodes):
            return 0.0  # nothing to compute: running (and dilating) an identity costs ~1.5 ms
        args = [env[n] for n in stage.inputs]
        if dep.device_module is None:
            dep.device_module = device_module(stage, args)
        out, ms = run_on_device(dep.device_module, args, self.opts.device_dilation)
        env.update(zip(stage.outputs, out, strict=True))
        return ms

    def _request(self, dep: _Deployment, run: _Run) -> tuple[pb.InferRequest, int]:
        hop = dep.route[0]
        req = pb.InferRequest(request_id=f"{uuid.uuid4().hex[:8]}-{next(self._seq)}",
                              route=dep.route, want=dep.want, return_codec=self.opts.return_codec)
        t0 = time.perf_counter()
        req.tensors.extend(tensors.encode(run.env, hop.needs, hop.codec))
        run.segments["encode"] = (time.perf_counter() - t0) * 1000.0
        return req, tensors.payload_bytes(req.tensors)

    @staticmethod
    def _uplink_key(dep: _Deployment) -> str:
        return f"{dep.plan.tiers[0]}-{dep.plan.tiers[1]}_uplink"

    def _remote(self, dep: _Deployment, run: _Run) -> tuple[bool, str, int]:
        run.req, run.nbytes = self._request(dep, run)
        run.sent = time.perf_counter()
        try:
            run.segments[self._uplink_key(dep)] = self._send_uplink(run.req)
            reply = self._call(run.req)
            arrive(reply, max_wait_s=self.opts.timeout_s)
        except _Unreachable:
            self._finish_locally(dep, run.env)
            return True, "edge unreachable (stages not deployed); ran locally", run.nbytes
        except grpc.RpcError as e:
            return self._failed(dep, run, e.code(), e.details())
        return self._settle(dep, run, reply)

    def _settle(self, dep: _Deployment, run: _Run, reply: pb.InferReply
                ) -> tuple[bool, str, int]:
        """Take the edge's reply (or the error it carries) for `run`."""
        if reply.error_code:
            code = getattr(grpc.StatusCode, reply.error_code, grpc.StatusCode.UNKNOWN)
            return self._failed(dep, run, code, reply.error)
        wall = (time.perf_counter() - run.sent) * 1000.0
        self._backoff.ok()
        try:
            run.env.update(tensors.decode(reply.tensors, None,
                                          self.opts.max_decoded_mb * tensors.MB))
        except (CodecError, ValueError) as e:
            self._finish_locally(dep, run.env)
            return True, f"edge reply was malformed ({e}); ran locally", run.nbytes
        missing = [n for n in dep.want if n not in run.env]
        if missing:  # never hand back a partial result
            self._finish_locally(dep, run.env)
            return True, f"edge reply lacked {', '.join(missing)}; ran locally", run.nbytes
        fill_segments(run.segments, reply, dep.plan.tiers)
        first = reply.timings[0]
        # what the edge did not spend busy was the link, both ways (forward_ms already holds
        # the edge's own uplink and everything beyond it)
        link_ms = wall - (first.queue_ms + first.decode_ms + first.compute_ms + first.encode_ms
                          + first.forward_ms)
        self.estimator.observe(run.nbytes + first.bytes_out,
                               max(1e-6, (link_ms - dep.route[0].link_rtt_ms) / 1000.0))
        return reply.fallback, reply.note, run.nbytes

    def _failed(self, dep: _Deployment, run: _Run, code: grpc.StatusCode, details: str
                ) -> tuple[bool, str, int]:
        """The edge failed `run`: finish it here if that is a failure to survive, else raise."""
        self._check_usable(code, details, f"request {run.req.request_id}")
        self._mark_down()
        self._finish_locally(dep, run.env)
        return True, f"edge failed ({code.name}): {details}; ran locally", run.nbytes

    def _check_usable(self, code: grpc.StatusCode, details: str, what: str) -> None:
        check_usable(code, details, what, self.opts.fallback_local)

    def check_edge(self, timeout_s: float = 10.0) -> None:
        """EdgeWeaveError naming the cause (unreachable, token, TLS) unless the edge answers."""
        if self._stub is not None:
            health(self._stub, self._target, timeout_s)

    def _call(self, req: pb.InferRequest) -> pb.InferReply:
        """Infer; a node that lost its stages (restarted) gets them again, once."""
        dep = self.deployment
        if not dep.uploaded:
            self._upload(dep)
            if not dep.uploaded:
                raise _Unreachable
        try:
            return self._stub.Infer(req, timeout=self.opts.timeout_s)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
        self._upload(dep)
        return self._stub.Infer(req, timeout=self.opts.timeout_s)

    def _send_uplink(self, req: pb.InferRequest) -> float:
        if self._uplink is None:
            return 0.0
        return send_on(self._uplink if self.opts.shape_bandwidth else None,
                       self._uplink.rtt_ms, req)

    def _finish_locally(self, dep: _Deployment, env: dict[str, Any]) -> None:
        with torch.inference_mode():
            for key in dep.plan.tiers[1:]:
                stage = dep.stages.get(key)
                if stage is not None:
                    out = stage.module(*(env[n] for n in stage.inputs))
                    env.update(zip(stage.outputs, out, strict=True))

    def _mark_down(self) -> None:
        self._backoff.fail()

    # ---- adaptation -----------------------------------------------------------------------

    def _maybe_replan(self, result: Result) -> None:
        """Re-plan when the bandwidth estimate or the tiers' load factors predict a better
        placement (Edgent's dynamic mode; Neurosurgeon's load-aware partitioning)."""
        if self.profile is None or self.estimator.mbps is None:
            return
        current = self.deployment.plan
        hop = current.hop_names()[0]
        believed = current.links[hop].mbps
        load = self.load.scaled()
        seen = self._checked_load
        if (abs(self.estimator.mbps - believed) < 0.1 * believed
                and all(abs(k - seen.get(t, 1.0)) < self.opts.load_change * seen.get(t, 1.0)
                        for t, k in load.items())):
            return
        self._checked_load = load
        prof = self.profile.with_link(hop, mbps=self.estimator.mbps)
        loaded = prof.with_load(load)
        candidate = plan(loaded, current.objective)
        now, new = _cost(current, loaded), _cost(candidate, loaded)
        switch = {"estimate_mbps": self.estimator.mbps, "load_factors": load,
                  "old_mode": current.mode, "new_mode": candidate.mode,
                  "predicted_old": now, "predicted_new": new, "switched": False}
        # plans are priced without load: the factors are applied on top, per request
        if candidate.placement != current.placement and new < now * (1 - self.opts.min_gain):
            self.deployment = self._prepare(candidate.priced(prof))
            if self._example is not None:
                self.deploy(self._example)
            switch["switched"] = True
            log.info("re-planned at %.2f Mbit/s, load %s: %s -> %s, predicted %.1f -> %.1f",
                     self.estimator.mbps, load, current.mode, candidate.mode, now, new)
        else:  # keep the plan, priced at the new bandwidth so we do not re-check forever
            self.deployment.plan = current.priced(prof)
        self.switches.append(switch)


@dataclass
class _Run:
    """One request in progress."""

    predicted_now: float
    start: float
    env: dict[str, Any]
    segments: dict[str, float] = field(default_factory=dict)
    req: pb.InferRequest = field(default_factory=pb.InferRequest)
    nbytes: int = 0
    sent: float = 0.0


def _stage_id(model: str, stage: Stage) -> str:
    """Names a stage by the nodes it runs, so its load offset survives a re-plan back to it."""
    return f"{model}:{stage.key}:" + hashlib.sha1(",".join(stage.nodes).encode()).hexdigest()[:12]


def _cost(p: Plan, prof: Profile) -> float:
    """What `p`'s placement costs on `prof`, by `p`'s objective and with its cut codecs."""
    cm = CostModel(prof, cuts=p.cuts)
    return cm.evaluate(cm.labels_of(p.placement)).value(p.objective)
