"""A device given several edges: each request goes to the edge expected to answer soonest, an
edge that dies is failed over from (the request still answered by the other edge), and a
refused request is still answered by its device."""

import threading
import time

import grpc
import pytest
import torch
from runtime_helpers import TOKEN, three_tier_plan

from edgeweave.runtime.client import ClientOptions, CoInferenceClient
from edgeweave.runtime.edges import EdgePool
from edgeweave.runtime.node import ServeOptions, start_node
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.server import NodeConfig
from edgeweave.runtime.serving import LOAD_KEY, NODE_KEY


def _edge(name, **cfg):
    server, svc, port = start_node(NodeConfig("edge", name, **cfg),
                                   ServeOptions("127.0.0.1:0", token=TOKEN))
    return server, svc, f"127.0.0.1:{port}"


def test_the_pool_picks_the_edge_with_the_least_expected_work_and_backs_off_a_dead_one():
    pool = EdgePool(["127.0.0.1:1", "127.0.0.1:2"], token=TOKEN)
    a, b = pool.edges
    pool.heard(a, 500.0)
    pool.heard(b, 20.0)
    assert pool.pick() is b
    pool.release(b)
    pool.failed(b)
    assert pool.pick() is a and pool.pick(exclude=[a]) is None
    pool.heard(b, float("nan"))  # a peer's nonsense number is ignored: b stays backed off
    assert [e.target for e in pool.up()] == ["127.0.0.1:1"]


class _Refusal(grpc.RpcError):
    def __init__(self, metadata):
        self.metadata = metadata

    def trailing_metadata(self):
        return self.metadata


def test_the_margin_kept_from_deadlines_learns_the_time_outside_the_node():
    pool = EdgePool(["127.0.0.1:1"], token=TOKEN)
    (edge,) = pool.edges
    assert edge.margin_ms() == 0.0  # nothing heard yet: nothing kept back
    for _ in range(20):  # round trips of 50 ms of which the node spent 30
        pool.pick()
        pool.answered(edge, 50.0, pb.InferReply(
            timings=[pb.Timing(queue_ms=10.0, compute_ms=20.0)], queued_ms=5.0))
    assert 19.0 < edge.outside_ms < 21.0 and edge.margin_ms() >= edge.outside_ms
    assert edge.margin_ms(30.0) == 15.0  # never more than half what is left
    # the margin's part beyond the mean goes with the request: the node may finish that late
    assert edge.grace_ms() == pytest.approx(edge.margin_ms() - edge.outside_ms)
    assert edge.grace_ms(30.0) == pytest.approx(max(0.0, 15.0 - edge.outside_ms))
    assert edge.inflight == 0 and edge.queued_ms == 5.0
    # a refusal says how long the node held the request: alive, and learnt from
    pool.pick()
    said = _Refusal(((LOAD_KEY, "7.5"), (NODE_KEY, "1.0")))
    assert pool.refused(edge, 2.0, said)
    assert edge.outside_ms < 20.0 and edge.queued_ms == 7.5 and edge.inflight == 0
    # without the node's word it is a failure, and a peer's nonsense time teaches nothing
    pool.pick()
    assert not pool.refused(edge, 2.0, _Refusal(((LOAD_KEY, "7.5"),)))
    before = edge.outside_ms
    pool.pick()
    assert pool.refused(edge, 2.0, _Refusal(((LOAD_KEY, "1"), (NODE_KEY, "nan"))))
    assert edge.outside_ms == before and edge.inflight == 0


def test_the_pool_counts_each_outcome_for_the_edges_throttle():
    """Refusals and failures alike count against an edge, answers for it: after forty refusals
    a device with throttle k = 1.5 keeps nearly everything back; without a throttle, nothing."""
    pool = EdgePool(["127.0.0.1:1"], token=TOKEN, throttle_k=1.5)
    (edge,) = pool.edges
    for k in range(40):
        pool.pick()
        said = ((LOAD_KEY, "1"), (NODE_KEY, "1")) if k % 2 else ()  # refused, or failed
        pool.refused(edge, 2.0, _Refusal(said))
    now = time.monotonic()
    assert edge.throttle.reject_probability(now) == pytest.approx(40 / 41)
    for _ in range(40):
        pool.pick()
        pool.answered(edge, 5.0, pb.InferReply(queued_ms=1.0))
    # 80 outcomes, 40 accepted: (80 - 1.5 x 40) / 81 kept back
    assert edge.throttle.reject_probability(time.monotonic()) == pytest.approx(20 / 81)
    off = EdgePool(["127.0.0.1:1"], token=TOKEN)
    for _ in range(40):
        off.refused(off.edges[0], 2.0, _Refusal(()))
    assert all(off.edges[0].throttle.admit(now) for _ in range(100))


