"""The node as an edge server for many devices: several whole models deployed and removed at
run time, batched requests answered each with its own result, deadlines met or refused with a
status (never served late), and bad serving input refused while the node keeps serving."""

import math
import threading
import urllib.request

import grpc
import pytest
import torch
from runtime_helpers import TOKEN
from test_runtime_server import stub, unused_port  # noqa: F401 - a fixture

from edgeweave.runtime.node import ServeOptions, start_node
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.server import NodeConfig
from edgeweave.runtime.whole_model import whole_model


@pytest.fixture(scope="module")
def digits():
    return whole_model("digits-cnn")


@pytest.fixture(scope="module")
def digits_head(digits):
    """A second model on the same node: digits-cnn's first few layers, as a plan stage."""
    from edgeweave.graph import split
    from edgeweave.runtime.recipe import package_stage
    from edgeweave.runtime.whole_model import WholeModel

    g = digits.graph
    head = {n.name for n in g.nodes[:3]}
    stages = split(g, {n.name: "edge" if n.name in head else "cloud" for n in g.nodes},
                   ("edge", "cloud"))
    pkg = package_stage(g, stages[0], (torch.zeros(g.input_shape),))
    return WholeModel("digits-head", g, pkg, stages[0].inputs[0], tuple(stages[0].outputs))


def start(**cfg):
    opts = {k: cfg.pop(k) for k in ("metrics_port",) if k in cfg}
    server, svc, port = start_node(NodeConfig("edge", "edge", **cfg),
                                   ServeOptions("127.0.0.1:0", token=TOKEN, **opts))
    return server, svc, f"127.0.0.1:{port}"


def deploy(target, model, **knobs):
    return stub(target).Deploy(model.deploy_stream(pb.ServingConfig(**knobs)), timeout=60)


def infer(target, model, x, **fields):
    return stub(target).Infer(model.request(model.encode(x), **fields), timeout=30)


def output(reply):
    from edgeweave.runtime import tensors

    return tensors.decode(reply.tensors)


def status(call):
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details()


