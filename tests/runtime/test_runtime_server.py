"""The node server under bad and hostile input: it answers with a clear status and keeps serving."""

import threading
import time
import urllib.request

import grpc
import pytest
import torch
from runtime_helpers import TOKEN, three_tier_plan

from edgeweave.codec import get_codec
from edgeweave.runtime.client import ClientOptions, CoInferenceClient
from edgeweave.runtime.node import ServeOptions, start_node
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.proto import edgeweave_pb2_grpc as pb_grpc
from edgeweave.runtime.server import NodeConfig
from edgeweave.runtime.shaper import CLOCK_ID
from edgeweave.security import authed_channel


def stub(target, token=TOKEN, max_mb=64):
    opts = [("grpc.max_send_message_length", 256 << 20)]
    return pb_grpc.NodeStub(authed_channel(target, token=token, options=opts))


def deployed(nodes, graph):
    edge_target, *_ = nodes
    _, chosen = three_tier_plan(graph)
    client = CoInferenceClient(graph, chosen, edge_target, token=TOKEN)
    client.deploy(torch.randn(graph.input_shape))
    return client


def healthy(target):
    return stub(target).Health(pb.HealthRequest(), timeout=5).status == "serving"


@pytest.mark.parametrize("token", [None, "wrong-token-0123456789abcdef"])
def test_unauthenticated_calls_are_refused(nodes, token):
    edge_target, *_ = nodes
    s = stub(edge_target, token=token)
    for call, msg in ((s.Health, pb.HealthRequest()), (s.Infer, pb.InferRequest()),
                      (s.Deploy, iter([pb.DeployRequest()]))):
        with pytest.raises(grpc.RpcError) as err:
            call(msg, timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert healthy(edge_target)


def _request(client, x, mutate):
    dep = client.deployment
    env = {client.graph.placeholders[0]: x}
    stage = dep.stages["device"]
    env.update(zip(stage.outputs, stage.module(*(env[n] for n in stage.inputs)), strict=True))
    hop = dep.route[0]
    c = get_codec("none")
    tensors = []
    for name in hop.needs:
        e = c.encode(env[name])
        tensors.append(pb.Tensor(name=name, codec=e.codec, dtype=e.dtype, shape=list(e.shape),
                                 payload=e.payload))
    req = pb.InferRequest(request_id="t", route=dep.route, want=dep.want, tensors=tensors)
    mutate(req)
    return req


def _truncate(req):
    req.tensors[0].payload = req.tensors[0].payload[:-3]


def _wrong_shape(req):
    t = req.tensors[0]
    n = len(t.payload) // 4
    del t.shape[:]
    t.shape.extend([1, n])


def _bad_dtype(req):
    req.tensors[0].dtype = "complex128"


def _unknown_codec(req):
    req.tensors[0].codec = "gzip"


def _missing_value(req):
    del req.tensors[:]


def _empty_route(req):
    del req.route[:]


def _unknown_stage(req):
    req.route[0].stage = "f" * 64


def _stamped_an_hour_ahead(req):
    req.deliver_at_ns, req.clock = int((time.monotonic() + 3600) * 1e9), CLOCK_ID


def _stamped_past_the_deadline(req):  # the call's deadline is 10 s
    req.deliver_at_ns, req.clock = int((time.monotonic() + 30) * 1e9), CLOCK_ID


def _crawling_link(req):  # from another clock, so the node would shape it itself: for days
    req.route[0].link_mbps, req.route[0].shape_bandwidth = 1e-6, True
    req.deliver_at_ns, req.clock = 1, "another-host"


def _nan_link(req):
    req.route[0].link_mbps = float("nan")


@pytest.mark.parametrize(("mutate", "code", "words"), [
    (_stamped_an_hour_ahead, grpc.StatusCode.INVALID_ARGUMENT, "arrival stamp"),
    (_stamped_past_the_deadline, grpc.StatusCode.DEADLINE_EXCEEDED, "deadline"),
    (_crawling_link, grpc.StatusCode.INVALID_ARGUMENT, "link_mbps"),
    (_nan_link, grpc.StatusCode.INVALID_ARGUMENT, "finite link_mbps"),
    (_truncate, grpc.StatusCode.INVALID_ARGUMENT, "payload"),
    (_wrong_shape, grpc.StatusCode.INVALID_ARGUMENT, "the stage here takes"),
    (_bad_dtype, grpc.StatusCode.INVALID_ARGUMENT, "complex128"),
    (_unknown_codec, grpc.StatusCode.INVALID_ARGUMENT, "gzip"),
    (_missing_value, grpc.StatusCode.INVALID_ARGUMENT, "lacks values"),
    (_empty_route, grpc.StatusCode.INVALID_ARGUMENT, "empty route"),
    (_unknown_stage, grpc.StatusCode.FAILED_PRECONDITION, "not deployed"),
])
def test_malformed_requests_get_a_clear_status(nodes, digits_graph, mutate, code, words):
    client = deployed(nodes, digits_graph)
    edge_target, *_ = nodes
    req = _request(client, torch.randn(digits_graph.input_shape), mutate)
    with pytest.raises(grpc.RpcError) as err:
        stub(edge_target).Infer(req, timeout=10)
    assert err.value.code() == code
    assert words in err.value.details()
    assert client.infer(torch.randn(digits_graph.input_shape)).fallback is False


def test_oversized_message_is_refused_and_server_survives():
    server, _, port = start_node(NodeConfig("edge", "small"),
                                 ServeOptions("127.0.0.1:0", token=TOKEN, max_message_mb=1))
    try:
        target = f"127.0.0.1:{port}"
        big = pb.InferRequest(tensors=[pb.Tensor(name="x", payload=b"\0" * (2 << 20))])
        with pytest.raises(grpc.RpcError) as err:
            stub(target).Infer(big, timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert healthy(target)
    finally:
        server.stop(0)


def test_overload_is_refused_with_resource_exhausted(digits_graph):
    server, svc, port = start_node(
        NodeConfig("edge", "busy", max_concurrency=1, max_queue=0, dilation=400.0),
        ServeOptions("127.0.0.1:0", token=TOKEN))
    try:
        _, chosen = three_tier_plan(digits_graph, fractions=(0.3, 2.0))
        client = CoInferenceClient(digits_graph, chosen, f"127.0.0.1:{port}", token=TOKEN)
        x = torch.randn(digits_graph.input_shape)
        client.deploy(x)
        req = _request(client, x, lambda r: None)
        codes = []

        def call():
            try:
                stub(f"127.0.0.1:{port}").Infer(req, timeout=20)
                codes.append("ok")
            except grpc.RpcError as e:
                codes.append(e.code())

        threads = [threading.Thread(target=call) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert "ok" in codes
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
        assert svc.metrics.snapshot()["edgeweave_rejected_total{reason=overloaded}"] >= 1
    finally:
        server.stop(0)


def test_metrics_endpoint_reports_requests(digits_graph, unused_port):
    server, _, port = start_node(NodeConfig("edge", "m"),
                                 ServeOptions("127.0.0.1:0", token=TOKEN,
                                              metrics_port=unused_port))
    try:
        _, chosen = three_tier_plan(digits_graph, fractions=(0.3, 2.0))
        client = CoInferenceClient(digits_graph, chosen, f"127.0.0.1:{port}", token=TOKEN,
                                   options=ClientOptions())
        x = torch.randn(digits_graph.input_shape)
        client.deploy(x)
        for _ in range(3):
            client.infer(x)
        body = urllib.request.urlopen(f"http://127.0.0.1:{unused_port}/metrics", timeout=5)
        text = body.read().decode()
        assert 'edgeweave_requests_total{outcome="ok"} 3.0' in text
        assert "edgeweave_stage_seconds_bucket" in text
        assert "edgeweave_queue_depth" in text
    finally:
        server.stop(0)


@pytest.fixture
def unused_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_streaming_infer_serves_each_request(nodes, digits_graph):
    client = deployed(nodes, digits_graph)
    edge_target, *_ = nodes
    xs = [torch.randn(digits_graph.input_shape) for _ in range(4)]
    reqs = [_request(client, x, lambda r: None) for x in xs]
    replies = list(stub(edge_target).InferStream(iter(reqs), timeout=20))
    assert len(replies) == 4
    assert all(r.tensors and not r.fallback for r in replies)


def test_slow_edge_past_the_deadline_falls_back_on_the_device(digits_graph):
    server, _, port = start_node(NodeConfig("edge", "slow", dilation=2000.0),
                                 ServeOptions("127.0.0.1:0", token=TOKEN))
    try:
        _, chosen = three_tier_plan(digits_graph, fractions=(0.3, 2.0))
        client = CoInferenceClient(digits_graph, chosen, f"127.0.0.1:{port}", token=TOKEN,
                                   options=ClientOptions(timeout_s=0.3))
        x = torch.randn(digits_graph.input_shape)
        client.deploy(x)
        result = client.infer(x)
        assert result.fallback and "DEADLINE_EXCEEDED" in result.note
        with torch.no_grad():
            assert torch.allclose(result.output, digits_graph.module(x), atol=1e-5)
    finally:
        server.stop(0)


def test_mutual_tls_end_to_end(tmp_path, digits_graph):
    from edgeweave.security import ClientTLS, make_fleet_certs

    make_fleet_certs(tmp_path, ["device", "edge"])
    server, _, port = start_node(NodeConfig("edge", "edge"),
                                 ServeOptions("127.0.0.1:0", cert_dir=tmp_path))
    try:
        _, chosen = three_tier_plan(digits_graph, fractions=(0.3, 2.0))
        client = CoInferenceClient(digits_graph, chosen, f"127.0.0.1:{port}",
                                   tls=ClientTLS.for_node(tmp_path, "device"))
        x = torch.randn(digits_graph.input_shape)
        client.deploy(x)
        assert not client.infer(x).fallback
        plain = pb_grpc.NodeStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        with pytest.raises(grpc.RpcError):
            plain.Health(pb.HealthRequest(), timeout=5)
    finally:
        server.stop(0)
