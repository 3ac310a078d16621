"""Runtime fixtures: in-process node servers on loopback (real gRPC over real sockets)."""

from __future__ import annotations

import pytest
from runtime_helpers import TOKEN

from edgeweave.graph import capture_spec
from edgeweave.runtime.node import ServeOptions, start_node
from edgeweave.runtime.server import NodeConfig


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


@pytest.fixture(scope="session")
def digits_graph():
    return capture_spec("digits-cnn")


@pytest.fixture(scope="session")
def resnet_graph():
    return capture_spec("resnet18", input_shape=(1, 3, 32, 32))