def test_models_are_deployed_and_removed_at_run_time(digits, digits_head):
    server, svc, target = start()
    try:
        x = torch.randn(digits.graph.input_shape)
        assert deploy(target, digits).max_batch == 8
        assert deploy(target, digits_head, max_batch=2).max_batch == 2
        whole = output(infer(target, digits, x))[digits.outputs[0]]
        with torch.no_grad():
            assert torch.allclose(whole, digits.graph.module(x), atol=1e-5)
        assert digits_head.outputs[0] in output(infer(target, digits_head, x))
        reply = stub(target).Remove(pb.RemoveRequest(stage_digest=digits_head.digest),
                                    timeout=10)
        assert reply.removed and digits_head.digest not in svc.stages
        code, details = status(lambda: infer(target, digits_head, x))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "Deploy first" in details
        assert output(infer(target, digits, x))  # the other model is still served
        code, _ = status(lambda: stub(target).Remove(
            pb.RemoveRequest(stage_digest=digits_head.digest), timeout=10))
        assert code == grpc.StatusCode.NOT_FOUND
        code, details = status(lambda: stub(target).Remove(
            pb.RemoveRequest(stage_digest="../etc"), timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "64 lowercase hex" in details
        code, _ = status(lambda: stub(target, token=None).Remove(
            pb.RemoveRequest(stage_digest=digits.digest), timeout=10))
        assert code == grpc.StatusCode.UNAUTHENTICATED and digits.digest in svc.stages
        deploy(target, digits_head)  # and back again
        assert output(infer(target, digits_head, x))
    finally:
        server.stop(0)
        svc.close()


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(digits):
    server, svc, target = start(max_concurrency=1)
    try:
        deploy(target, digits, max_batch=8, max_delay_ms=100)
        # every batch size the node may form was timed when deployed: none is planned with
        # a guess fitted from the others
        assert svc.serving.engine.models[digits.digest].latency.measured == list(range(1, 9))
        xs = [torch.randn(digits.graph.input_shape) for _ in range(16)]
        replies = [None] * len(xs)

        def one(k):
            replies[k] = infer(target, digits, xs[k])

        threads = [threading.Thread(target=one, args=(k,)) for k in range(len(xs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        with torch.no_grad():
            for x, reply in zip(xs, replies, strict=True):
                got = output(reply)[digits.outputs[0]]
                assert torch.allclose(got, digits.graph.module(x), atol=1e-5)
        assert max(r.batch for r in replies) > 1
    finally:
        server.stop(0)
        svc.close()


def test_a_deadline_is_met_or_refused_with_a_status_never_served_late(digits):
    """A slow node (compute dilated) under a burst of requests whose deadline leaves time for
    about four of them: each request is answered within its deadline or refused
    (DEADLINE_EXCEEDED / RESOURCE_EXHAUSTED), and the node counts each exactly once."""
    # room for the whole burst at the node's door: the engine decides every refusal here
    server, svc, target = start(max_concurrency=1, max_batch=1, max_queue=256, dilation=50.0)
    try:
        deploy(target, digits)
        x = torch.randn(digits.graph.input_shape)
        # the node's estimate and what a request really takes here may differ (calibration on
        # a busy moment): the deadline fits about four of the slower, the burst many more of
        # the faster, so some requests must be refused whichever is right
        took = min(infer(target, digits, x).timings[0].compute_ms for _ in range(3))
        one_ms = max(svc.serving.engine.models[digits.digest].latency.estimate(1) * 1000, took)
        deadline_ms = 4 * one_ms + 50
        burst = min(200, max(24, math.ceil(3 * deadline_ms / max(took, 0.1))))
        code, details = status(lambda: infer(target, digits, x, deadline_ms=1e-3))
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED and "deadline" in details
        outcomes = []
        lock = threading.Lock()

        def one():
            try:
                t = infer(target, digits, x, deadline_ms=deadline_ms).timings[0]
                # on the node's clock (the caller's adds its own thread wake-ups on a busy
                # host): its time on the request, from arrival to the answer ready
                late = t.queue_ms + t.compute_ms > deadline_ms
                kind = "late" if late else "ok"
            except grpc.RpcError as e:
                kind = e.code().name
            with lock:
                outcomes.append(kind)

        threads = [threading.Thread(target=one) for _ in range(burst)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert "late" not in outcomes and "ok" in outcomes, (one_ms, outcomes)
        assert set(outcomes) <= {"ok", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"}
        assert len(outcomes) == burst and len(set(outcomes)) > 1, (one_ms, took, outcomes)
        snap = svc.metrics.snapshot()
        counted = sum(v for k, v in snap.items() if k.startswith("edgeweave_serve_requests_total"))
        assert counted == burst + 4  # the burst, the 3 timed and the one refused first
    finally:
        server.stop(0)
        svc.close()


def test_a_request_the_engine_refuses_costs_the_node_no_decoding(digits, monkeypatch):
    """Under overload most requests are refused: the node asks the engine before it decodes a
    request's tensors, so a refused one is never decoded (its tensors here are garbage of the
    declared shape: decoded, they are refused as a bad tensor instead). It is counted once,
    as a request refused on its deadline (the answered one is the other)."""
    from edgeweave.runtime import tensors

    server, svc, target = start()
    try:
        deploy(target, digits)
        x = torch.randn(digits.graph.input_shape)
        decoded = []
        real = tensors.decode
        monkeypatch.setattr(tensors, "decode", lambda *a, **k: decoded.append(1) or real(*a, **k))
        infer(target, digits, x, deadline_ms=5000.0)
        assert len(decoded) == 1
        garbage = digits.encode(x)
        garbage[0].payload = b"\x01\x02\x03"  # not a float32 tensor of any shape
        code, _ = status(lambda: stub(target).Infer(digits.request(garbage), timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and len(decoded) == 2  # decoded: bad
        code, details = status(lambda: stub(target).Infer(
            digits.request(garbage, deadline_ms=1e-3), timeout=10))
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED and "deadline" in details, details
        assert len(decoded) == 2
        snap = svc.metrics.snapshot()
        assert sum(v for k, v in snap.items()
                   if k.startswith("edgeweave_serve_requests_total")) == 2
    finally:
        server.stop(0)
        svc.close()


@pytest.mark.parametrize(("knobs", "words"), [
    ({"max_batch": 100000}, "max_batch 100000: expected 0 to 8"),
    ({"max_batch": -1}, "max_batch -1"),
    ({"preferred_batch": [3, 64]}, "preferred_batch 64"),
    ({"max_delay_ms": math.nan}, "max_delay_ms nan"),
    ({"max_delay_ms": 5000.0}, "max_delay_ms 5000.0"),
    ({"max_queue": 1 << 20}, "max_queue"),
    ({"adaptive_batch": True}, "adaptive batching needs slo_ms"),
])
def test_batch_limits_out_of_range_are_refused_by_name(digits, knobs, words):
    server, svc, target = start()
    try:
        code, details = status(lambda: deploy(target, digits, **knobs))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and words in details
        assert digits.digest not in svc.stages
    finally:
        server.stop(0)
        svc.close()


def test_bad_requests_get_a_clear_status_and_the_node_keeps_serving(digits):
    server, svc, target = start()
    try:
        deploy(target, digits)
        x = torch.randn(digits.graph.input_shape)
        bad_dtype = digits.encode(x.double())
        oversized = digits.encode(torch.randn(1, 1, 64, 64))
        cases = [
            (lambda: stub(target).Infer(pb.InferRequest(route=[pb.Hop(stage="ab" * 32)],
                                                        tensors=digits.encode(x)), timeout=10),
             grpc.StatusCode.FAILED_PRECONDITION, "not deployed"),
            (lambda: infer(target, digits, x, deadline_ms=-5.0),
             grpc.StatusCode.DEADLINE_EXCEEDED, "already passed"),
            (lambda: infer(target, digits, x, deadline_ms=math.nan),
             grpc.StatusCode.INVALID_ARGUMENT, "deadline_ms nan"),
            (lambda: infer(target, digits, x, deadline_ms=500.0, grace_ms=-1.0),
             grpc.StatusCode.INVALID_ARGUMENT, "grace_ms -1"),
            (lambda: infer(target, digits, x, priority=99),
             grpc.StatusCode.INVALID_ARGUMENT, "priority 99"),
            (lambda: stub(target).Infer(digits.request(bad_dtype), timeout=10),
             grpc.StatusCode.INVALID_ARGUMENT, "float64"),
            (lambda: stub(target).Infer(digits.request(oversized), timeout=10),
             grpc.StatusCode.INVALID_ARGUMENT, "[1, 1, 64, 64]"),
        ]
        for call, code, words in cases:
            got, details = status(call)
            assert got == code and words in details, details
            assert output(infer(target, digits, x))
    finally:
        server.stop(0)
        svc.close()


def test_the_metrics_endpoint_reports_each_served_model(digits, digits_head, unused_port):  # noqa: F811
    server, svc, target = start(metrics_port=unused_port)
    try:
        deploy(target, digits, slo_ms=5000)
        deploy(target, digits_head)
        x = torch.randn(digits.graph.input_shape)
        for _ in range(3):
            infer(target, digits, x, deadline_ms=5000)
        infer(target, digits_head, x)
        status(lambda: infer(target, digits, x, deadline_ms=1e-4))
        text = urllib.request.urlopen(f"http://127.0.0.1:{unused_port}/metrics",
                                      timeout=5).read().decode()
        for family in ("edgeweave_serve_batch_size_bucket", "edgeweave_serve_queue_seconds",
                       "edgeweave_serve_compute_seconds", "edgeweave_serve_e2e_seconds"):
            assert f'{family}' in text and 'model="digits-head"' in text
        assert 'edgeweave_serve_requests_total{model="digits-cnn",outcome="ok"} 3.0' in text
        assert ('edgeweave_serve_shed_total{model="digits-cnn",reason="deadline",'
                'stage="rejected"} 1.0') in text
        assert 'edgeweave_serve_slo_attainment{model="digits-cnn"} 0.75' in text
        stats = stub(target).Stats(pb.StatsRequest(), timeout=5).values  # batches per size
        assert stats["edgeweave_serve_batch_size_bucket{le=1.0,model=digits-cnn}"] == 3
        assert stats["edgeweave_serve_batch_size_bucket{le=5.0,model=digits-cnn}"] == 3
        health = stub(target).Health(pb.HealthRequest(), timeout=5)
        assert health.queued == 0 and health.queued_ms >= 0
    finally:
        server.stop(0)
        svc.close()


def test_fifo_mode_is_the_node_as_it_was(digits):
    """`--policy fifo --max-batch 1`: one request at a time in arrival order, no deadline
    refusals (a late answer is still sent), for the benchmark's baseline."""
    server, svc, target = start(policy="fifo", max_batch=1, max_concurrency=1,
                                dilation=200.0)
    try:
        deploy(target, digits)
        x = torch.randn(digits.graph.input_shape)
        replies = []
        threads = [threading.Thread(target=lambda: replies.append(
            infer(target, digits, x, deadline_ms=1e-3))) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(replies) == 3 and all(r.batch == 1 for r in replies)
    finally:
        server.stop(0)
        svc.close()


class _Stalled(torch.nn.Module):
    """A stage whose every call the host keeps waiting 30 ms (no CPU spent: another process
    had the core)."""

    def forward(self, x):
        import time

        time.sleep(0.03)
        return (x * 2,)


def test_a_dilated_node_calibrates_its_batches_as_it_runs_them():
    """A node emulating hardware 10x slower stretches a batch to 10x its thread's CPU time, or
    to its wall time if that is longer. Its calibration times the stage the same way: a call
    the host kept waiting 30 ms is priced at about 30 ms (timed on the wall clock and
    multiplied, as before, it was priced at 300 ms, and admission refused what the node
    would have served)."""
    from types import SimpleNamespace

    from edgeweave.runtime.serving import ServingNode, StageRunner
    from edgeweave.serve import NodeServing, ServingConfig

    stage = SimpleNamespace(module=_Stalled(), inputs=("x",), outputs=("y",), digest="d" * 64,
                            specs={"x": ("float32", (1, 4)), "y": ("float32", (1, 4))})
    node = ServingNode("edge", NodeServing(workers=1, max_batch=1), factor=10.0)
    try:
        latency = node._calibrate(stage, StageRunner(stage, 10.0), ServingConfig(max_batch=1))
    finally:
        node.stop()
    assert 0.03 <= latency.estimate(1) < 0.1
