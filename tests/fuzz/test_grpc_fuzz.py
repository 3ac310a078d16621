"""Fuzz every gRPC method of every EdgeWeave server (runtime node, FL server, gossip peer, ring
worker, parameter server, split-learning edge) with generated malformed and boundary messages.

Each server runs in process on loopback behind its bearer token; every call is authenticated,
so the fuzz reaches the handlers, not just the interceptor. For each call: it must end with a
gRPC status other than UNKNOWN (UNKNOWN is gRPC's answer to an exception the handler did not
handle), within its deadline, and afterwards the server must still answer a valid request.

The methods and message shapes come from the protobuf descriptors (proto_strategies), so a
method or field added to a ``.proto`` is fuzzed without editing this file. Bounded for CI: a
fixed number of examples per method, derandomized; ``EDGEWEAVE_FUZZ_EXAMPLES=500`` runs the
long variant (random examples, more of them).

Crashes found in code other parts own are listed in fuzz_calls.KNOWN: the fuzz tolerates them
(so it still catches new ones) and test_fuzz_findings pins each minimal case as a strict xfail
that flips to a failure, prompting removal, once it is fixed.
"""

from __future__ import annotations

import collections
import os
import time

import grpc
import pytest
from fuzz_calls import CALL_S, POOL, call, known, service
from fuzz_servers import SERVICE_OF, Target, channel
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from proto_strategies import MessageStrategies, repeated

LONG = "EDGEWEAVE_FUZZ_EXAMPLES" in os.environ
EXAMPLES = int(os.environ.get("EDGEWEAVE_FUZZ_EXAMPLES", "12"))
SLACK_S = 3.0  # how far past its deadline a call may end on a busy box: more is a hang
SETTINGS = settings(max_examples=EXAMPLES, deadline=(CALL_S + SLACK_S) * 4 * 1000,
                    derandomize=not LONG, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def cases() -> list[tuple[str, str]]:
    return [(srv, m.name) for srv, svc in SERVICE_OF.items() for m in service(svc).methods]


def requests(target: Target, method: MethodDescriptor) -> st.SearchStrategy:
    """Requests for ``method``: one message, or a list of them for a client stream (a few, or
    one repeated up to 256 times)."""
    one = MessageStrategies(target.seeds).message(
        message_factory.GetMessageClass(method.input_type))
    return repeated(one, small=4, most=8) if method.client_streaming else one


@pytest.mark.parametrize(("server", "method"), cases())
def test_every_call_gets_a_status_and_the_server_keeps_serving(servers, server, method):
    target = servers(server)
    m = service(target.service).methods_by_name[method]
    seen: collections.Counter[str] = collections.Counter()
    with channel(target.address) as ch:
        target.probe(ch)  # healthy before the fuzz

        @SETTINGS
        @given(request=requests(target, m))
        def fuzz(request):
            start = time.monotonic()
            code, details = call(ch, m, request)
            took = time.monotonic() - start
            seen[code.name] += 1
            if code == grpc.StatusCode.UNKNOWN:
                assert known(server, method, details), (
                    f"{server}.{method}: unhandled exception in the handler: {details}")
            assert took <= CALL_S + SLACK_S, f"{server}.{method}: no answer for {took:.1f} s"
            target.probe(ch)  # still serving a valid request

        fuzz()
    print(f"{server}.{method}: {dict(seen)}")


def test_every_service_in_the_protos_has_a_server_under_fuzz():
    """A service added to a .proto needs a server in fuzz_servers.SERVERS, or it goes unfuzzed."""
    files = ["edgeweave/runtime/proto/edgeweave.proto", "edgeweave/train/wire/fl.proto",
             "edgeweave/train/wire/peer.proto", "edgeweave/train/wire/split.proto"]
    names = {s.full_name for f in files for s in POOL.FindFileByName(f).services_by_name.values()}
    assert names <= set(SERVICE_OF.values()), names - set(SERVICE_OF.values())
