"""fl.proto's ``FederatedLearning`` service in front of a :class:`~edgeweave.train.backends.
grpc_backend.GrpcBackend`: each RPC calls the backend, and a :class:`Reject` becomes the call's
gRPC status (the server keeps serving). ``Tasks`` streams pre-serialized task bytes (see
``GrpcBackend.fit``) with a PING every heartbeat so that devices notice a dead server.
"""

from __future__ import annotations

import queue
from typing import TYPE_CHECKING

import grpc

from edgeweave.train.wire import fl_pb2

if TYPE_CHECKING:
    from edgeweave.train.backends.grpc_backend import GrpcBackend

PING = fl_pb2.Task(kind=fl_pb2.Task.PING).SerializeToString()
SHUTDOWN = fl_pb2.Task(kind=fl_pb2.Task.SHUTDOWN).SerializeToString()


class Reject(Exception):
    """A request the server refuses: becomes the call's gRPC status, never kills the server.
    Public so that modes built on this backend (``edgeweave.train.secagg.backend``) refuse
    their own messages the same way."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class Servicer:
    def __init__(self, backend: GrpcBackend) -> None:
        self.b = backend

    def Register(self, request, context):
        try:
            sess = self.b._register(request)
        except Reject as e:
            context.abort(e.code, e.details)
        return fl_pb2.RegisterReply(session=sess.session, model_spec=self.b.model_spec,
                                    max_update_bytes=self.b.max_update_bytes,
                                    heartbeat_s=self.b.heartbeat_s)

    def Tasks(self, request, context):
        try:
            sess = self.b._session(request.session)
        except Reject as e:
            context.abort(e.code, e.details)
        try:
            self.b._stream_state(sess, True)
        except Reject as e:
            context.abort(e.code, e.details)
        if not context.add_callback(lambda: self.b._stream_state(sess, False)):
            self.b._stream_state(sess, False)  # the call ended before the callback went in
            return
        while context.is_active():
            try:
                item = sess.queue.get(timeout=self.b.heartbeat_s)
            except queue.Empty:
                yield PING
                continue
            if item is None:
                return
            yield item
            if item is SHUTDOWN:
                return

    def SubmitUpdate(self, request, context):
        try:
            self.b._submit(request)
        except Reject as e:
            context.abort(e.code, e.details)
        return fl_pb2.UpdateReply(accepted=True)

    def SecAgg(self, request, context):
        try:
            self.b._secagg(request)
        except Reject as e:
            context.abort(e.code, e.details)
        return fl_pb2.UpdateReply(accepted=True)


def handlers(servicer: Servicer) -> grpc.GenericRpcHandler:
    """fl.proto's service, except that Tasks streams pre-serialized bytes (see :meth:`fit`)."""
    return grpc.method_handlers_generic_handler("edgeweave.fl.v1.FederatedLearning", {
        "Register": grpc.unary_unary_rpc_method_handler(
            servicer.Register, request_deserializer=fl_pb2.RegisterRequest.FromString,
            response_serializer=fl_pb2.RegisterReply.SerializeToString),
        "Tasks": grpc.unary_stream_rpc_method_handler(
            servicer.Tasks, request_deserializer=fl_pb2.TasksRequest.FromString,
            response_serializer=bytes),
        "SubmitUpdate": grpc.unary_unary_rpc_method_handler(
            servicer.SubmitUpdate, request_deserializer=fl_pb2.Update.FromString,
            response_serializer=fl_pb2.UpdateReply.SerializeToString),
        "SecAgg": grpc.unary_unary_rpc_method_handler(
            servicer.SecAgg, request_deserializer=fl_pb2.SecAggMessage.FromString,
            response_serializer=fl_pb2.UpdateReply.SerializeToString),
    })
