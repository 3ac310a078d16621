"""Split learning over gRPC: the edge part as a server, the device as a client in its process.

The edge serves split.proto's ``SplitLearning`` service behind the bearer-token interceptor of
:mod:`edgeweave.security` (optionally inside TLS, as the FL wire does). Every request is checked
(:class:`~edgeweave.train.split.parts.SplitEdge` validates codecs, dtypes, shapes, finite
values, label ranges and weight names) before it can touch the edge model; a bad one is answered
with ``INVALID_ARGUMENT`` and the reason, a missing or wrong token with ``UNAUTHENTICATED``, and
the server keeps serving everyone else.
"""

from __future__ import annotations

import logging
from concurrent import futures
from pathlib import Path

import grpc
import torch

from edgeweave.codec import Encoded
from edgeweave.errors import EdgeWeaveError
from edgeweave.rpc import server_options
from edgeweave.security import authed_channel
from edgeweave.train.split.learning import SplitConfig, make_edge
from edgeweave.train.split.messages import (
    encoded_to_msg,
    msg_to_encoded,
    params_from_msgs,
    params_to_msgs,
    payload_nbytes,
)
from edgeweave.train.split.parts import SplitEdge, StepReply
from edgeweave.train.types import Params, TrainError
from edgeweave.train.wire import split_pb2, split_pb2_grpc
from edgeweave.train.wire.auth import TokenAuth, client_tls, listen_on

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 64 * 2**20


class _Servicer(split_pb2_grpc.SplitLearningServicer):
    def __init__(self, edge: SplitEdge, threads: int) -> None:
        self.edge, self.threads = edge, threads

    def _threads(self) -> None:
        # torch's intra-op thread count is per OS thread (an OpenMP setting): gRPC's worker
        # threads start with the default, and a different count splits reductions differently,
        # so results would drift from an in-process run by an ulp per step. Pin it per call.
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    def _fail(self, context: grpc.ServicerContext, e: Exception) -> None:
        if isinstance(e, EdgeWeaveError):
            log.info("split edge: rejected request: %s", e)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        log.exception("split edge: internal error")
        context.abort(grpc.StatusCode.INTERNAL, f"split edge: {type(e).__name__}: {e}")

    def Forward(self, request, context):
        self._threads()
        try:
            act = msg_to_encoded(request.activations, context="split edge: activations")
            labels = msg_to_encoded(request.labels, context="split edge: labels")
            reply = self.edge.step(act, labels, request.train)
        except Exception as e:  # every failure becomes a gRPC status
            self._fail(context, e)
        out = split_pb2.ForwardReply(step=request.step, loss=reply.loss, correct=reply.correct)
        if reply.grad is not None:
            out.gradient.CopyFrom(encoded_to_msg(reply.grad))
        return out

    def PutDeviceWeights(self, request, context):
        self._threads()
        try:
            params = params_from_msgs(list(request.params), self.edge.device_like,
                                      context="split edge: device weights")
            self.edge.put_device_weights(request.client_id, params)
        except Exception as e:
            self._fail(context, e)
        return split_pb2.DeviceWeights(client_id=request.client_id)

    def GetDeviceWeights(self, request, context):
        self._threads()
        try:
            params = self.edge.get_device_weights()
        except Exception as e:
            self._fail(context, e)
        try:
            msgs = params_to_msgs(params, request.codec or "none")
        except Exception as e:
            self._fail(context, e)
        return split_pb2.DeviceWeights(client_id=request.client_id, params=msgs)

    def MiddleForward(self, request, context):
        self._threads()
        try:
            act = msg_to_encoded(request.activations, context="split edge: activations")
            feats = self.edge.middle_forward(request.client_id, request.step, act, request.train)
        except Exception as e:
            self._fail(context, e)
        return split_pb2.MiddleReply(step=request.step, features=encoded_to_msg(feats))

    def MiddleBackward(self, request, context):
        self._threads()
        try:
            grad = msg_to_encoded(request.gradient, context="split edge: feature gradient")
            out = self.edge.middle_backward(request.client_id, request.step, grad)
        except Exception as e:
            self._fail(context, e)
        return split_pb2.MiddleBackwardReply(step=request.step, gradient=encoded_to_msg(out))


