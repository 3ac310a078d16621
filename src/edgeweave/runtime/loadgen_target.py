"""EdgeWeave nodes as the load generator's target: whole models deployed to every node, then
each request sent, without blocking, to the node expected to answer it soonest.

Many logical devices share a few connections per node (`connections`), as requests from one
gateway or one process would. A request a node refuses (a full queue, a deadline it cannot
meet) comes back as REFUSED with its status; when a node fails (UNAVAILABLE, a broken
connection), the request is retried once on another node if one is up, as the device client
fails over. The inputs are random tensors encoded once per model and reused, so the generator
spends its time sending, not encoding. With `throttle_k` the devices throttle themselves as
EdgeWeave's device client can (`runtime.throttle`): a request kept back is THROTTLED, answered
by its device.

The generator shares the host with the node, so what it spends per request is taken from the
system under test (the digits tenants, a few ms each, are served at hundreds of requests a
second). So a request is sent as bytes: each input's part of the message (its tensors, route
and wanted outputs) is serialised once, and per request only its id, deadline and priority are
serialised and appended (a protobuf message followed by another parses as their merge),
instead of copying the tensors into a new message and serialising all of it again on every
send. What remains is gRPC's own: measured at 300 requests/s of a small model, about 0.55 ms of
the generator's CPU per request (0.60 ms before), most of it in creating the call. One process
cannot send much more on a busy host, so `sender_factory` makes the same target in sender
processes (`serve.loadgen.SenderPool`).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
import torch

from edgeweave.errors import EdgeWeaveError
from edgeweave.runtime.edges import Edge, EdgePool
from edgeweave.runtime.node import message_options
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.serving import to_proto
from edgeweave.runtime.whole_model import WholeModel
from edgeweave.security import ClientTLS
from edgeweave.serve import ServingConfig
from edgeweave.serve.loadgen import FAILED, OK, REFUSED, THROTTLED, Outcome

#: Statuses that mean the node answered "no" (it is alive); anything else is a failure.
REFUSALS = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED)
VARIANTS = 4  # distinct inputs per model


class GrpcTarget:
    def __init__(self, targets: Sequence[str], models: Sequence[WholeModel],
                 token: str | None = None, tls: ClientTLS | None = None,
                 connections: int = 2, timeout_s: float = 30.0, seed: int = 0,
                 max_message_mb: float = 64.0, throttle_k: float = 0.0):
        if not targets:
            raise EdgeWeaveError("loadgen: give at least one node (--edge host:port)")
        self.models = {m.name: m for m in models}
        gen = torch.Generator().manual_seed(seed)
        self.inputs = {m.name: [m.encode(torch.randn(m.graph.input_shape, generator=gen))
                                for _ in range(VARIANTS)] for m in models}
        # each variant's constant part of the request, serialised once (see module doc)
        bodies = {name: [_body(self.models[name], enc) for enc in encoded]
                  for name, encoded in self.inputs.items()}
        self._args: dict[str, Any] = {
            "targets": list(targets), "token": token, "tls": tls, "connections": connections,
            "timeout_s": timeout_s, "max_message_mb": max_message_mb, "throttle_k": throttle_k}
        self._connect(bodies, **self._args)

    def _connect(self, bodies: dict[str, list[bytes]], targets: Sequence[str],
                 token: str | None, tls: ClientTLS | None, connections: int, timeout_s: float,
                 max_message_mb: float, throttle_k: float) -> None:
        self.bodies, self.timeout_s = bodies, timeout_s
        self.pool = EdgePool(targets, token, tls, message_options(max_message_mb),
                             backoff_s=(0.2, 2.0), connections=connections,
                             throttle_k=throttle_k)
        self.infer = {id(e): [c.unary_unary(INFER, response_deserializer=pb.InferReply.FromString)
                              for c in e.channels] for e in self.pool.edges}

    def sender_factory(self) -> Callable[..., GrpcTarget]:
        """A picklable maker of this target's twin in another process (`loadgen.SenderPool`):
        the same nodes, requests and knobs (a keyword, e.g. `throttle_k`, overrides one), its
        own connections; it sends, it does not deploy."""
        return functools.partial(_sender_target, self.bodies, **self._args)

    def deploy(self, serving: ServingConfig | Mapping[str, ServingConfig]) -> dict[str, int]:
        """Deploy every model to every node; returns each model's batch limit (the smallest
        over the nodes). EdgeWeaveError names a node that refuses."""
        limits: dict[str, int] = {}
        for name, model in self.models.items():
            cfg = serving[name] if isinstance(serving, Mapping) else serving
            for edge in self.pool.edges:
                try:
                    reply = edge.stub.Deploy(model.deploy_stream(to_proto(cfg)),
                                             timeout=max(self.timeout_s, 300.0))
                except grpc.RpcError as e:
                    raise EdgeWeaveError(f"node {edge.target} refused to deploy {name}: "
                                         f"{e.code().name}: {e.details()}") from None
                limits[name] = min(limits.get(name, reply.max_batch), reply.max_batch)
        return limits

    def remove(self) -> None:
        """Remove every model from every node (best effort: the run is over)."""
        for model in self.models.values():
            for edge in self.pool.edges:
                with contextlib.suppress(grpc.RpcError):
                    edge.stub.Remove(pb.RemoveRequest(stage_digest=model.digest), timeout=10)

    def stats(self) -> dict[str, dict[str, float]]:
        """Each node's metrics (its Stats RPC: the `edgeweave_*` series), by node address."""
        return {edge.target: dict(edge.stub.Stats(pb.StatsRequest(), timeout=10).values)
                for edge in self.pool.edges}

    def send(self, model: str, client: int, deadline_s: float, priority: int,
             done: Callable[[Outcome], None]) -> None:
        req = _Request(self.bodies[model][client % VARIANTS], f"{client}-{time.monotonic_ns()}",
                       priority, time.monotonic() + deadline_s)
        self._send(req, done, ())

    def _send(self, req: _Request, done: Callable[[Outcome], None],
              tried: tuple[Edge, ...]) -> None:
        edge = self.pool.pick(tried)
        if edge is None:
            done(Outcome(FAILED, "UNAVAILABLE", "no node is up"))
            return
        sent = time.monotonic()
        if not tried and not edge.throttle.admit(sent):
            self.pool.release(edge)
            done(Outcome(THROTTLED, "THROTTLED", f"{edge.target} has been refusing most "
                                                 "requests: answered by the device"))
            return
        left_ms = (req.deadline - sent) * 1000.0
        deadline_ms = max(1e-3, left_ms - edge.margin_ms(left_ms))
        tail = _tail(req.request_id, deadline_ms, req.priority, edge.grace_ms(left_ms))
        call = self.infer[id(edge)][edge.turn()].future(req.body + tail, timeout=self.timeout_s)
        call.add_done_callback(lambda f: self._finish(f, edge, sent, req, done, (*tried, edge)))

    def _finish(self, call: grpc.Future, edge: Edge, sent: float, req: _Request,
                done: Callable[[Outcome], None], tried: tuple[Edge, ...]) -> None:
        round_trip_ms = (time.monotonic() - sent) * 1000.0
        error = call.exception()
        if error is None:
            reply = call.result()
            self.pool.answered(edge, round_trip_ms, reply)
            done(Outcome(OK) if reply.tensors else Outcome(FAILED, "EMPTY", "no outputs"))
            return
        code = error.code()  # type: ignore[attr-defined]
        details = error.details() or ""  # type: ignore[attr-defined]
        if self.pool.refused(edge, round_trip_ms, error) and code in REFUSALS:  # type: ignore[arg-type]
            done(Outcome(REFUSED, code.name, details))
            return
        self.pool.failed(edge)
        if time.monotonic() < req.deadline and len(tried) < len(self.pool.edges):
            self._send(req, done, tried)  # fail over, as a device does
            return
        done(Outcome(FAILED, code.name, details))


def _sender_target(bodies: dict[str, list[bytes]], **args: Any) -> GrpcTarget:
    target = GrpcTarget.__new__(GrpcTarget)
    target.models, target.inputs, target._args = {}, {}, args
    target._connect(bodies, **args)
    return target


#: The node's Infer method, called with the request already serialised (see module doc).
INFER = "/edgeweave.v1.Node/Infer"


class _Request:
    """One request of the generator: its constant bytes and what is its own."""

    __slots__ = ("body", "deadline", "priority", "request_id")

    def __init__(self, body: bytes, request_id: str, priority: int, deadline: float):
        self.body, self.request_id = body, request_id
        self.priority, self.deadline = priority, deadline


def _body(model: WholeModel, encoded: Sequence[pb.Tensor]) -> bytes:
    """A request for `model` on `encoded` without its own fields, serialised."""
    req = model.request(encoded)
    req.ClearField("request_id")
    return req.SerializeToString()


def _tail(request_id: str, deadline_ms: float, priority: int, grace_ms: float = 0.0) -> bytes:
    """The per-request fields, serialised: appended to a body, they complete the request."""
    return pb.InferRequest(request_id=request_id, deadline_ms=deadline_ms, priority=priority,
                           grace_ms=grace_ms).SerializeToString()
