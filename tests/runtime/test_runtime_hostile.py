"""A node under a hostile peer that holds the fleet's token: every claim in a request is checked
before work, a bad request ends alone, and the node keeps answering Health."""

import functools
import logging
import threading
import time

import grpc
import pytest
import torch
import zstandard
from runtime_helpers import TOKEN, three_tier_plan
from test_runtime_server import _request, healthy, stub

from edgeweave.errors import EdgeWeaveError
from edgeweave.runtime.client import CoInferenceClient
from edgeweave.runtime.node import ServeOptions, start_node
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.server import NodeConfig
from edgeweave.runtime.shaper import CLOCK_ID

GIB_FLOAT32 = [1 << 28]  # 2**28 float32 elements: 1 GiB once decoded


@functools.cache
def _bomb_payload() -> bytes:
    """32 KB of zstd that inflates to 1 GiB of zeros (built in 1 MiB steps: 0.8 s)."""
    z = zstandard.ZstdCompressor(level=3, write_content_size=True).compressobj(size=1 << 30)
    chunk = bytes(1 << 20)
    return b"".join(z.compress(chunk) for _ in range(1024)) + z.flush()


def _bomb(req):
    """The payload above, declared as the 1 GiB float32 tensor it decompresses to."""
    t = req.tensors[0]
    t.codec, t.dtype, t.payload = "zstd", "float32", _bomb_payload()
    del t.shape[:]
    t.shape.extend(GIB_FLOAT32)


def _code(call):
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details()


@pytest.fixture(scope="module")
def edge(digits_graph):
    """An edge (and cloud) with the digits model deployed, shared by this module's tests:
    (target, client, edge service). Each test leaves it serving."""
    cloud, _, cport = start_node(NodeConfig("cloud", "cloud"),
                                 ServeOptions("127.0.0.1:0", token=TOKEN))
    server, svc, port = start_node(NodeConfig("edge", "edge", next_target=f"127.0.0.1:{cport}"),
                                   ServeOptions("127.0.0.1:0", token=TOKEN))
    try:
        target = f"127.0.0.1:{port}"
        _, chosen = three_tier_plan(digits_graph)
        client = CoInferenceClient(digits_graph, chosen, target, token=TOKEN)
        client.deploy(torch.randn(digits_graph.input_shape))
        yield target, client, svc
    finally:
        server.stop(0)
        cloud.stop(0)