class SplitEdgeServer:
    """A gRPC server running the edge part of ``config`` (port 0 picks a free port)."""

    def __init__(self, config: SplitConfig, token: str, listen: str = "127.0.0.1:0", *,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, workers: int = 4,
                 threads: int | None = None, tls_cert: str | Path | None = None,
                 tls_key: str | Path | None = None) -> None:
        if (tls_cert is None) != (tls_key is None):
            raise TrainError("split edge: give both tls_cert and tls_key, or neither")
        self.config = config
        self.edge = make_edge(config)
        self.auth = TokenAuth(token)
        options = [("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.max_send_message_length", max_message_bytes)]
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                                   interceptors=[self.auth], options=server_options(options))
        # torch threads per request: the constructing thread's setting unless given
        threads = threads or torch.get_num_threads()
        split_pb2_grpc.add_SplitLearningServicer_to_server(_Servicer(self.edge, threads),
                                                           self._server)
        self.port, self.address = listen_on(self._server, listen, tls_cert, tls_key,
                                            "split edge")
        log.info("split edge listening on %s", self.address)

    def wait(self) -> None:
        self._server.wait_for_termination()

    def stop(self, grace: float | None = None) -> None:
        self._server.stop(grace)

    def __enter__(self) -> SplitEdgeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class GrpcLink:
    """The device side of the wire: an :class:`~edgeweave.train.split.learning.EdgeLink` whose
    edge is a :class:`SplitEdgeServer` at ``address``."""

    def __init__(self, address: str, token: str, *, timeout_s: float = 30.0,
                 tls_ca: str | Path | None = None, tls_server_name: str | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        options: list[tuple[str, int | str]] = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes)]
        if tls_server_name:
            options.append(("grpc.ssl_target_name_override", tls_server_name))
        self.address, self.timeout_s = address, timeout_s
        if tls_ca is None:
            self.channel = authed_channel(address, token, options=options)
        else:  # TLS authenticates the edge; the token authenticates the device
            from edgeweave.security import TokenClientInterceptor

            channel = grpc.secure_channel(address, client_tls(tls_ca), options=options)
            self.channel = grpc.intercept_channel(channel, TokenClientInterceptor(token))
        self.stub = split_pb2_grpc.SplitLearningStub(self.channel)
        self._codec = "none"

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout_s, wait_for_ready=True)
        except grpc.RpcError as e:
            raise TrainError(f"split edge {self.address}: {e.code().name}: {e.details()}") \
                from None

    def forward(self, client_id: int, step: int, act: Encoded, labels: Encoded,
                train: bool) -> StepReply:
        req = split_pb2.ForwardRequest(client_id=client_id, step=step,
                                       activations=encoded_to_msg(act),
                                       labels=encoded_to_msg(labels), train=train)
        reply = self._call(self.stub.Forward, req)
        grad = (msg_to_encoded(reply.gradient, context=f"split edge {self.address}: gradient")
                if reply.HasField("gradient") else None)
        return StepReply(grad, reply.loss, reply.correct)

    def put_device_weights(self, client_id: int, params: Params, codec: str) -> int:
        msgs = params_to_msgs(params, codec)
        self._codec = codec
        self._call(self.stub.PutDeviceWeights,
                   split_pb2.DeviceWeights(client_id=client_id, params=msgs))
        return payload_nbytes(msgs)

    def get_device_weights(self, client_id: int, like: Params) -> tuple[Params, int]:
        ask = split_pb2.DeviceWeights(client_id=client_id, codec=self._codec)
        reply = self._call(self.stub.GetDeviceWeights, ask)
        params = params_from_msgs(list(reply.params), like,
                                  context=f"split edge {self.address}: device weights")
        return params, payload_nbytes(list(reply.params))

    def middle_forward(self, client_id: int, step: int, act: Encoded, train: bool) -> Encoded:
        req = split_pb2.MiddleRequest(client_id=client_id, step=step,
                                      activations=encoded_to_msg(act), train=train)
        reply = self._call(self.stub.MiddleForward, req)
        return msg_to_encoded(reply.features, context=f"split edge {self.address}: features")

    def middle_backward(self, client_id: int, step: int, grad: Encoded) -> Encoded:
        req = split_pb2.MiddleBackwardRequest(client_id=client_id, step=step,
                                              gradient=encoded_to_msg(grad))
        reply = self._call(self.stub.MiddleBackward, req)
        return msg_to_encoded(reply.gradient, context=f"split edge {self.address}: gradient")

    def close(self) -> None:
        self.channel.close()
