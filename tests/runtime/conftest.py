"""Runtime fixtures: in-process node servers on loopback (real gRPC over real sockets)."""

from __future__ import annotations

import pytest
import torch

from edgeweave.graph import capture_spec
from edgeweave.plan import plan
from edgeweave.profile import profile_graph
from edgeweave.runtime.node import ServeOptions, start_node
from edgeweave.runtime.server import NodeConfig
from edgeweave.topology import load_fleet

TOKEN = "test-token-0123456789abcdef"


@pytest.fixture
def nodes():
    """Cloud and edge servers; yields (edge_target, cloud_server, edge_server, services)."""
    cloud, cloud_svc, cport = start_node(
        NodeConfig("cloud", "cloud"), ServeOptions("127.0.0.1:0", token=TOKEN))
    edge, edge_svc, eport = start_node(
        NodeConfig("edge", "edge", next_target=f"127.0.0.1:{cport}"),
        ServeOptions("127.0.0.1:0", token=TOKEN))
    try:
        yield f"127.0.0.1:{eport}", cloud, edge, (edge_svc, cloud_svc)
    finally:
        edge.stop(0)
        cloud.stop(0)


def three_tier_plan(graph, fractions=(0.3, 0.7), mbps=1000.0):
    """A monotone device/edge/cloud placement cutting the topological order at `fractions`."""
    prof = profile_graph(graph, load_fleet("pi4-wifi-edge-cloud"), warmup=0, repeats=1)
    prof = prof.with_link("device-edge", mbps=mbps).with_link("edge-cloud", mbps=mbps, rtt_ms=0)
    prof = prof.with_link("device-edge", rtt_ms=0)
    base = plan(prof, "latency")
    n = len(graph.nodes)
    tier = {node.name: (0 if i < fractions[0] * n else 1 if i < fractions[1] * n else 2)
            for i, node in enumerate(graph.nodes)}
    for node in graph.nodes:
        for p in node.inputs:
            tier[node.name] = max(tier[node.name], tier[p])
    placement = {k: ("device", "edge", "cloud")[v] for k, v in tier.items()}
    return prof, base.model_copy(update={"placement": placement})


@pytest.fixture(scope="session")
def digits_graph():
    return capture_spec("digits-cnn")


@pytest.fixture(scope="session")
def resnet_graph():
    return capture_spec("resnet18", input_shape=(1, 3, 32, 32))


def local_output(graph, x):
    with torch.no_grad():
        return graph.module(x)
