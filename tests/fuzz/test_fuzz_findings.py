"""The crashes the gRPC fuzz found, each as its minimal request: a strict xfail while the
handler lets the exception escape (status UNKNOWN), a failure once it is fixed, so whoever
fixes it removes the mark here and the matching entry in fuzz_calls.KNOWN."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest
from fuzz_calls import KNOWN, call, service
from fuzz_servers import Target, channel
from google.protobuf.message import Message

from edgeweave.runtime.proto import edgeweave_pb2 as pb


@dataclass(frozen=True)
class Case:
    server: str
    method: str
    request: Callable[[Target], Message | list[Message]]
    reason: str


def _infer(mutate: Callable[[pb.InferRequest], None]) -> Callable[[Target], Message]:
    def build(target: Target) -> Message:
        req = pb.InferRequest()
        req.CopyFrom(target.seeds["edgeweave.v1.InferRequest"]()[0])
        mutate(req)
        return req

    return build


def _deploy_past_the_chain(target: Target) -> list[Message]:
    first = pb.DeployRequest()
    first.CopyFrom(target.seeds["edgeweave.v1.DeployRequest"]()[0])
    first.hops_ahead = 2  # edge -> cloud -> (nothing)
    return [first]


_CODEC = r"^Exception (calling application|iterating responses): codec"


def _stale_gradient(target: Target) -> Message:
    """A valid gradient of worker 0 claiming to be computed at version -2**63."""
    grad = target.seeds["edgeweave.peer.v1.GradRequest"]()[0]
    grad.read_version = -(2**63)
    return grad


def _reason(details: str) -> str:
    return next(k.reason for k in KNOWN if k.details == details)


CASES = [
    Case("node", "Infer", _infer(lambda r: setattr(r, "return_codec", "bogus")),
         _reason(_CODEC)),
    Case("node", "Infer", _infer(lambda r: setattr(r.route[1], "codec", "bogus")),
         _reason(_CODEC)),
    Case("node", "Infer", _infer(lambda r: setattr(r, "return_codec", "qsgd:")),
         _reason(_CODEC)),
    Case("node", "Infer", _infer(lambda r: r.route[1].needs.append("absent")),
         _reason(r"application: '[^']*'$|responses: '[^']*'$")),
    Case("node", "Infer", _infer(lambda r: setattr(r.tensors[0], "codec",
                                                   "none" + "+zstd" * 3000)),
         _reason(r"maximum recursion depth")),
    Case("node", "Deploy", _deploy_past_the_chain, _reason(r"_InactiveRpcError")),
    Case("param-server-ssp", "PushGrad", _stale_gradient, _reason(r"Value out of range")),
]


@pytest.mark.parametrize("case", [
    pytest.param(c, id=f"{c.server}.{c.method}-{i}",
                 marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=c.reason))
    for i, c in enumerate(CASES)])
def test_known_crash_gets_a_status(servers, case):
    target = servers(case.server)
    method = service(target.service).methods_by_name[case.method]
    request = case.request(target)
    with channel(target.address) as ch:
        code, details = call(ch, method, request)
        target.probe(ch)
    assert code != grpc.StatusCode.UNKNOWN, details
