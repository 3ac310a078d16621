"""The crashes the gRPC fuzz found, each as its minimal request, kept as regression tests: each
must now get the status named here (never UNKNOWN, an exception escaping a handler) and leave
the server serving. A new finding that cannot be fixed at once goes in fuzz_calls.KNOWN and
here as a strict xfail."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest
from fuzz_calls import call, service
from fuzz_servers import Target, channel
from google.protobuf.message import Message

from edgeweave.runtime.proto import edgeweave_pb2 as pb


@dataclass(frozen=True)
class Case:
    server: str
    method: str
    request: Callable[[Target], Message | list[Message]]
    expect: grpc.StatusCode


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


def _stale_gradient(target: Target) -> Message:
    """A valid gradient of worker 0 claiming to be computed at version -2**63."""
    grad = target.seeds["edgeweave.peer.v1.GradRequest"]()[0]
    grad.read_version = -(2**63)
    return grad


_BAD = grpc.StatusCode.INVALID_ARGUMENT
CASES = [
    # return_codec / a later hop's codec unknown, or a family name without parameters
    Case("node", "Infer", _infer(lambda r: setattr(r, "return_codec", "bogus")), _BAD),
    Case("node", "Infer", _infer(lambda r: setattr(r.route[1], "codec", "bogus")), _BAD),
    Case("node", "Infer", _infer(lambda r: setattr(r, "return_codec", "qsgd:")), _BAD),
    # route[1].needs naming a value this node neither received nor computed
    Case("node", "Infer", _infer(lambda r: r.route[1].needs.append("absent")), _BAD),
    # a codec name of thousands of '+zstd' parts (recursed once per part)
    Case("node", "Infer", _infer(lambda r: setattr(r.tensors[0], "codec",
                                                   "none" + "+zstd" * 3000)), _BAD),
    # hops_ahead past the end of the chain: the cloud's refusal is relayed
    Case("node", "Deploy", _deploy_past_the_chain, grpc.StatusCode.FAILED_PRECONDITION),
    # SSP: a read version far below the server's (staleness overflowed int64 in the reply)
    Case("param-server-ssp", "PushGrad", _stale_gradient, _BAD),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=f"{c.server}.{c.method}-{i}")
                                  for i, c in enumerate(CASES)])
def test_each_finding_gets_its_status_and_the_server_keeps_serving(servers, case):
    target = servers(case.server)
    method = service(target.service).methods_by_name[case.method]
    request = case.request(target)
    with channel(target.address) as ch:
        code, details = call(ch, method, request)
        target.probe(ch)
    assert code == case.expect, (code, details)
