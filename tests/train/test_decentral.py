"""Decentralized training: peer graphs, gossip, ring all-reduce, parameter server, SSP async SGD,
and real gRPC peer processes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeweave.train.data import make_task
from edgeweave.train.decentral import (
    NodeStack,
    RunConfig,
    TimeModel,
    allreduce_sgd,
    dpsgd,
    gosgd,
    gosgd_mix,
    make_graph,
    param_server_sgd,
    ring_allreduce,
    ssp_sgd,
)
from edgeweave.train.decentral.problems import centralised_optimum, convex_task
from edgeweave.train.types import TrainError

pytestmark = pytest.mark.usefixtures("one_thread")

WD = 0.05
STEADY = TimeModel(jitter=0.0, straggler_p=0.0)


@pytest.fixture(scope="module")
def convex():
    task = convex_task(8, seed=1)
    return task, centralised_optimum(task, WD)


# -- graphs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["ring", "torus", "complete", "regular:3", "erdos:0.4", "star"])
def test_mixing_matrix_doubly_stochastic_and_symmetric(spec):
    g = make_graph(spec, 12, seed=3)
    w = g.mixing_matrix()
    assert torch.allclose(w.sum(0), torch.ones(12, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(w.sum(1), torch.ones(12, dtype=torch.float64), atol=1e-12)
    assert torch.equal(w, w.T) and bool((w >= 0).all())
    off = w - torch.diag(torch.diag(w))
    assert torch.equal(off > 0, g.adjacency())  # weights only on edges
    assert 0 < g.spectral_gap() <= 1


def test_ring_and_torus_shapes():
    assert set(make_graph("ring", 6).degrees()) == {2}
    assert set(make_graph("torus", 12).degrees()) == {4}
    assert set(make_graph("complete", 5).degrees()) == {4}
    assert make_graph([(0, 1), (1, 2)], 3).neighbours() == [[1], [0, 2], [1]]


@pytest.mark.parametrize("spec, n, words", [
    ([(0, 1), (2, 3)], 4, "not connected"),
    ([(0, 0), (0, 1)], 2, "self loop"),
    ([(0, 5)], 3, "outside 0..2"),
    ("torus", 7, "torus needs"),
    ("regular:3", 5, r"k \* n even"),
    ("hypercube", 8, "unknown kind 'hypercube'"),
    ("erdos:x", 8, "needs a number"),
    ("erdos:0.001", 30, "no connected graph"),
    ("ring", 0, "at least 1 node"),
    ([(0, "a b")], 2, "not a pair"),
])
def test_bad_graph_specs_are_named(spec, n, words):
    with pytest.raises(TrainError, match=words):
        make_graph(spec, n)


def test_graph_node_count_must_match_task():
    stack = NodeStack(convex_task(4))
    cfg = RunConfig(rounds=1)
    with pytest.raises(TrainError, match="has 5 nodes but the task has 4"):
        dpsgd(stack, make_graph("ring", 5), cfg, STEADY)


# -- ring all-reduce ------------------------------------------------------------------------
@pytest.mark.parametrize("n, d", [(1, 5), (2, 7), (5, 23), (8, 3), (16, 1000)])
def test_ring_allreduce_is_the_exact_mean_with_exact_bytes(n, d):
    x = torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    out, sent = ring_allreduce(x)
    assert torch.allclose(out, x.mean(0).expand(n, d), atol=1e-12, rtol=0)
    # 2(n-1) chunks per node, n-1 in each phase; in total 2(n-1) copies of the vector
    assert int(sent.sum()) == 2 * (n - 1) * d * 8
    if d % n == 0:
        assert set(sent.tolist()) == {2 * (n - 1) * (d // n) * 8}
    else:
        assert sent.max() - sent.min() <= 2 * 8 * 2  # chunk sizes differ by at most one item


def test_ring_allreduce_rejects_bad_shape():
    with pytest.raises(TrainError, match=r"shape \(3,\)"):
        ring_allreduce(torch.zeros(3))


# -- gossip ---------------------------------------------------------------------------------
def test_gosgd_mix_preserves_weighted_average_and_weight_sum():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(10, 6, generator=g)
    alpha = torch.rand(10, generator=g, dtype=torch.float64)
    alpha /= alpha.sum()
    before = (alpha.unsqueeze(1) * X.double()).sum(0)
    rng = np.random.default_rng(0)
    for _ in range(50):
        senders = torch.from_numpy(rng.choice(10, size=4, replace=False))
        targets = (senders + torch.from_numpy(rng.integers(1, 10, size=4))) % 10
        X, alpha = gosgd_mix(X, alpha, senders, targets)
    after = (alpha.unsqueeze(1) * X.double()).sum(0)
    assert abs(float(alpha.sum()) - 1.0) < 1e-12
    assert torch.allclose(before, after, atol=1e-5)
    # pure gossip (no gradients) drives the nodes to consensus on that average
    assert float(X.std(0).max()) < float(torch.randn(10, 6, generator=g).std(0).max())


def test_gosgd_push_to_self_is_refused():
    with pytest.raises(TrainError, match="itself"):
        gosgd_mix(torch.zeros(3, 2), torch.ones(3, dtype=torch.float64) / 3,
                  torch.tensor([1]), torch.tensor([1]))


@pytest.mark.parametrize("graph", ["complete", "ring"])
def test_gosgd_converges_to_centralised_optimum_on_convex_problem(convex, graph):
    """Full local gradients, constant lr 0.5, 300 rounds: the weighted-average model is within
    5% (relative L2) of the pooled-data optimum and its objective within 1e-3 of the optimum's.
    (Constant-step gossip keeps an O(lr) consensus bias; 5% bounds it with margin here.)"""
    task, opt = convex
    stack = NodeStack(task, batch_size=None, weight_decay=WD)
    trace = gosgd(stack, make_graph(graph, 8), RunConfig(rounds=300, lr=0.5, eval_every=300),
                  STEADY)
    rel = float((trace.model - opt).norm() / opt.norm())
    gap = stack.objective(trace.model) - stack.objective(opt)
    assert rel < 0.05, rel
    assert 0 <= gap < 1e-3, gap
    assert abs(trace.final["weight_sum"] - 1.0) < 1e-9
    assert trace.final["consensus"] < 0.05
    start = float((stack.init - opt).norm() / opt.norm())
    assert rel < start / 10


def test_dpsgd_converges_on_convex_problem(convex):
    task, opt = convex
    stack = NodeStack(task, batch_size=None, weight_decay=WD)
    trace = dpsgd(stack, make_graph("ring", 8), RunConfig(rounds=300, lr=0.5, eval_every=300),
                  STEADY)
    assert float((trace.model - opt).norm() / opt.norm()) < 0.05
    # D-PSGD keeps the plain average on the gradient path: W is doubly stochastic
    assert stack.objective(trace.model) - stack.objective(opt) < 1e-3


def test_sync_sgd_paths_agree_and_count_bytes(convex):
    """All-reduce SGD and the parameter server compute the same averaged step (the same
    minibatches), and move the bytes their protocols say."""
    task, _ = convex
    cfg = RunConfig(rounds=20, lr=0.3, eval_every=10)
    a = allreduce_sgd(NodeStack(task, seed=4), cfg, STEADY)
    p = param_server_sgd(NodeStack(task, seed=4), cfg, STEADY)
    assert torch.allclose(a.model, p.model, atol=1e-5)
    d_bytes = NodeStack(task).model_bytes
    n = 8
    assert a.final["bytes"] == 20 * 2 * (n - 1) * d_bytes
    assert p.final["bytes"] == 20 * 2 * n * d_bytes       # n pushes + n pulls per round
    assert p.final["max_node_bytes"] == 20 * n * d_bytes  # the server's link
    # everyone waits for the slowest node: the ring pays 2(n-1) latencies per round
    assert a.final["time_s"] > 20 * 2 * (n - 1) * STEADY.latency_s


# -- bounded staleness ----------------------------------------------------------------------
@pytest.mark.parametrize("s", [0, 1, 3])
def test_ssp_never_exceeds_staleness_bound(s):
    task = convex_task(6, seed=2)
    tm = TimeModel(hetero=0.8, straggler_p=0.2, seed=2)  # strongly uneven: the bound binds
    trace, taus = ssp_sgd(NodeStack(task), RunConfig(rounds=30, lr=0.2, eval_every=10), tm,
                          staleness=s)
    assert trace.extra["max_clock_gap"] <= s
    assert trace.extra["waits"] > 0  # fast workers did wait
    assert len(taus) == 30 * 6
    # with clocks at most s apart a gradient can be at most (2s + 1)(n - 1) versions stale
    assert max(taus) <= (2 * s + 1) * (6 - 1)


def test_ssp_unbounded_lets_fast_workers_run_ahead():
    task = convex_task(6, seed=2)
    tm = TimeModel(hetero=0.8, straggler_p=0.2, seed=2)
    trace, _ = ssp_sgd(NodeStack(task), RunConfig(rounds=30, lr=0.2, eval_every=10), tm,
                       staleness=float("inf"))
    assert trace.extra["waits"] == 0
    assert trace.extra["max_clock_gap"] > 3


def test_ssp_learns_on_digits():
    task = make_task("digits", "iid", 8, "mlp:64,64,10")
    trace, _ = ssp_sgd(NodeStack(task), RunConfig(rounds=40, lr=0.1, eval_every=20), STEADY,
                       staleness=2)
    assert trace.final["test_acc"] > 0.6


def test_bad_inputs_are_named():
    task = convex_task(4)
    with pytest.raises(TrainError, match="staleness bound must be >= 0"):
        ssp_sgd(NodeStack(task), RunConfig(rounds=1), STEADY, staleness=-1)
    with pytest.raises(TrainError, match="push_prob"):
        gosgd(NodeStack(task), make_graph("ring", 4), RunConfig(rounds=1), STEADY, push_prob=2)
    with pytest.raises(TrainError, match="lr must be > 0"):
        RunConfig(lr=0)
    with pytest.raises(TrainError, match="link_Bps must be > 0"):
        TimeModel(link_Bps=0)
    with pytest.raises(TrainError, match="batch_size must be >= 1"):
        NodeStack(task, batch_size=0)


def test_stack_fast_path_matches_vmap():
    """The batched-matmul gradients of Linear/ReLU stacks equal vmap(grad) on the same batch."""
    task = make_task("digits", "iid", 5, "mlp:64,64,10")
    fast_stack = NodeStack(task, weight_decay=1e-3, seed=0)
    slow_stack = NodeStack(task, weight_decay=1e-3, seed=0)
    assert fast_stack.layers is not None
    slow_stack.layers = None  # force the generic torch.func path
    X = fast_stack.replicate() + 0.01 * torch.randn(5, fast_stack.dim)
    fast, lf = fast_stack.grads(X)
    slow, ls = slow_stack.grads(X)
    assert torch.allclose(fast, slow, atol=1e-5) and torch.allclose(lf, ls, atol=1e-6)


# -- real peers over gRPC -------------------------------------------------------------------
TOKEN = "t" * 20 + "-decentral-test-token"


@pytest.fixture()
def peer_node():
    from edgeweave.train.decentral.peer import PeerNode, PeerRunConfig

    node = PeerNode(0, PeerRunConfig(n=2, problem="convex", seed=1), TOKEN)
    yield node
    node.server.stop(grace=0).wait()


def _push(node, token, **kw):
    import grpc

    from edgeweave.train.wire import peer_pb2, peer_pb2_grpc
    from edgeweave.train.wire.messages import params_to_msgs

    params = kw.pop("params", node.stack.unflatten(torch.ones(node.stack.dim)))
    req = peer_pb2.PushRequest(sender=1, weight=kw.pop("weight", 0.25),
                               params=params_to_msgs(params))
    meta = () if token is None else (("authorization", f"Bearer {token}"),)
    with grpc.insecure_channel(f"127.0.0.1:{node.port}") as ch:
        return peer_pb2_grpc.PeerStub(ch).Push(req, metadata=meta, timeout=10)


def test_peer_rejects_missing_or_wrong_token(peer_node):
    import grpc

    for token in (None, "x" * 24):
        with pytest.raises(grpc.RpcError) as e:
            _push(peer_node, token)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert peer_node.merged == 0 and peer_node.alpha == 0.5


def test_peer_checks_pushed_model_and_weight(peer_node):
    import grpc

    bad = peer_node.stack.unflatten(torch.ones(peer_node.stack.dim))
    bad["0.weight"] = torch.ones(2, 2)
    with pytest.raises(grpc.RpcError) as e:
        _push(peer_node, TOKEN, params=bad)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'0.weight' has shape [2, 2], expected [3, 8]" in e.value.details()
    nan = peer_node.stack.unflatten(torch.full((peer_node.stack.dim,), float("nan")))
    with pytest.raises(grpc.RpcError, match="NaN"):
        _push(peer_node, TOKEN, params=nan)
    with pytest.raises(grpc.RpcError, match=r"weight must be in \(0, 1\]"):
        _push(peer_node, TOKEN, weight=1.5)
    assert peer_node.merged == 0


def test_peer_push_is_a_sum_weight_merge(peer_node):
    x0 = peer_node.x.clone()
    reply = _push(peer_node, TOKEN, weight=0.25)
    assert reply.weight == pytest.approx(0.75)
    # (0.5 x0 + 0.25 * 1) / 0.75
    assert torch.allclose(peer_node.x, (0.5 * x0 + 0.25) / 0.75, atol=1e-6)
    assert peer_node.merged == 1


def test_peer_run_config_is_checked():
    from edgeweave.train.decentral.peer import PeerRunConfig, run_peers

    with pytest.raises(TrainError, match="at least 2 peers"):
        PeerRunConfig(n=1)
    with pytest.raises(TrainError, match="problem must be"):
        PeerRunConfig(problem="imagenet")
    with pytest.raises(TrainError, match="edge list"):
        run_peers(PeerRunConfig(n=4, graph="edges"), token=TOKEN)


@pytest.mark.slow
def test_real_gossip_processes_converge_on_convex_problem():
    """3 processes, GoSGD over gRPC on loopback, full local gradients: the weighted average of
    the peers' models reaches the pooled optimum (5% relative), no weight is lost, and the bytes
    on the wire are the pushes' real serialized size."""
    from edgeweave.train.decentral.peer import PeerRunConfig, run_peers

    cfg = PeerRunConfig(n=3, problem="convex", graph="complete", steps=150, lr=0.3,
                        batch_size=None, weight_decay=WD, seed=1, timeout_s=90)
    res = run_peers(cfg, token=TOKEN)
    opt = centralised_optimum(convex_task(3, seed=1), WD)
    assert float((res.model - opt).norm() / opt.norm()) < 0.05
    assert res.weight_sum == pytest.approx(1.0, abs=1e-9)
    model_bytes = NodeStack(convex_task(3, seed=1)).model_bytes
    for p in res.peers:
        assert p["steps"] >= 150 and p["pushes"] > 0  # all train until every node has 150
        assert p["payload_bytes_sent"] == p["pushes"] * model_bytes
        assert p["wire_bytes_sent"] > p["payload_bytes_sent"]
    assert sum(p["merged"] for p in res.peers) == sum(p["pushes"] for p in res.peers)


def test_ssp_applies_the_gradient_of_the_model_each_worker_read():
    """Gradients are computed lazily in batches; each applied one must still be the gradient at
    the (stale) model its worker pulled, not a newer or an older one."""
    from edgeweave.train.decentral.async_sgd import _SSP

    stack = NodeStack(convex_task(6, seed=2), batch_size=None, weight_decay=WD)
    tm = TimeModel(hetero=0.8, straggler_p=0.2, seed=2)
    sim = _SSP(stack, RunConfig(rounds=10, lr=0.2, eval_every=10), tm, 1, False)
    apply, mismatched = sim.apply, []

    def checked() -> float:
        w = sim.heap[0][2]
        read = sim.read[w].clone()
        t = apply()
        want, _ = stack.grads(read.unsqueeze(0), torch.tensor([w]))
        mismatched.append(not torch.allclose(sim.grad[w], want[0], atol=1e-6))
        return t

    sim.apply = checked
    sim.run()
    assert len(mismatched) == 60 and not any(mismatched)
