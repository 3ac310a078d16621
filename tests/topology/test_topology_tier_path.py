"""Links and tier paths: the transfer-time formula and the chain choice every planner relies on."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeweave.errors import FleetError
from edgeweave.topology import Fleet, Link, Node, TierPath, load_fleet

HW = {"device": "rpi4", "edge": "edge-server", "cloud": "cloud-gpu"}


def make_fleet(nodes: list[tuple[str, str]], links: list[tuple[str, str, float]]) -> Fleet:
    return Fleet(
        name="t",
        nodes=[Node(name=n, tier=t, hardware=HW[t]) for n, t in nodes],
        links=[Link(src=a, dst=b, mbps=m, rtt_ms=10) for a, b, m in links],
    )


TWO_EDGES = make_fleet(
    [("d", "device"), ("e1", "edge"), ("e2", "edge"), ("c1", "cloud"), ("c2", "cloud")],
    [("d", "e1", 10), ("e2", "d", 50), ("e1", "c1", 100), ("e2", "c1", 80), ("c2", "e2", 200)],
)


# --- Link ---------------------------------------------------------------------------------------


def test_transfer_ms_formula() -> None:
    link = Link(src="a", dst="b", mbps=8, rtt_ms=20)
    # 1 MB at 8 Mbit/s = 1 s, plus half the RTT.
    assert link.transfer_ms(1_000_000) == pytest.approx(10 + 1000)
    assert link.transfer_ms(0) == pytest.approx(10)
    assert link.transfer_ms(1_000_000, mbps=80) == pytest.approx(10 + 100)


def test_transfer_ms_rejects_bad_arguments() -> None:
    link = Link(src="a", dst="b", mbps=8, rtt_ms=20)
    with pytest.raises(FleetError, match="mbps must be > 0"):
        link.transfer_ms(10, mbps=0)
    with pytest.raises(FleetError, match="nbytes"):
        link.transfer_ms(-1)


def test_link_accepts_yaml_keys_and_python_names() -> None:
    by_alias = Link.model_validate({"from": "a", "to": "b", "mbps": 1, "rtt_ms": 0})
    by_name = Link(src="a", dst="b", mbps=1, rtt_ms=0)
    assert by_alias == by_name
    assert by_alias.joins("b", "a") and by_alias.other_end("b") == "a"


def test_link_mbps_at_without_trace_is_constant() -> None:
    link = Link(src="a", dst="b", mbps=3, rtt_ms=0)
    assert link.mbps_at(0) == link.mbps_at(1e5) == 3


def test_link_trace_given_as_path(tmp_path: Path) -> None:
    csv = tmp_path / "bw.csv"
    csv.write_text("0,2\n1,4\n")
    link = Link(src="a", dst="b", rtt_ms=0, trace=str(csv))  # type: ignore[arg-type]
    assert link.mbps == pytest.approx(3) and link.mbps_at(1.2) == 4


# --- Fleet lookups ------------------------------------------------------------------------------


def test_lookups() -> None:
    fleet = TWO_EDGES
    assert fleet.node("e2").tier == "edge"
    assert [n.name for n in fleet.nodes_in("cloud")] == ["c1", "c2"]
    assert fleet.link("d", "e2") is fleet.link("e2", "d") is fleet.links[1]
    assert fleet.link("d", "c1") is None
    with pytest.raises(FleetError, match=r"no node named 'x' \(known: d, e1, e2, c1, c2\)"):
        fleet.node("x")
    with pytest.raises(FleetError, match="expected one of device, edge, cloud"):
        fleet.nodes_in("fog")


def test_with_link_mbps_copies() -> None:
    original = load_fleet("pi4-4g-edge-cloud")
    swept = original.with_link_mbps("edge", "pi", 2.5)
    new_link, old_link = swept.link("pi", "edge"), original.link("pi", "edge")
    assert new_link is not None and old_link is not None
    assert new_link.mbps == 2.5 and new_link.mbps_at(7) == 2.5 and new_link.trace is None
    assert old_link.mbps == 5.85 and old_link.trace is not None
    assert swept.link("edge", "cloud") == original.link("edge", "cloud")
    assert swept is not original and swept.nodes is not original.nodes
    assert swept.source == original.source


def test_with_link_mbps_errors() -> None:
    fleet = load_fleet("pi4-wifi-edge-cloud")
    with pytest.raises(FleetError, match="no link between 'pi' and 'cloud'"):
        fleet.with_link_mbps("pi", "cloud", 5)
    with pytest.raises(FleetError, match="must be > 0"):
        fleet.with_link_mbps("pi", "edge", 0)


def test_fleet_is_frozen() -> None:
    fleet = load_fleet("pi4-wifi-edge-cloud")
    with pytest.raises(ValueError, match="frozen"):
        fleet.name = "other"  # type: ignore[misc]


# --- tier_path ----------------------------------------------------------------------------------


def test_default_picks_highest_bandwidth_edge_then_cloud() -> None:
    path = TWO_EDGES.tier_path()
    assert [n.name for n in path.nodes] == ["d", "e2", "c2"]
    assert [link.mbps for link in path.links] == [50, 200]
    assert path.hop_names == ["device-edge", "edge-cloud"]
    assert path.device.name == "d" and path.tiers == ["device", "edge", "cloud"]


def test_explicit_names() -> None:
    path = TWO_EDGES.tier_path(device="d", edge="e1")
    assert [n.name for n in path.nodes] == ["d", "e1", "c1"]
    path = TWO_EDGES.tier_path(edge="e2", cloud="c1")
    assert [n.name for n in path.nodes] == ["d", "e2", "c1"]
    assert path.links[1].mbps == 80


def test_wrong_tier_error() -> None:
    with pytest.raises(FleetError, match=r"edge node 'c1' is on tier 'cloud', expected 'edge'"):
        TWO_EDGES.tier_path(edge="c1")
    with pytest.raises(FleetError, match=r"device node 'e1' is on tier 'edge'"):
        TWO_EDGES.tier_path(device="e1")


def test_missing_node_error() -> None:
    with pytest.raises(FleetError, match="no node named 'nope'"):
        TWO_EDGES.tier_path(cloud="nope")


def test_not_directly_linked_error() -> None:
    with pytest.raises(
        FleetError, match=r"cloud node 'c2' is not directly linked to edge node 'e1'"
    ):
        TWO_EDGES.tier_path(edge="e1", cloud="c2")


def test_no_edge_gives_device_cloud_hop() -> None:
    fleet = make_fleet([("d", "device"), ("c", "cloud")], [("d", "c", 5)])
    path = fleet.tier_path()
    assert [n.name for n in path.nodes] == ["d", "c"]
    assert path.hop_names == ["device-cloud"]
    assert load_fleet("pi4-wifi-cloud").tier_path().hop_names == ["device-cloud"]


def test_edge_without_cloud_and_device_only() -> None:
    fleet = make_fleet(
        [("d", "device"), ("e", "edge"), ("d2", "device")], [("d", "e", 5), ("d2", "e", 5)]
    )
    assert fleet.tier_path().hop_names == ["device-edge"]
    lonely = make_fleet([("d", "device")], [])
    path = lonely.tier_path()
    assert [n.name for n in path.nodes] == ["d"] and path.links == [] and path.hop_names == []


def test_tie_goes_to_first_link_in_file() -> None:
    fleet = make_fleet(
        [("d", "device"), ("a", "edge"), ("b", "edge")], [("d", "b", 10), ("d", "a", 10)]
    )
    assert fleet.tier_path().nodes[1].name == "b"


def test_tier_path_rejects_inconsistent_shape() -> None:
    fleet = load_fleet("pi4-wifi-edge-cloud")
    with pytest.raises(ValueError, match="need 2 links"):
        TierPath(nodes=fleet.nodes, links=fleet.links[:1])
