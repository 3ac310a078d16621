"""Incremental offloading (IONN, issue 18): queries are answered from the first one while the
model's layers go up to the edge; the plan switches as partitions land; every answer equals the
local model's; an edge that loses its stages is healed from its chunks."""

import copy
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch
from runtime_helpers import TOKEN, local_output

from edgeweave.codec.weights import roundtrip
from edgeweave.plan.ionn import upload_schedule
from edgeweave.profile.schema import DevicePower, LinkSpec, NodeCost, Profile
from edgeweave.runtime.chunks import CHUNK_BYTES
from edgeweave.runtime.client import ClientOptions
from edgeweave.runtime.incremental import IncrementalClient
from edgeweave.runtime.incremental_session import run_incremental, schedule_for
from edgeweave.runtime.node import ServeOptions, start_node
from edgeweave.runtime.server import NodeConfig


@pytest.fixture(scope="module")
def profile(digits_graph):
    """digits-cnn with every layer that has weights 20x faster on the edge and activations
    cheap to move, so each upload pays: IONN's order then has several partitions. (Latencies
    set by hand: the test is about the runtime, not the profiler.)"""
    g = digits_graph
    nodes = [NodeCost(name=n.name, op=n.op, flops=n.flops, param_bytes=n.param_bytes,
                      out_bytes=n.out_bytes, energy_j={"device": 0.0, "edge": 0.0},
                      latency_ms={"device": 20.0 if n.param_bytes else 0.01,
                                  "edge": 1.0 if n.param_bytes else 0.01}) for n in g.nodes]
    prof = Profile(model=g.name, fleet="test", input_bytes=g.nodes[0].out_bytes,
                   tiers=["device", "edge"], nodes=nodes, edges=g.edges, output=g.outputs[0],
                   links={"device-edge": LinkSpec(mbps=1000.0, rtt_ms=1.0)},
                   device_power=DevicePower(compute_w=0, idle_w=0, tx_w=0, rx_w=0),
                   inputs=g.placeholders)
    return prof


@pytest.fixture(scope="module")
def schedule(profile):
    s = upload_schedule(profile)
    assert s.initial.mode == "device-only" and len(s.steps) >= 3
    return s


@pytest.fixture
def edge(tmp_path, digits_graph):
    server, svc, port = start_node(NodeConfig("edge", "edge", cache_dir=str(tmp_path)),
                                   ServeOptions("127.0.0.1:0", token=TOKEN))
    # the node captures the model before the client runs queries: a capture (torch.fx tracing)
    # patches nn.Module.__call__ process-wide, and this edge shares the test's process (a real
    # edge is its own process), so a local query during it would be traced instead of run
    svc.deployer.models.graph(digits_graph.spec, digits_graph.input_shape)
    yield f"127.0.0.1:{port}", svc
    server.stop(0)


def test_queries_are_answered_throughout_and_the_plan_switches_as_partitions_land(
        edge, digits_graph, schedule):
    target, _ = edge
    xs = [torch.randn(digits_graph.input_shape) for _ in range(4)]
    # the upload crosses an emulated 2 Mbit/s link (~0.6 s for digits-cnn's 150 kB) while the
    # queries run, so some run before the first partition lands
    summary = run_incremental(digits_graph, schedule, target, xs, link=(2.0, 1.0),
                              dilation=1.0, fleet="test", token=TOKEN, interval_s=0.01,
                              until_uploaded=True)
    queries, events = summary.run.queries, summary.run.events
    during = len(summary.results) - len(xs)  # cycling through xs, then xs once more
    sent = [xs[k % len(xs)] for k in range(during)] + xs
    for x, result in zip(sent, summary.results, strict=True):
        assert not result.fallback, result.note
        assert torch.allclose(result.output, local_output(digits_graph, x), atol=1e-5)
    assert queries[0].landed == 0 and queries[0].mode == "device-only"  # locally at first
    landed = [q.landed for q in queries]
    assert landed == sorted(landed) and landed[-1] == len(schedule.steps)
    assert next(q.mode for q in queries if q.landed == len(schedule.steps)) == \
        schedule.steps[-1].plan.mode
    kinds = [(e["event"], e.get("partitions", e.get("partition"))) for e in events]
    assert ("switched", len(schedule.steps)) in kinds
    for k in {q.landed for q in queries} - {0}:  # a plan whose successor landed before it was
        assert kinds.index(("landed", k)) < kinds.index(("switched", k))  # built is skipped
        switched = next(e["t_s"] for e in events if e["event"] == "switched"
                        and e["partitions"] == k)
        assert all(q.t_s >= switched - 1e-3 for q in queries if q.landed == k)
    assert summary.stats.bytes_sent == sum(s.nbytes for s in schedule.steps)  # each once


