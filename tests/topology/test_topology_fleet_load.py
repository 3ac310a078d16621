"""Loading fleets: built-ins must load, and every malformed file must fail with one FleetError
that names the file and the field, so users can fix their YAML without reading a traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from edgeweave.errors import FleetError
from edgeweave.topology import (
    CATALOG,
    DEFAULT_FLEET,
    TIERS,
    Fleet,
    list_builtin_fleets,
    load_fleet,
)

REPO = Path(__file__).parents[2]

GOOD = """\
name: good
nodes:
  - {name: pi, tier: device, hardware: rpi4}
  - {name: edge, tier: edge, hardware: edge-server}
  - {name: cloud, tier: cloud, hardware: cloud-gpu}
links:
  - {from: pi, to: edge, mbps: 18.88, rtt_ms: 5}
  - {from: edge, to: cloud, mbps: 100, rtt_ms: 40}
"""

WriteFleet = Callable[[str], Path]


@pytest.fixture
def write_fleet(tmp_path: Path) -> WriteFleet:
    def write(text: str, name: str = "fleet.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


def load_error(path: Path) -> str:
    with pytest.raises(FleetError) as info:
        load_fleet(path)
    message = str(info.value)
    assert str(path) in message, message
    return message


# --- built-ins ---------------------------------------------------------------------------------


def test_builtin_list() -> None:
    names = list_builtin_fleets()
    assert DEFAULT_FLEET in names
    for required in (
        "pi4-wifi-edge-cloud",
        "pi4-4g-edge-cloud",
        "pi3-3g-edge-cloud",
        "phone-lte-edge-cloud",
        "multi-device",
    ):
        assert required in names


@pytest.mark.parametrize("name", list_builtin_fleets())
def test_every_builtin_loads_with_valid_tier_path(name: str) -> None:
    fleet = load_fleet(name)
    assert fleet.name == name
    assert fleet.source is not None and fleet.source.endswith(f"{name}.yaml")
    path = fleet.tier_path()
    assert path.nodes[0].tier == "device"
    assert len(path.links) == len(path.nodes) - 1
    tiers = [TIERS.index(n.tier) for n in path.nodes]
    assert tiers == sorted(set(tiers))
    for k, link in enumerate(path.links):
        assert link.joins(path.nodes[k].name, path.nodes[k + 1].name)
    assert path.hop_names[-1].endswith("cloud")


@pytest.mark.parametrize("name", list_builtin_fleets())
def test_builtin_yaml_cites_its_numbers(name: str) -> None:
    text = (REPO / "examples" / "fleets" / f"{name}.yaml").read_text()
    assert "Neurosurgeon" in text


def test_examples_symlink_points_at_package_data() -> None:
    link = REPO / "examples" / "fleets"
    assert link.is_symlink()
    assert link.resolve() == (REPO / "src/edgeweave/topology/fleets").resolve()


def test_neurosurgeon_bandwidths() -> None:
    assert load_fleet("pi4-wifi-edge-cloud").link("pi", "edge").mbps == 18.88
    assert load_fleet("pi4-4g-edge-cloud").link("pi", "edge").mbps == 5.85
    assert load_fleet("pi3-3g-edge-cloud").link("pi", "edge").mbps == 1.1
    assert load_fleet("phone-lte-edge-cloud").link("phone", "edge").mbps == 5.85


def test_4g_fleet_replays_trace() -> None:
    link = load_fleet("pi4-4g-edge-cloud").link("pi", "edge")
    assert link is not None and link.trace is not None
    rates = {link.mbps_at(t) for t in range(60)}
    assert len(rates) > 10
    assert link.mbps_at(0) == link.mbps_at(link.trace.period_s)


def test_multi_device_shares_one_edge() -> None:
    fleet = load_fleet("multi-device")
    devices = fleet.nodes_in("device")
    assert len(devices) == 3
    edges = {fleet.tier_path(device=d.name).nodes[1].name for d in devices}
    assert edges == {"edge"}


def test_load_by_path_and_str(write_fleet: WriteFleet) -> None:
    path = write_fleet(GOOD)
    assert load_fleet(path).name == "good"
    assert load_fleet(str(path)).source == str(path)
    assert load_fleet(path).node("pi").hardware == CATALOG["rpi4"]


def test_inline_hardware_mapping(write_fleet: WriteFleet) -> None:
    text = GOOD.replace(
        "hardware: rpi4}",
        "hardware: {name: my-board, description: custom, gflops: 12, memory_mb: 2048, "
        "power_compute_w: 5, power_idle_w: 2, power_tx_w: 3, power_rx_w: 3, source: me}}",
    )
    fleet = load_fleet(write_fleet(text))
    assert fleet.node("pi").hardware.name == "my-board"
    assert fleet.node("pi").hardware.gflops == 12


def test_trace_path_is_relative_to_yaml_file(write_fleet: WriteFleet, tmp_path: Path) -> None:
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "bw.csv").write_text("0,4\n1,8\n")
    text = GOOD.replace("rtt_ms: 5}", "rtt_ms: 5, trace: traces/bw.csv}")
    fleet = load_fleet(write_fleet(text))
    link = fleet.link("pi", "edge")
    assert link is not None
    assert link.mbps_at(0.5) == 4 and link.mbps_at(1.5) == 8
    assert link.mbps == 18.88  # explicit nominal bandwidth is kept


def test_trace_gives_default_mbps(write_fleet: WriteFleet, tmp_path: Path) -> None:
    (tmp_path / "bw.csv").write_text("0,4\n1,8\n")
    text = GOOD.replace("mbps: 18.88, rtt_ms: 5}", "rtt_ms: 5, trace: bw.csv}")
    link = load_fleet(write_fleet(text)).link("pi", "edge")
    assert link is not None and link.mbps == pytest.approx(6.0)


# --- errors ------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FleetError, match=r"nope\.yaml: fleet file not found"):
        load_fleet(tmp_path / "nope.yaml")
    with pytest.raises(FleetError, match=r"nope\.yaml: fleet file not found"):
        load_fleet("somewhere/nope.yaml")


def test_unknown_builtin_name_lists_builtins() -> None:
    with pytest.raises(FleetError, match=r"unknown fleet 'nope'.*pi4-wifi-edge-cloud"):
        load_fleet("nope")


def test_bad_yaml_syntax_gives_line(write_fleet: WriteFleet) -> None:
    path = write_fleet("name: x\nnodes:\n  - {name: pi, tier: device\n  - oops: [\n")
    message = load_error(path)
    assert "invalid YAML" in message
    assert "line " in message


def test_bad_yaml_line_number_is_right(write_fleet: WriteFleet) -> None:
    path = write_fleet("name: x\nnodes: []\nlinks: a: b\n")
    assert "line 3" in load_error(path)


@pytest.mark.parametrize(("text", "got"), [("", "empty file"), ("- a\n- b\n", "a list")])
def test_top_level_not_mapping(write_fleet: WriteFleet, text: str, got: str) -> None:
    message = load_error(write_fleet(text))
    assert "expected a mapping" in message and got in message


def test_unknown_tier(write_fleet: WriteFleet) -> None:
    message = load_error(write_fleet(GOOD.replace("tier: edge", "tier: fog")))
    assert "nodes[1].tier" in message
    assert "unknown tier 'fog'" in message
    assert "expected one of device, edge, cloud" in message


def test_unknown_hardware_lists_catalog(write_fleet: WriteFleet) -> None:
    message = load_error(write_fleet(GOOD.replace("hardware: rpi4", "hardware: rpi5")))
    assert "nodes[0].hardware" in message
    assert "unknown hardware 'rpi5'" in message
    assert "rpi4" in message and "cloud-gpu" in message


def test_bad_inline_hardware_field(write_fleet: WriteFleet) -> None:
    text = GOOD.replace(
        "hardware: edge-server}",
        "hardware: {name: b, description: d, gflops: -1, memory_mb: 1, power_compute_w: 1, "
        "power_idle_w: 1, power_tx_w: 1, power_rx_w: 1, source: s}}",
    )
    message = load_error(write_fleet(text))
    assert "nodes[1].hardware.gflops" in message
    assert "greater than 0" in message


@pytest.mark.parametrize("bad", ["0", "-5"])
def test_non_positive_bandwidth(write_fleet: WriteFleet, bad: str) -> None:
    message = load_error(write_fleet(GOOD.replace("mbps: 100", f"mbps: {bad}")))
    assert "links[1].mbps" in message
    assert "greater than 0" in message


def test_non_numeric_bandwidth(write_fleet: WriteFleet) -> None:
    message = load_error(write_fleet(GOOD.replace("mbps: 100", "mbps: fast")))
    assert "links[1].mbps" in message and "'fast'" in message


def test_negative_rtt(write_fleet: WriteFleet) -> None:
    message = load_error(write_fleet(GOOD.replace("rtt_ms: 40", "rtt_ms: -1")))
    assert "links[1].rtt_ms" in message


def test_missing_field(write_fleet: WriteFleet) -> None:
    message = load_error(write_fleet(GOOD.replace(", rtt_ms: 40", "")))
    assert "links[1].rtt_ms: missing" in message


def test_misspelt_field(write_fleet: WriteFleet) -> None:
    message = load_error(write_fleet(GOOD.replace("rtt_ms: 40", "rtt: 40")))
    assert "links[1].rtt: unexpected field" in message


def test_link_to_unknown_node(write_fleet: WriteFleet) -> None:
    message = load_error(write_fleet(GOOD.replace("to: edge,", "to: edgee,")))
    assert "links[0].to: unknown node 'edgee' (known: pi, edge, cloud)" in message


def test_link_from_unknown_node(write_fleet: WriteFleet) -> None:
    message = load_error(write_fleet(GOOD.replace("from: edge,", "from: egde,")))
    assert "links[1].from: unknown node 'egde'" in message


def test_duplicate_node_name(write_fleet: WriteFleet) -> None:
    message = load_error(write_fleet(GOOD.replace("name: cloud,", "name: pi,")))
    assert "nodes[2].name: duplicate node name 'pi'" in message


def test_self_link(write_fleet: WriteFleet) -> None:
    message = load_error(
        write_fleet(GOOD.replace("{from: edge, to: cloud", "{from: edge, to: edge"))
    )
    assert "links[1].to" in message and "itself" in message


def test_duplicate_link_either_direction(write_fleet: WriteFleet) -> None:
    text = GOOD + "  - {from: cloud, to: edge, mbps: 50, rtt_ms: 40}\n"
    message = load_error(write_fleet(text))
    assert "links[2]: duplicate link" in message and "links[1]" in message


def test_no_device_node(write_fleet: WriteFleet) -> None:
    message = load_error(write_fleet(GOOD.replace("tier: device", "tier: edge")))
    assert "nodes:" in message and "device" in message


def test_disconnected_fleet_lists_stranded_nodes(write_fleet: WriteFleet) -> None:
    text = GOOD.replace(
        "  - {name: cloud, tier: cloud, hardware: cloud-gpu}\n",
        "  - {name: cloud, tier: cloud, hardware: cloud-gpu}\n"
        "  - {name: gpu2, tier: cloud, hardware: cloud-gpu}\n"
        "  - {name: pi9, tier: device, hardware: rpi3}\n",
    )
    text += "  - {from: gpu2, to: pi9, mbps: 1, rtt_ms: 1}\n"
    message = load_error(write_fleet(text))
    assert "not connected" in message
    assert "gpu2, pi9" in message


def test_bad_trace_names_link_field_and_csv_line(write_fleet: WriteFleet, tmp_path: Path) -> None:
    (tmp_path / "bw.csv").write_text("0,4\n1,-8\n")
    message = load_error(write_fleet(GOOD.replace("rtt_ms: 5}", "rtt_ms: 5, trace: bw.csv}")))
    assert "links[0].trace" in message
    assert "bw.csv:2: mbps must be > 0" in message


def test_missing_trace_file(write_fleet: WriteFleet) -> None:
    message = load_error(write_fleet(GOOD.replace("rtt_ms: 5}", "rtt_ms: 5, trace: gone.csv}")))
    assert "links[0].trace" in message and "gone.csv" in message and "not found" in message


def test_missing_trace_file_without_mbps(write_fleet: WriteFleet) -> None:
    text = GOOD.replace("mbps: 18.88, rtt_ms: 5}", "rtt_ms: 5, trace: gone.csv}")
    message = load_error(write_fleet(text))
    assert "links[0].trace" in message and "not found" in message


def test_several_problems_reported_together(write_fleet: WriteFleet) -> None:
    text = GOOD.replace("tier: edge", "tier: fog").replace("mbps: 100", "mbps: -1")
    message = load_error(write_fleet(text))
    assert "2 problems" in message
    assert "nodes[1].tier" in message and "links[1].mbps" in message


def test_from_dict_without_file_still_gives_fleet_error() -> None:
    with pytest.raises(FleetError, match=r"<fleet>: nodes\[0\]\.tier"):
        Fleet.from_dict({"name": "x", "nodes": [{"name": "a", "tier": "x", "hardware": "rpi4"}]})
