"""A node always stops: after malformed stream traffic, with requests in flight, on SIGTERM; and
a second node on a busy port is refused instead of stealing its connections."""

import os
import signal
import subprocess
import sys
import time

import grpc
import pytest
from runtime_helpers import TOKEN

from edgeweave.errors import EdgeWeaveError
from edgeweave.runtime.node import STOP_MARGIN_S, ServeOptions, start_node
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.proto import edgeweave_pb2_grpc as pb_grpc
from edgeweave.runtime.server import NodeConfig
from edgeweave.runtime.shaper import CLOCK_ID
from edgeweave.security import authed_channel, write_token

GARBAGE = b"\xff\xff\xff\xff\x0f" * 3  # not an InferRequest: protobuf's parser refuses it
GRACE_S = 1.0


def _garbage_streams(target, streams=2, linger_s=0.1):
    """Streams of unparsable messages, each kept open a moment after its last message (what
    made gRPC's own deserialisation race its handler and leave the server unable to stop)."""
    ident = lambda b: b  # noqa: E731
    call = authed_channel(target, token=TOKEN).stream_stream(
        "/edgeweave.v1.Node/InferStream", request_serializer=ident,
        response_deserializer=pb.InferReply.FromString)
    replies = []
    for _ in range(streams):
        def messages():
            yield from [GARBAGE] * 4
            time.sleep(linger_s)
        replies += list(call(messages(), timeout=10))
    return replies


def test_a_node_stops_after_malformed_stream_traffic():
    # before the fix 5-6 of 8 such servers never finished stopping; 6 rounds miss it < 0.1%
    for _ in range(6):
        server, _, port = start_node(NodeConfig("edge", "edge"),
                                     ServeOptions("127.0.0.1:0", token=TOKEN))
        replies = _garbage_streams(f"127.0.0.1:{port}")
        assert [r.error_code for r in replies] == ["INVALID_ARGUMENT"] * 8
        assert server.stop(grace=1).wait(4), "the server did not finish stopping"


def _start(token_file, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "edgeweave", "serve", "--role", "edge", "--listen", "127.0.0.1:0",
         "--token-file", str(token_file), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"))


def _target(proc):
    line = proc.stdout.readline()
    assert " serving on " in line, line
    return line.split(" serving on ", 1)[1].split(",")[0].strip()


@pytest.mark.slow
def test_sigterm_ends_a_node_within_its_grace_period(tmp_path):
    """Real processes and a real signal, after malformed streams and with a request still
    waiting for its arrival stamp (it would hold the node for a minute)."""
    token_file = tmp_path / "token"
    write_token(token_file, TOKEN)
    procs = [_start(token_file, "--max-arrival-wait-s", "120", "--grace-s", str(GRACE_S))
             for _ in range(2)]
    nodes = [(p, _target(p)) for p in procs]  # started side by side
    calls = []
    try:
        for _, target in nodes:
            assert len(_garbage_streams(target)) == 8
            parked = pb.InferRequest(route=[pb.Hop()], clock=CLOCK_ID,
                                     deliver_at_ns=int((time.monotonic() + 60) * 1e9))
            stub = pb_grpc.NodeStub(authed_channel(target, token=TOKEN))
            calls.append(stub.Infer.future(parked, timeout=90))
        time.sleep(0.5)  # the parked requests reach their nodes
        for proc, _ in nodes:
            proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        for proc, _ in nodes:
            assert proc.wait(timeout=GRACE_S + STOP_MARGIN_S + 5) == 0
        assert time.monotonic() - t0 <= GRACE_S + STOP_MARGIN_S + 5
        for call in calls:  # the parked requests were cut off, not served
            assert call.exception(timeout=10).code() in (grpc.StatusCode.CANCELLED,
                                                         grpc.StatusCode.UNAVAILABLE)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_a_second_node_on_a_busy_port_is_refused_by_name():
    first, _, port = start_node(NodeConfig("edge", "first"),
                                ServeOptions("127.0.0.1:0", token=TOKEN))
    try:
        with pytest.raises(EdgeWeaveError, match=rf"--listen 127\.0\.0\.1:{port}: cannot listen"):
            start_node(NodeConfig("edge", "second"),
                       ServeOptions(f"127.0.0.1:{port}", token=TOKEN))
        # every new connection still reaches the first node
        for _ in range(10):
            with authed_channel(f"127.0.0.1:{port}", token=TOKEN) as ch:
                reply = pb_grpc.NodeStub(ch).Health(pb.HealthRequest(), timeout=5)
            assert reply.status == "serving"
    finally:
        first.stop(0)


STOPPED_WHILE_STARTING = """
import time
from edgeweave.runtime.node import ServeOptions, serve_forever
from edgeweave.runtime.server import NodeConfig

def start(config, opts):  # the port is open, the stages are still being built
    print("starting", flush=True)
    time.sleep(30)
    raise AssertionError("the stop did not reach the start")

serve_forever(NodeConfig("edge", "edge"), ServeOptions("127.0.0.1:0", token="t" * 32),
              start=start)
"""


def test_a_node_stopped_while_starting_exits_cleanly():
    """A supervisor that sees the port listening may stop the node before it has announced
    itself: that is a clean stop too (exit 0), not death by the signal."""
    proc = subprocess.Popen([sys.executable, "-c", STOPPED_WHILE_STARTING],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "starting", proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