def test_int8_weights_upload_a_quarter_and_the_edge_answers_with_them_dequantized(
        edge, digits_graph, profile):
    target, _ = edge
    schedule = schedule_for(profile, "incremental", graph=digits_graph, weight_codec="int8")
    raw = upload_schedule(profile)
    assert schedule.weight_codec == "int8" and schedule.nbytes < raw.nbytes / 3.5
    xs = [torch.randn(digits_graph.input_shape) for _ in range(8)]
    summary = run_incremental(digits_graph, schedule, target, xs, link=(1000.0, 0.0),
                              dilation=1.0, fleet="test", token=TOKEN, until_uploaded=True)
    assert summary.stats.bytes_sent == schedule.nbytes
    last = summary.results[-len(xs):]
    assert all(r.plan_mode == schedule.steps[-1].plan.mode and not r.fallback for r in last)
    dequantized = copy.deepcopy(digits_graph.module)
    dequantized.load_state_dict({k: roundtrip("int8", v)
                                 for k, v in digits_graph.module.state_dict().items()})
    for x, result in zip(xs, last, strict=True):
        with torch.no_grad():
            want = dequantized(x)
        assert torch.allclose(result.output, want, atol=1e-4)  # its weighted layers: edge
        exact = local_output(digits_graph, x)
        assert torch.allclose(result.output, exact, atol=0.05 * float(exact.abs().max()))


def test_an_edge_that_loses_its_stages_is_healed_and_no_query_fails(edge, digits_graph,
                                                                    schedule):
    target, svc = edge
    client = IncrementalClient(digits_graph, schedule, target, link=(1000.0, 0.0), token=TOKEN,
                               options=ClientOptions(backoff_s=(0.01, 0.05)))
    x = torch.randn(digits_graph.input_shape)
    want = local_output(digits_graph, x)
    try:
        client.start(x)
        assert client.wait(60)
        sent = client.uploader.stats.bytes_sent
        svc.stages._stages.clear()  # as after an eviction (the chunks stay on disk)
        results = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            results.append(client.infer(x))
            if any(e["event"] == "rebuilt" for e in client.run.events) \
                    and not results[-1].fallback:
                break
            time.sleep(0.01)
    finally:
        client.close()
    assert all(torch.allclose(r.output, want, atol=1e-5) for r in results)
    assert results[0].fallback and "FAILED_PRECONDITION" in results[0].note
    assert not results[-1].fallback and results[-1].plan_mode == schedule.steps[-1].plan.mode
    assert client.uploader.stats.bytes_sent == sent  # rebuilt from the chunks on its disk


def _serve(port, token_file, cache):
    """An edge node as its own OS process (killed and started again by the test)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeweave", "serve", "--role", "edge", "--name", "edge",
         "--listen", f"127.0.0.1:{port}", "--token-file", str(token_file), "--cache-dir",
         str(cache)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"))
    for line in proc.stdout:
        if " serving on " in line:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc
    raise AssertionError(f"edge did not start: {proc.wait()}")


@pytest.mark.slow
def test_an_edge_killed_mid_upload_resumes_from_its_disk_and_no_query_fails(
        digits_graph, schedule, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    edge = _serve(port, token_file, tmp_path)
    # 0.5 Mbit/s: the last partition (131 kB) takes 2 s, long enough to kill the edge in it
    client = IncrementalClient(digits_graph, schedule, f"127.0.0.1:{port}", link=(0.5, 1.0),
                               token=TOKEN, options=ClientOptions(backoff_s=(0.1, 0.5)))
    x = torch.randn(digits_graph.input_shape)
    want = local_output(digits_graph, x)
    results, killed = [], False
    try:
        client.start(x)
        deadline = time.monotonic() + 120
        while not client.wait(0) and time.monotonic() < deadline:
            results.append(client.infer(x))
            landed = [e for e in client.run.events if e["event"] == "landed"]
            if not killed and len(landed) == len(schedule.steps) - 1:
                time.sleep(0.5)  # the last partition is on its way
                edge.kill()
                edge.wait()
                killed = True
                edge = _serve(port, token_file, tmp_path)  # same port, same disk
            time.sleep(0.02)
        results += [client.infer(x) for _ in range(3)]
    finally:
        client.close()
        edge.kill()
        edge.wait()
    assert killed and client.wait(0)
    assert all(torch.allclose(r.output, want, atol=1e-5) for r in results)  # none failed
    assert any(r.fallback for r in results) and not results[-1].fallback
    stats = client.uploader.stats
    total = sum(s.nbytes for s in schedule.steps)
    assert stats.broken >= 1
    # what had arrived was not sent again: at most the chunks in flight when the edge died
    assert total <= stats.bytes_sent <= total + 2 * CHUNK_BYTES
