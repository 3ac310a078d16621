"""Faults and adaptation across real OS processes (the local lab)."""

import pytest
import torch
from runtime_helpers import local_output, three_tier_plan

from edgeweave.runtime.bandwidth import BandwidthEstimator
from edgeweave.runtime.client import ClientOptions, CoInferenceClient
from edgeweave.runtime.lab import LocalLab
from edgeweave.runtime.session import plan_for
from helpers import calibration


@pytest.mark.slow
def test_edge_killed_mid_stream_every_request_still_gets_one_result(digits_graph):
    with LocalLab() as lab:
        _, chosen = three_tier_plan(digits_graph)
        client = CoInferenceClient(digits_graph, chosen, lab.edge_target, token=lab.token,
                                   options=ClientOptions(backoff_s=(0.2, 1.0), timeout_s=5))
        xs = [torch.randn(digits_graph.input_shape) for _ in range(12)]
        client.deploy(xs[0])
        results = []
        for i, x in enumerate(xs):
            if i == 4:
                lab.kill("edge")
            results.append(client.infer(x))
    assert len(results) == len(xs)
    assert not any(r.fallback for r in results[:4])
    assert all(r.fallback for r in results[4:])
    assert "ran locally" in results[4].note
    for x, r in zip(xs, results, strict=True):
        assert torch.allclose(r.output, local_output(digits_graph, x), atol=1e-5)


def test_estimator_tracks_and_detects_a_step():
    est = BandwidthEstimator()
    for _ in range(10):
        est.observe(50e6 / 8 * 0.01, 0.01)  # 50 Mbit/s
    assert est.mbps == pytest.approx(50, rel=0.01)
    assert not est.observe(2e6 / 8 * 0.01, 0.01)  # one outlier is not a change
    assert not est.observe(2e6 / 8 * 0.01, 0.01)
    assert est.observe(2e6 / 8 * 0.01, 0.01)  # the third agreeing sample is
    assert est.mbps == pytest.approx(2, rel=0.01)
    assert est.changes == 1


def test_client_replans_when_bandwidth_drops(resnet_graph, nodes):
    from runtime_helpers import TOKEN

    from edgeweave.profile import profile_graph
    from edgeweave.topology import load_fleet

    edge_target, *_ = nodes
    fleet = load_fleet("pi4-wifi-edge-cloud")
    measured = profile_graph(resnet_graph, fleet, warmup=0, repeats=2, calibration=calibration())
    prof, fast = plan_for(measured, fleet, mbps=500.0)
    assert fast.mode != "device-only"
    client = CoInferenceClient(resnet_graph, fast, edge_target, token=TOKEN, profile=prof,
                               options=ClientOptions(adapt=True, device_dilation=1.0))
    x = torch.randn(resnet_graph.input_shape)
    client.deploy(x)
    for _ in range(3):
        client.infer(x)
    client.set_link_mbps("device-edge", 0.5)
    modes = [client.infer(x).plan_mode for _ in range(8)]
    switched = [s for s in client.switches if s["switched"]]
    assert switched, client.switches
    assert switched[0]["estimate_mbps"] < 2.0
    assert client.deployment.plan.placement != fast.placement
    assert modes[-1] == client.deployment.plan.mode


def test_a_bandwidth_trace_drives_the_emulated_link(nodes, digits_graph):
    from runtime_helpers import TOKEN

    from edgeweave.runtime.session import run
    from edgeweave.topology import BandwidthTrace

    edge_target, *_ = nodes
    _, chosen = three_tier_plan(digits_graph, fractions=(0.3, 2.0))
    x = torch.randn(digits_graph.input_shape)
    slow = BandwidthTrace(t_s=[0.0, 30.0], mbps=[0.5, 0.5])
    summary = run(digits_graph, chosen, edge_target, [x] * 3, dilation=1.0, token=TOKEN,
                  warmup=1, trace=slow)
    up = summary.median_segments()["device-edge_uplink"]
    nbytes = summary.results[-1].bytes_up
    assert nbytes > 3000
    # shaped at the trace's 0.5 Mbit/s (less the bucket's one-frame burst)
    assert up >= (nbytes - 1540) * 8 / (0.5 * 1000) * 0.9
    assert chosen.links["device-edge"].mbps == 1000.0  # while the plan believed 1000


def test_restarted_edge_gets_its_stages_again_and_a_dead_one_at_deploy_is_survived(
        digits_graph):
    import time

    from runtime_helpers import TOKEN

    from edgeweave.runtime.node import ServeOptions, start_node
    from edgeweave.runtime.server import NodeConfig

    _, chosen = three_tier_plan(digits_graph, fractions=(0.3, 2.0))
    x = torch.randn(digits_graph.input_shape)
    first, _, port = start_node(NodeConfig("edge", "edge"),
                                ServeOptions("127.0.0.1:0", token=TOKEN))
    first.stop(0)  # nobody listens when the client deploys
    client = CoInferenceClient(digits_graph, chosen, f"127.0.0.1:{port}", token=TOKEN,
                               options=ClientOptions(backoff_s=(0.1, 0.2), timeout_s=5))
    client.deploy(x)
    down = client.infer(x)
    assert down.fallback
    assert torch.allclose(down.output, local_output(digits_graph, x), atol=1e-5)
    second, _, _ = start_node(NodeConfig("edge", "edge"),
                              ServeOptions(f"127.0.0.1:{port}", token=TOKEN))
    try:
        deadline = time.monotonic() + 10
        back = client.infer(x)
        while back.fallback and time.monotonic() < deadline:  # until the back-offs expire
            time.sleep(0.2)
            back = client.infer(x)
        assert not back.fallback, back.note
        assert torch.allclose(back.output, local_output(digits_graph, x), atol=1e-5)
    finally:
        second.stop(0)