def test_requests_fail_over_to_the_other_edge_when_one_dies(digits_graph):
    first, first_svc, t1 = _edge("edge-a")
    second, second_svc, t2 = _edge("edge-b")
    try:
        _, chosen = three_tier_plan(digits_graph, fractions=(0.3, 2.0))  # device + edge
        client = CoInferenceClient(digits_graph, chosen, [t1, t2], token=TOKEN,
                                   options=ClientOptions(timeout_s=5))
        x = torch.randn(digits_graph.input_shape)
        client.deploy(x)
        assert len(first_svc.stages) == len(second_svc.stages) == 1  # deployed to both
        for _ in range(4):
            assert not client.infer(x).fallback
        served = [svc.metrics.snapshot().get("edgeweave_requests_total{outcome=ok}", 0)
                  for svc in (first_svc, second_svc)]
        assert sum(served) == 4
        first.stop(0)
        first_svc.close()
        results = [client.infer(x) for _ in range(4)]
        assert not any(r.fallback for r in results)  # the second edge answered them all
        with torch.no_grad():
            assert torch.allclose(results[-1].output, digits_graph.module(x), atol=1e-5)
        assert second_svc.metrics.snapshot()["edgeweave_requests_total{outcome=ok}"] \
            == served[1] + 4
        second.stop(0)
        second_svc.close()
        last = client.infer(x)  # no edge left: the device answers
        assert last.fallback and "ran locally" in last.note
    finally:
        first.stop(0)
        second.stop(0)


@pytest.mark.slow
def test_refused_requests_are_answered_by_the_device_and_the_counts_add_up(digits_graph):
    """One slow edge, requests whose SLO it cannot meet for all: every request gets its answer
    (from the edge or the device), and the edge's refusals are the client's fallbacks."""
    server, svc, target = _edge("slow", max_concurrency=1, max_batch=1, max_queue=1,
                                dilation=500.0)
    try:
        _, chosen = three_tier_plan(digits_graph, fractions=(0.3, 2.0))
        opts = ClientOptions(timeout_s=5)
        client = CoInferenceClient(digits_graph, chosen, target, token=TOKEN, options=opts)
        x = torch.randn(digits_graph.input_shape)
        client.deploy(x)
        served = svc.serving.engine.models[client.deployment.route[0].stage]
        start = time.monotonic()
        assert not client.infer(x).fallback
        one_ms = (time.monotonic() - start) * 1000  # a request alone, the edge's compute in it
        # room for about three: the edge (dilated 500x) dominates, so the device side's own
        # time under twelve threads is small beside the SLO
        opts.slo_ms = one_ms + 2 * served.latency.estimate(1) * 1000 + 20

        results = []
        lock = threading.Lock()

        def one():
            r = client.infer(x)
            with lock:
                results.append(r)

        threads = [threading.Thread(target=one) for _ in range(12)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert time.monotonic() - start < 30 and len(results) == 12
        with torch.no_grad():
            want = digits_graph.module(x)
        assert all(torch.allclose(r.output, want, atol=1e-5) for r in results)
        fallbacks = sum(r.fallback for r in results)
        unsent = sum("deadline passed before" in r.note for r in results)
        snap = svc.metrics.snapshot()
        refused = sum(v for k, v in snap.items() if k.startswith("edgeweave_rejected_total"))
        answered = snap.get("edgeweave_requests_total{outcome=ok}", 0)
        # every request the edge refused was answered by its device; the rest of the device's
        # answers are requests a stalled host kept from being sent in time (unsent) or whose
        # edge answer came back after the client's deadline (answered at the edge, too late)
        answered -= 1  # the request alone
        assert answered + refused + unsent == 12
        assert refused + unsent <= fallbacks <= refused + unsent + answered
        assert 12 - fallbacks <= answered
        assert refused > 0 and fallbacks < 12, [r.note for r in results]
    finally:
        server.stop(0)
        svc.close()


def test_a_load_generator_request_carries_its_deadline_and_grace():
    from edgeweave.runtime.loadgen_target import _tail

    req = pb.InferRequest.FromString(_tail("r1", 80.0, 3, 12.5))
    assert (req.request_id, req.deadline_ms, req.priority, req.grace_ms) == ("r1", 80.0, 3, 12.5)