def test_a_decompression_bomb_is_refused_before_decoding(edge, digits_graph):
    target, client, svc = edge
    x = torch.randn(digits_graph.input_shape)
    req = _request(client, x, _bomb)
    assert len(req.tensors[0].payload) < 64 << 10
    before = svc.metrics.snapshot().get("edgeweave_rejected_total{reason=bad_tensor}", 0)
    code, details = _code(lambda: stub(target).Infer(req, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "is declared float32 [268435456]; the stage here takes" in details

    def stray_bomb(r):  # the same bomb as a value no stage here describes: the node-wide cap
        _bomb(r)
        r.tensors[0].name = "not-a-value-of-this-model"
        r.tensors.add().CopyFrom(_request(client, x, lambda q: None).tensors[0])

    code, details = _code(lambda: stub(target).Infer(_request(client, x, stray_bomb),
                                                     timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "1024.0 MiB" in details and "128 MiB" in details, details
    assert svc.metrics.snapshot()["edgeweave_rejected_total{reason=bad_tensor}"] == before + 2
    assert healthy(target)
    assert client.infer(x).fallback is False


def test_a_declared_shape_is_checked_against_the_stage_before_decoding(edge, digits_graph):
    target, client, svc = edge
    x = torch.randn(digits_graph.input_shape)
    good = _request(client, x, lambda r: None)
    name = good.tensors[0].name
    stage = svc.stages[client.deployment.route[0].stage]
    assert stage.specs[name] == (good.tensors[0].dtype, tuple(good.tensors[0].shape))

    def reshaped(req):  # the same bytes, declared with another shape
        t = req.tensors[0]
        numel = len(t.payload) // 4
        del t.shape[:]
        t.shape.extend([1, numel])

    code, details = _code(lambda: stub(target).Infer(_request(client, x, reshaped), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert f"tensor {name!r} is declared float32 [1, " in details
    assert "the stage here takes" in details
    assert healthy(target)
    assert client.infer(x).fallback is False


def test_unknown_codecs_anywhere_in_a_request_are_invalid_argument(edge, digits_graph):
    target, client, _ = edge
    x = torch.randn(digits_graph.input_shape)
    for field, value in [("return_codec", "gzip"), ("hop_codec", "topk:0.1"),
                         ("return_codec", "int8+zstd+zstd")]:
        def mutate(req, field=field, value=value):
            if field == "return_codec":
                req.return_codec = value
            else:
                req.route[1].codec = value

        code, details = _code(lambda m=mutate: stub(target).Infer(_request(client, x, m),
                                                                  timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, value
        assert value in details and "not an activation codec" in details
    assert healthy(target)


def test_requests_stamped_ahead_park_after_admission_and_starve_nobody(digits_graph):
    server, svc, port = start_node(
        NodeConfig("edge", "edge", max_concurrency=2, max_queue=3, max_arrival_wait_s=5),
        ServeOptions("127.0.0.1:0", token=TOKEN))
    target = f"127.0.0.1:{port}"
    try:
        _, chosen = three_tier_plan(digits_graph, fractions=(0.3, 2.0))
        client = CoInferenceClient(digits_graph, chosen, target, token=TOKEN)
        x = torch.randn(digits_graph.input_shape)
        client.deploy(x)

        def ahead(seconds):
            def mutate(req):
                req.deliver_at_ns, req.clock = int((time.monotonic() + seconds) * 1e9), CLOCK_ID
            return _request(client, x, mutate)

        outcomes = []
        parked = [threading.Thread(target=lambda: outcomes.append(
            stub(target).Infer(ahead(4), timeout=20))) for _ in range(3)]
        for t in parked:
            t.start()
        deadline = time.monotonic() + 10
        while svc.admission.parked < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert svc.admission.parked == 3
        # parked requests hold neither the compute slots nor the server's threads
        assert stub(target).Health(pb.HealthRequest(), timeout=2).status == "serving"
        assert stub(target).Infer(_request(client, x, lambda r: None), timeout=2).tensors
        code, details = _code(lambda: stub(target).Infer(ahead(4), timeout=10))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "emulated link" in details
        code, details = _code(lambda: stub(target).Infer(ahead(8), timeout=20))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "--max-arrival-wait-s" in details
        for t in parked:
            t.join(15)
        assert len(outcomes) == 3 and all(r.tensors for r in outcomes)  # they were served
        assert svc.admission.held == 0
    finally:
        server.stop(0)


def _raw_stream(target, messages, timeout=10):
    """InferStream with hand-made bytes (garbage included), replies parsed."""
    from edgeweave.security import authed_channel

    ident = lambda b: b  # noqa: E731
    call = authed_channel(target, token=TOKEN).stream_stream(
        "/edgeweave.v1.Node/InferStream", request_serializer=ident,
        response_deserializer=pb.InferReply.FromString)
    return list(call(iter(messages), timeout=timeout))


def test_one_bad_message_ends_only_its_own_request_in_a_stream(edge, digits_graph, caplog,
                                                               monkeypatch):
    edge_target, client, svc = edge
    monkeypatch.setattr(svc._rejections, "interval_s", 0.0)  # this test counts every line
    good = [_request(client, torch.randn(digits_graph.input_shape), lambda r: None)
            for _ in range(6)]
    for k, r in enumerate(good):
        r.request_id = f"ok-{k}"
    bad_codec = _request(client, torch.randn(digits_graph.input_shape),
                         lambda r: setattr(r, "return_codec", "gzip"))
    bad_codec.request_id = "bad-codec"
    messages = [g.SerializeToString() for g in good]
    messages[2:2] = [b"\xff\xff\xff\xff\x0f" * 3, bad_codec.SerializeToString()]
    with caplog.at_level(logging.INFO, logger="edgeweave"):
        replies = _raw_stream(edge_target, messages)
    assert [r.request_id for r in replies] == [
        "ok-0", "ok-1", "", "bad-codec", "ok-2", "ok-3", "ok-4", "ok-5"]
    errors = {r.request_id: (r.error_code, r.error) for r in replies if r.error_code}
    assert errors[""][0] == "INVALID_ARGUMENT" and "malformed message" in errors[""][1]
    assert errors["bad-codec"][0] == "INVALID_ARGUMENT" and "gzip" in errors["bad-codec"][1]
    assert all(r.tensors for r in replies if not r.error_code)
    # logged with the peer's address, as a warning
    lines = [r for r in caplog.records if "refused a request from ipv4:127.0.0.1" in r.message]
    assert {r.levelno for r in lines} == {logging.WARNING} and len(lines) == 2
    assert healthy(edge_target)


def test_the_client_streams_and_a_failed_request_raises_at_its_turn(edge, digits_graph):
    edge_target, *_ = edge
    _, chosen = three_tier_plan(digits_graph, fractions=(0.1, 2.0))  # raw input to the edge
    client = CoInferenceClient(digits_graph, chosen, edge_target, token=TOKEN)
    x = torch.randn(digits_graph.input_shape)
    client.deploy(x)
    assert client.deployment.stages["device"].inputs == client.deployment.route[0].needs
    wrong = torch.randn(1, 3, 8, 8)  # three channels: the edge's first conv refuses it
    results = client.infer_stream([x, x, wrong, x])
    assert [next(results).fallback for _ in range(2)] == [False, False]
    with pytest.raises(EdgeWeaveError, match=r"INVALID_ARGUMENT.*the stage here takes"):
        next(results)
    assert [r.fallback for r in client.infer_stream([x, x])] == [False, False]
    # an error the device survives (the edge's, not the request's) falls back for that request
    run = client._begin(client.deployment, x)
    run.req.request_id = "r"
    fallback, note, _ = client._settle(client.deployment, run, pb.InferReply(
        error_code="RESOURCE_EXHAUSTED", error="edge is at capacity"), client.edges.edges[0])
    assert fallback and "RESOURCE_EXHAUSTED" in note
    with torch.no_grad():
        assert torch.allclose(run.env[digits_graph.outputs[0]], digits_graph.module(x), atol=1e-5)


def test_unparsable_messages_to_every_method_are_invalid_argument(edge):
    from edgeweave.security import authed_channel

    target, *_ = edge
    channel = authed_channel(target, token=TOKEN)
    ident = lambda b: b  # noqa: E731
    calls = {
        "Infer": channel.unary_unary("/edgeweave.v1.Node/Infer", ident, ident),
        "Health": channel.unary_unary("/edgeweave.v1.Node/Health", ident, ident),
        "Stats": channel.unary_unary("/edgeweave.v1.Node/Stats", ident, ident),
        "Deploy": channel.stream_unary("/edgeweave.v1.Node/Deploy", ident, ident),
    }
    garbage = b"\xff\xff\xff\xff\x0f" * 3
    for name, call in calls.items():
        arg = iter([garbage]) if name == "Deploy" else garbage
        code, details = _code(lambda c=call, a=arg: c(a, timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, name
        assert "malformed message" in details, name
    assert healthy(target)
