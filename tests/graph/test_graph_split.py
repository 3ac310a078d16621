"""Split validation: every complaint names what is wrong."""

from __future__ import annotations

import pytest
import torch

from edgeweave.errors import GraphError
from edgeweave.graph import Graph, capture, run_stages, split, stage_from_nodes
from edgeweave.graph.digits import DigitsCNN


@pytest.fixture(scope="module")
def graph() -> Graph:
    return capture(DigitsCNN(), (1, 1, 8, 8), name="digits")


def _all_on(graph: Graph, key: str) -> dict[str, str]:
    return {n.name: key for n in graph.nodes}


def test_stage_boundaries(graph: Graph) -> None:
    names = [n.name for n in graph.nodes]
    placement = {name: "device" if i < 3 else "cloud" for i, name in enumerate(names)}
    device, cloud = split(graph, placement)
    assert device.inputs == [names[0]] and device.outputs == [names[2]]
    assert cloud.inputs == [names[2]] and cloud.outputs == [names[-1]]
    assert device.nodes == names[:3]
    x = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        out = device.module(x)
        assert isinstance(out, tuple) and len(out) == 1
        assert torch.equal(cloud.module(*out)[0], graph.module(x))


def test_placeholder_alone_on_first_stage(graph: Graph) -> None:
    placement = _all_on(graph, "edge")
    placement[graph.placeholders[0]] = "device"
    stages = split(graph, placement)
    assert stages[0].nodes == graph.placeholders
    x = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(run_stages(stages, x), graph.module(x))


def test_custom_order(graph: Graph) -> None:
    placement = _all_on(graph, "b")
    placement[graph.placeholders[0]] = "a"
    stages = split(graph, placement, order=("a", "b"))
    assert [s.key for s in stages] == ["a", "b"]


def test_missing_node(graph: Graph) -> None:
    placement = _all_on(graph, "device")
    del placement["_3"]
    with pytest.raises(GraphError, match="unplaced: '_3'"):
        split(graph, placement)


def test_unknown_node(graph: Graph) -> None:
    placement = _all_on(graph, "device") | {"ghost": "cloud"}
    with pytest.raises(GraphError, match="'ghost'"):
        split(graph, placement)


def test_unknown_key(graph: Graph) -> None:
    placement = _all_on(graph, "device") | {"_2": "fog"}
    with pytest.raises(GraphError, match=r"unknown stage key 'fog'; expected one of device, edge"):
        split(graph, placement)


def test_backward_edge(graph: Graph) -> None:
    placement = _all_on(graph, "device") | {"_0": "cloud"}
    with pytest.raises(GraphError, match=r"backwards along edge '_0' -> '_1'.*'cloud'.*'device'"):
        split(graph, placement)


def test_run_stages_checks_inputs(graph: Graph) -> None:
    stages = split(graph, _all_on(graph, "device"))
    with pytest.raises(GraphError, match="got 2 input"):
        run_stages(stages, torch.randn(1, 1, 8, 8), torch.randn(1))
    with pytest.raises(GraphError, match="no stages"):
        run_stages([], torch.randn(1, 1, 8, 8))


def test_stage_from_nodes_rebuilds_what_split_cut(graph: Graph) -> None:
    names = [n.name for n in graph.nodes]
    placement = {name: "device" if i < 3 else "cloud" for i, name in enumerate(names)}
    _, cloud = split(graph, placement)
    rebuilt = stage_from_nodes(graph, list(reversed(cloud.nodes)), cloud.inputs, cloud.outputs)
    assert rebuilt.nodes == cloud.nodes  # put back in topological order
    mid = torch.randn(graph.node(cloud.inputs[0]).out_shape)
    with torch.no_grad():
        assert torch.equal(rebuilt.module(mid)[0], cloud.module(mid)[0])


def test_stage_from_nodes_refuses_a_repeated_node(graph: Graph) -> None:
    names = [n.name for n in graph.nodes]
    with pytest.raises(GraphError, match=f"lists {names[1]!r} twice"):
        stage_from_nodes(graph, [names[1], names[1]], [names[0]], [names[1]])
