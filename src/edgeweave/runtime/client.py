"""The device side of co-inference: run the head, ship activations, survive the network.

The device holds the whole model (it must: a request may have to finish here), so when the edge
is unreachable, crashed, too slow or refuses the request (its queue is full, or it cannot meet
the request's deadline), the remaining stages run locally and the result is marked as a
fallback; an edge that failed is retried after an exponential back-off. Given several edges,
each request goes to the one expected to answer soonest and fails over to the next
(`runtime.edges`). With an SLO (`ClientOptions.slo_ms`), each request carries what is left of
it as its deadline. Every input gets exactly one result or one clear error.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import torch

from edgeweave.codec import CodecError
from edgeweave.errors import EdgeWeaveError
from edgeweave.graph import Graph
from edgeweave.plan import Plan, plan
from edgeweave.profile import Profile
from edgeweave.runtime import tensors
from edgeweave.runtime.bandwidth import BandwidthEstimator
from edgeweave.runtime.client_data import (  # re-exported: callers import them from here
    ClientOptions,
    Deployment,
    Result,
    Run,
    plan_cost,
)
from edgeweave.runtime.client_stages import package_remote, prepare
from edgeweave.runtime.device_compute import device_module, run_on_device
from edgeweave.runtime.edge_probe import check_usable, health
from edgeweave.runtime.edges import Edge, EdgePool
from edgeweave.runtime.flight import arrive, send_on
from edgeweave.runtime.load import LoadFactors
from edgeweave.runtime.node import message_options
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.recipe import (
    deploy_stream,
)
from edgeweave.runtime.segments import fill_segments, predicted_segments
from edgeweave.runtime.serving import to_proto
from edgeweave.runtime.shaper import LinkShaper
from edgeweave.security import ClientTLS

log = logging.getLogger("edgeweave.runtime")


#: A freshly deployed stage's first calls are slow (TorchScript specialises on them: 2-3x on
#: alexnet here), which says nothing about the machines' load, so they are not learnt from.
COLD_REQUESTS = 2


class _Unreachable(Exception):
    """The edge could not take the stages; the request finishes on the device."""


class CoInferenceClient:
    def __init__(self, graph: Graph, chosen: Plan, edge_target: str | Sequence[str] | None, *,
                 token: str | None = None, tls: ClientTLS | None = None,
                 options: ClientOptions | None = None, profile: Profile | None = None,
                 load: LoadFactors | None = None, prefix: Sequence[str] = ()):
        self.graph = graph
        # nodes whose values the caller computes and hands to infer() (a cluster's partitioned
        # prefix, runtime.cluster): no stage here runs them
        self._prefix = frozenset(prefix)
        self.opts = options or ClientOptions()
        self.profile = profile
        self.estimator = BandwidthEstimator()
        # shared by clients of one device: they all sample the same machines' speed
        self.load = load or LoadFactors()
        self._checked_load: dict[str, float] = {}  # factors the last re-plan check used
        self.switches: list[dict[str, Any]] = []
        targets = [edge_target] if isinstance(edge_target, str) else list(edge_target or ())
        self.edges = EdgePool(targets, token, tls, message_options(self.opts.max_message_mb),
                              self.opts.backoff_s, throttle_k=self.opts.throttle_k)
        self._example: torch.Tensor | None = None
        self._seq = itertools.count()
        # the emulated network as it really is; the plan only holds a belief about it
        self.network = {h: (lk.mbps, lk.rtt_ms) for h, lk in chosen.links.items()}
        hops = chosen.hop_names()
        self._uplink = LinkShaper(*self.network[hops[0]]) if hops else None
        self.deployment = prepare(graph, chosen, self.network, self._prefix, self.opts)

    def set_link_mbps(self, hop: str, mbps: float) -> None:
        """Change the emulated network's bandwidth on `hop` (a step, or a trace sample); the
        plan learns of it only through its own transfers."""
        self.network[hop] = (mbps, self.network[hop][1])
        if self._uplink is not None and hop == self.deployment.plan.hop_names()[0]:
            self._uplink.set_mbps(mbps)
        for k, name in enumerate(self.deployment.plan.hop_names()[: len(self.deployment.route)]):
            self.deployment.route[k].link_mbps = self.network[name][0]

    # ---- plan -> stages, route ------------------------------------------------------------

    def deploy(self, example: torch.Tensor, given: dict[str, torch.Tensor] | None = None
               ) -> list[pb.DeployReply]:
        """Describe the remote stages (recipe + weights; each node builds and traces its stage
        itself) and upload them, content-addressed, so a re-deploy of the same stage is a cache
        hit. If the edge is unreachable, requests run locally and the upload is retried with
        the edge."""
        self._example = example
        dep = self.deployment
        package_remote(self.graph, dep, example, given)
        if dep.packages and not self.edges:
            raise EdgeWeaveError("the plan runs stages off the device but no edge address was "
                                 "given (--edge host:port)")
        return [r for edge in self.edges.up() for r in self._upload(dep, edge)]

    def _upload(self, dep: Deployment, edge: Edge) -> list[pb.DeployReply]:
        """Deploy the remote stages to `edge` (an edge that fails is backed off from)."""
        replies = []
        serving = to_proto(self.opts.serving) if self.opts.serving else None
        for key, pkg in dep.packages.items():
            # nodes on the way cache the stage too, so each can finish a request if the node
            # above it fails
            try:
                replies.append(edge.stub.Deploy(
                    deploy_stream(pkg, f"{self.graph.name}:{key}",
                                  dep.plan.tiers.index(key) - 1, serving=serving),
                    timeout=max(self.opts.timeout_s, 120.0)))
            except grpc.RpcError as e:
                self._check_usable(e.code(), e.details() or "", f"the {key} stage")
                log.warning("deploy to %s failed (%s); running locally until the edge is back",
                            edge.target, e.code().name)
                self.edges.failed(edge)
                return replies
            edge.uploaded.add(pkg.digest)
        return replies

    @staticmethod
    def _uploaded(dep: Deployment, edge: Edge) -> bool:
        return all(pkg.digest in edge.uploaded for pkg in dep.packages.values())

    # ---- inference ------------------------------------------------------------------------

    def infer(self, x: torch.Tensor, given: dict[str, torch.Tensor] | None = None) -> Result:
        """The model's output for ``x``; ``given`` holds the values of the prefix nodes the
        caller computed."""
        dep = self.deployment
        run = self._begin(dep, x, given)
        fallback, note, bytes_up = False, "", 0
        if dep.route:
            fallback, note, bytes_up = self._remote(dep, run)
        return self._end(dep, run, fallback, note, bytes_up)

    def infer_stream(self, xs: Sequence[torch.Tensor]) -> Iterator[Result]:
        """Results for `xs`, in order, sent over one InferStream (their device heads run
        first). A request the edge fails is handled alone, as `infer` handles it (fallback, or
        an EdgeWeaveError raised at its turn); the others are unaffected."""
        dep = self.deployment
        edge = self.edges.pick() if dep.route else None
        if edge is None or not self._uploaded(dep, edge):
            if edge is not None:
                self.edges.release(edge)
            yield from (self.infer(x) for x in xs)
            return
        try:
            yield from self._stream(dep, edge, xs)
        finally:
            self.edges.release(edge)

    def _stream(self, dep: Deployment, edge: Edge, xs: Sequence[torch.Tensor]
                ) -> Iterator[Result]:
        runs = [self._begin(dep, x) for x in xs]
        for run in runs:
            run.req, run.nbytes = self._request(dep, run)
            run.segments[self._uplink_key(dep)] = self._send_uplink(run.req)
            run.sent = time.perf_counter()
            self._stamp_deadline(run, edge)
        replies = edge.stub.InferStream(iter([r.req for r in runs]),
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
                yield self._end(dep, run, *self._settle(dep, run, reply, edge))
        except grpc.RpcError as e:  # the stream itself broke: the unanswered requests failed
            code, why = e.code(), e.details()
        for run in runs[done:]:
            yield self._end(dep, run, *self._failed(dep, run, code, why, edge, alive=False))

    def _begin(self, dep: Deployment, x: torch.Tensor,
               given: dict[str, torch.Tensor] | None = None) -> Run:
        """Start a request: the load-scaled prediction, then the device's own stage."""
        run = Run(self.load.predict_ms(dep.plan.predicted, dep.stage_ids), time.perf_counter(),
                   {self.graph.placeholders[0]: x, **(given or {})})
        run.segments[f"{dep.plan.tiers[0]}_compute"] = self._run_device(dep, run.env)
        return run

    def _end(self, dep: Deployment, run: Run, fallback: bool, note: str, bytes_up: int
             ) -> Result:
        total = (time.perf_counter() - run.start) * 1000.0
        outs = [run.env[o] for o in self.graph.outputs]
        result = Result(outs[0] if len(outs) == 1 else tuple(outs), total, run.segments,
                        predicted_segments(dep.plan), fallback, note, bytes_up, dep.plan.mode,
                        run.predicted_now, run.batch)
        dep.served += 1
        if not fallback and dep.served > COLD_REQUESTS:
            self.load.observe_request(dep.plan.predicted, run.segments, dep.stage_ids)
        if self.opts.adapt and not fallback and dep.route:
            self._maybe_replan(result)
        return result

    def _run_device(self, dep: Deployment, env: dict[str, Any]) -> float:
        stage = dep.stages.get(dep.plan.tiers[0])
        if stage is None or all(self.graph.node(n).kind == "placeholder" for n in stage.nodes):
            return 0.0  # nothing to compute: running (and dilating) an identity costs ~1.5 ms
        args = [env[n] for n in stage.inputs]
        if dep.device_module is None:
            dep.device_module = device_module(stage, args)
        out, ms = run_on_device(dep.device_module, args, self.opts.device_dilation,
                                self.opts.device_spin)
        env.update(zip(stage.outputs, out, strict=True))
        return ms

    def _request(self, dep: Deployment, run: Run) -> tuple[pb.InferRequest, int]:
        hop = dep.route[0]
        req = pb.InferRequest(request_id=f"{uuid.uuid4().hex[:8]}-{next(self._seq)}",
                              route=dep.route, want=dep.want, return_codec=self.opts.return_codec)
        t0 = time.perf_counter()
        req.tensors.extend(tensors.encode(run.env, hop.needs, hop.codec))
        run.segments["encode"] = (time.perf_counter() - t0) * 1000.0
        return req, tensors.payload_bytes(req.tensors)

    @staticmethod
    def _uplink_key(dep: Deployment) -> str:
        return f"{dep.plan.tiers[0]}-{dep.plan.tiers[1]}_uplink"

    def _remote(self, dep: Deployment, run: Run) -> tuple[bool, str, int]:
        """Send the request to the edge expected to answer soonest, failing over to the next
        while its deadline allows; else (or when every edge failed) run it here."""
        run.req, run.nbytes = self._request(dep, run)
        run.sent = time.perf_counter()
        run.segments[self._uplink_key(dep)] = self._send_uplink(run.req)
        tried: list[Edge] = []
        why = "edge in back-off"
        while (edge := self.edges.pick(tried)) is not None:
            tried.append(edge)
            if len(tried) == 1 and not edge.throttle.admit(time.monotonic()):
                self.edges.release(edge)
                why = f"{self._edge_name(edge)} has been refusing most requests (throttled)"
                break
            if not self._stamp_deadline(run, edge):
                self.edges.release(edge)
                why = "its deadline passed before an edge could answer"
                break
            start = time.perf_counter()
            try:
                reply = self._call(dep, edge, run)
                arrive(reply, max_wait_s=self.opts.timeout_s)
            except _Unreachable:
                self.edges.release(edge)
                why = f"{self._edge_name(edge)} unreachable (stages not deployed)"
                continue
            except grpc.RpcError as e:
                alive = self.edges.refused(edge, (time.perf_counter() - start) * 1000.0, e)
                self._check_usable(e.code(), e.details(), f"request {run.req.request_id}")
                if not alive:
                    self.edges.failed(edge)
                why = f"{self._edge_name(edge)} failed ({e.code().name}): {e.details()}"
                continue
            self.edges.answered(edge, (time.perf_counter() - start) * 1000.0, reply)
            return self._settle(dep, run, reply, edge)
        self._finish_locally(dep, run.env)
        return True, f"{why}; ran locally", run.nbytes

    def _edge_name(self, edge: Edge) -> str:
        return "edge" if len(self.edges.edges) == 1 else f"edge {edge.target}"

    def _stamp_deadline(self, run: Run, edge: Edge) -> bool:
        """Put what is left of the SLO on the request, less the way back (the link's half RTT)
        and what the edge's round trips spend outside the node (`Edge.margin_ms`); False when
        nothing is left."""
        if self.opts.slo_ms is None:
            return True
        left_ms = self.opts.slo_ms - (time.perf_counter() - run.start) * 1000.0
        left_ms -= self.deployment.route[0].link_rtt_ms / 2.0
        run.req.grace_ms = edge.grace_ms(left_ms)
        left_ms -= edge.margin_ms(left_ms)
        run.req.deadline_ms = left_ms
        return left_ms > 0

    def _timeout_s(self, run: Run) -> float:
        """The call's own deadline: the request's, with a little grace for the network (an
        edge that honours deadlines answers by then), never above timeout_s."""
        if self.opts.slo_ms is None or run.req.deadline_ms <= 0:
            return self.opts.timeout_s
        return min(self.opts.timeout_s, run.req.deadline_ms / 1000.0 + 0.5)

    def _settle(self, dep: Deployment, run: Run, reply: pb.InferReply, edge: Edge
                ) -> tuple[bool, str, int]:
        """Take the edge's reply (or the error it carries) for `run`."""
        if reply.error_code:
            code = getattr(grpc.StatusCode, reply.error_code, grpc.StatusCode.UNKNOWN)
            alive = code in (grpc.StatusCode.RESOURCE_EXHAUSTED,
                             grpc.StatusCode.DEADLINE_EXCEEDED)
            return self._failed(dep, run, code, reply.error, edge, alive)
        wall = (time.perf_counter() - run.sent) * 1000.0
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
        run.batch = reply.batch
        first = reply.timings[0]
        # what the edge did not spend busy was the link, both ways (forward_ms already holds
        # the edge's own uplink and everything beyond it)
        link_ms = wall - (first.queue_ms + first.decode_ms + first.compute_ms + first.encode_ms
                          + first.forward_ms)
        self.estimator.observe(run.nbytes + first.bytes_out,
                               max(1e-6, (link_ms - dep.route[0].link_rtt_ms) / 1000.0))
        return reply.fallback, reply.note, run.nbytes

    def _failed(self, dep: Deployment, run: Run, code: grpc.StatusCode, details: str,
                edge: Edge, alive: bool) -> tuple[bool, str, int]:
        """The edge failed `run`: finish it here if that is a failure to survive, else raise.
        An edge that only refused the request (`alive`) is not backed off from."""
        self._check_usable(code, details, f"request {run.req.request_id}")
        if not alive:
            self.edges.failed(edge)
        self._finish_locally(dep, run.env)
        return (True, f"{self._edge_name(edge)} failed ({code.name}): {details}; ran locally",
                run.nbytes)

    def _check_usable(self, code: grpc.StatusCode, details: str, what: str) -> None:
        check_usable(code, details, what, self.opts.fallback_local)

    def check_edge(self, timeout_s: float = 10.0) -> None:
        """EdgeWeaveError naming the cause (unreachable, token, TLS) unless the edge answers."""
        for edge in self.edges.edges:
            health(edge.stub, edge.target, timeout_s)

    def _call(self, dep: Deployment, edge: Edge, run: Run) -> pb.InferReply:
        """Infer on `edge`; an edge that does not hold the stages (new to us, restarted, or it
        evicted them) gets them first, once."""
        for attempt in range(2):
            if attempt or not self._uploaded(dep, edge):
                edge.uploaded.clear()
                self._upload(dep, edge)
                if not self._uploaded(dep, edge):
                    raise _Unreachable
            try:
                return edge.stub.Infer(run.req, timeout=self._timeout_s(run))
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.FAILED_PRECONDITION or attempt:
                    raise
        raise AssertionError("unreachable")

    def _send_uplink(self, req: pb.InferRequest) -> float:
        if self._uplink is None:
            return 0.0
        return send_on(self._uplink if self.opts.shape_bandwidth else None,
                       self._uplink.rtt_ms, req)

    def _finish_locally(self, dep: Deployment, env: dict[str, Any]) -> None:
        with torch.inference_mode():
            for key in dep.plan.tiers[1:]:
                stage = dep.stages.get(key)
                if stage is not None:
                    out = stage.module(*(env[n] for n in stage.inputs))
                    env.update(zip(stage.outputs, out, strict=True))

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
        now, new = plan_cost(current, loaded), plan_cost(candidate, loaded)
        switch = {"estimate_mbps": self.estimator.mbps, "load_factors": load,
                  "old_mode": current.mode, "new_mode": candidate.mode,
                  "predicted_old": now, "predicted_new": new, "switched": False}
        # plans are priced without load: the factors are applied on top, per request
        if candidate.placement != current.placement and new < now * (1 - self.opts.min_gain):
            self.deployment = prepare(self.graph, candidate.priced(prof), self.network,
                                      self._prefix, self.opts)
            if self._example is not None:
                self.deploy(self._example)
            switch["switched"] = True
            log.info("re-planned at %.2f Mbit/s, load %s: %s -> %s, predicted %.1f -> %.1f",
                     self.estimator.mbps, load, current.mode, candidate.mode, now, new)
        else:  # keep the plan, priced at the new bandwidth so we do not re-check forever
            self.deployment.plan = current.priced(prof)
        self.switches.append(switch)
