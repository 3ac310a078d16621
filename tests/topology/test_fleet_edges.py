"""A device names the edge it trains under in hierarchical FL (``edge:``); without it, its
fastest-linked edge. Bad names are one error naming the node's field."""

from __future__ import annotations

import pytest

from edgeweave.errors import FleetError
from edgeweave.topology import Fleet, load_fleet


def _fleet(**dev_extra):
    return {"name": "f", "nodes": [
        {"name": "d", "tier": "device", "hardware": "rpi4", **dev_extra},
        {"name": "e1", "tier": "edge", "hardware": "edge-server"},
        {"name": "e2", "tier": "edge", "hardware": "edge-server"},
        {"name": "c", "tier": "cloud", "hardware": "cloud-gpu"}],
        "links": [{"from": "d", "to": "e1", "mbps": 5, "rtt_ms": 1},
                  {"from": "d", "to": "e2", "mbps": 50, "rtt_ms": 1},
                  {"from": "e1", "to": "c", "mbps": 10, "rtt_ms": 1},
                  {"from": "e2", "to": "c", "mbps": 10, "rtt_ms": 1}]}


def test_a_device_trains_under_its_named_edge_else_the_fastest_linked():
    assert Fleet.from_dict(_fleet()).edge_of("d").name == "e2"
    named = Fleet.from_dict(_fleet(edge="e1"))
    assert named.edge_of("d").name == "e1"
    assert [n.name for n in named.tier_path().nodes] == ["d", "e1", "c"]
    two = load_fleet("two-edges")
    assert {d.name: two.edge_of(d.name).name for d in two.nodes_in("device")} == {
        "pi4-a": "edge-a", "pi3-a": "edge-a", "pi4-b": "edge-b", "jetson-b": "edge-b"}
    assert two.link("pi4-b", "edge-a").mbps > two.link("pi4-b", "edge-b").mbps  # named wins


@pytest.mark.parametrize("change,words", [
    ({"edge": "c"}, "nodes[0].edge: 'c' is not an edge node (edge nodes: e1, e2)"),
    ({"edge": "zz"}, "nodes[0].edge: 'zz' is not an edge node"),
    ({"edge": ""}, "nodes[0].edge"),
])
def test_a_bad_edge_is_named(change, words):
    with pytest.raises(FleetError) as e:
        Fleet.from_dict(_fleet(**change), source="f.yaml")
    assert words in str(e.value) and str(e.value).startswith("f.yaml"), str(e.value)


def test_only_devices_name_an_edge_and_only_one_they_are_linked_to():
    data = _fleet(edge="e1")
    data["links"] = [lk for lk in data["links"] if lk["to"] != "e1" or lk["from"] != "d"]
    with pytest.raises(FleetError, match=r"nodes\[0\].edge: device 'd' has no link to edge 'e1'"):
        Fleet.from_dict(data)
    data = _fleet()
    data["nodes"][1]["edge"] = "e2"
    with pytest.raises(FleetError, match=r"nodes\[1\].edge: only device nodes name their edge"):
        Fleet.from_dict(data)
