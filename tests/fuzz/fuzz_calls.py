"""Calling any gRPC method from its descriptor, and the crashes the fuzz has found in code
other parts own (tolerated by the fuzz, pinned as strict xfails by test_fuzz_findings)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import grpc
from fuzz_servers import MD
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from edgeweave.runtime.proto import edgeweave_pb2  # noqa: F401 - registers the descriptors
from edgeweave.train.wire import fl_pb2, peer_pb2, split_pb2  # noqa: F401

CALL_S = 2.0  # each fuzzed call's deadline
POOL = descriptor_pool.Default()


@dataclass(frozen=True)
class Known:
    """A crash the fuzz found in another part's code, tolerated here until it is fixed."""

    server: str
    methods: tuple[str, ...]
    details: str  # a regex matching the UNKNOWN status's details
    reason: str


#: crashes the fuzz found and nobody has fixed yet (each also a case in test_fuzz_findings.py);
#: empty: every one found so far is fixed, and test_fuzz_findings.py keeps them fixed
KNOWN: list[Known] = []


def service(name: str) -> ServiceDescriptor:
    return POOL.FindServiceByName(name)


def call(ch: grpc.Channel, method: MethodDescriptor, request) -> tuple[grpc.StatusCode, str]:
    """One authenticated call of any shape; a server stream is read for two messages at most
    (a Tasks stream legitimately stays open) and then cancelled."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    out = message_factory.GetMessageClass(method.output_type).FromString

    def ser(m):
        return m.SerializeToString()

    try:
        if method.client_streaming and method.server_streaming:
            for _ in ch.stream_stream(path, ser, out)(iter(request), metadata=MD,
                                                      timeout=CALL_S):
                pass
        elif method.client_streaming:
            ch.stream_unary(path, ser, out)(iter(request), metadata=MD, timeout=CALL_S)
        elif method.server_streaming:
            stream = ch.unary_stream(path, ser, out)(request, metadata=MD, timeout=CALL_S)
            for i, _ in enumerate(stream):
                if i == 1:
                    stream.cancel()
                    break
        else:
            ch.unary_unary(path, ser, out)(request, metadata=MD, timeout=CALL_S)
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.CANCELLED and method.server_streaming:
            return grpc.StatusCode.OK, "read two messages, then cancelled"
        return e.code(), e.details() or ""
    return grpc.StatusCode.OK, ""




def known(server: str, method: str, details: str) -> Known | None:
    return next((k for k in KNOWN if k.server == server and method in k.methods
                 and re.search(k.details, details)), None)
