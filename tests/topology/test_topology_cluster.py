"""Clusters in the fleet YAML: which devices share inferences over which medium; every mistake
is one FleetError naming the file and the field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgeweave.errors import FleetError
from edgeweave.topology import load_fleet

HEAD = """\
name: c
nodes:
  - {name: a, tier: device, hardware: rpi4}
  - {name: b, tier: device, hardware: rpi3}
  - {name: c3, tier: device, hardware: rpi3}
  - {name: edge, tier: edge, hardware: edge-server}
links:
  - {from: a, to: edge, mbps: 18.88, rtt_ms: 5}
"""


def _load(tmp_path: Path, clusters: str) -> object:
    path = tmp_path / "fleet.yaml"
    path.write_text(HEAD + clusters)
    return load_fleet(path)


def _error(tmp_path: Path, clusters: str) -> str:
    with pytest.raises(FleetError) as info:
        _load(tmp_path, clusters)
    assert str(tmp_path / "fleet.yaml") in str(info.value)
    return str(info.value)


GOOD = """\
clusters:
  - name: pis
    devices: [a, b, c3]
    gateway: b
    medium: {mbps: 20, rtt_ms: 4}
    memory_mb: {c3: 64}
"""


def test_cluster_loads_and_connects_devices_without_links(tmp_path: Path) -> None:
    fleet = _load(tmp_path, GOOD)
    cluster = fleet.cluster()  # type: ignore[attr-defined]
    assert cluster.devices == ["a", "b", "c3"] and cluster.gateway_name == "b"
    assert cluster.medium.kind == "wifi" and cluster.medium.mbps == 20
    assert cluster.limit_mb(fleet.node("c3")) == 64  # type: ignore[attr-defined]
    assert cluster.limit_mb(fleet.node("a")) == 4096  # type: ignore[attr-defined]
    assert fleet.cluster("pis") is cluster  # type: ignore[attr-defined]


def test_builtin_pi_cluster() -> None:
    fleet = load_fleet("pi-cluster")
    cluster = fleet.cluster()
    assert len(cluster.devices) == 6 and cluster.gateway_name == "pi4-0"
    assert cluster.medium.mbps == 18.88
    assert fleet.tier_path(cluster.gateway_name).hop_names == ["device-edge", "edge-cloud"]


@pytest.mark.parametrize(("clusters", "expected"), [
    (GOOD.replace("[a, b, c3]", "[a, zz]").replace("gateway: b", "gateway: a").replace(
        "{c3: 64}", "{}"), r"clusters\[0\]\.devices\[1\]: unknown node 'zz' \(known: a, b, c3, "
                           r"edge\)"),
    (GOOD.replace("[a, b, c3]", "[a, edge]").replace("gateway: b", "gateway: a").replace(
        "{c3: 64}", "{}"), r"clusters\[0\]\.devices\[1\]: 'edge' is on tier 'edge'"),
    (GOOD.replace("[a, b, c3]", "[a, b, c3, b]"), r"clusters\[0\]\.devices\[3\]: 'b' is listed "
                                                   "twice"),
    (GOOD.replace("gateway: b", "gateway: edge"), r"clusters\[0\]\.gateway: 'edge' is not one "
                                                   "of the cluster's devices"),
    (GOOD.replace("{c3: 64}", "{c3: 2048}"), r"clusters\[0\]\.memory_mb\.c3: 2048 MiB is not "
                                             r"within the device's memory \(its hardware "
                                             r"'rpi3' has 1024 MiB\)"),
    (GOOD.replace("{c3: 64}", "{edge: 64}"), r"clusters\[0\]\.memory_mb\.edge: 'edge' is not "
                                             "one of the cluster's devices"),
    (GOOD.replace("mbps: 20", "mbps: 0"), r"clusters\[0\]\.medium\.mbps"),
    (GOOD.replace("    medium: {mbps: 20, rtt_ms: 4}\n", ""), r"clusters\[0\]\.medium: "
                                                              "missing"),
    (GOOD + "  - {name: more, devices: [a], medium: {mbps: 1, rtt_ms: 1}}\n",
     r"clusters\[1\]\.devices\[0\]: 'a' is already in clusters\[0\]"),
    (GOOD + "  - {name: pis, devices: [a], medium: {mbps: 1, rtt_ms: 1}}\n",
     r"clusters\[1\]\.name: duplicate cluster name 'pis'"),
])
def test_cluster_mistakes_name_the_field(tmp_path: Path, clusters: str, expected: str) -> None:
    message = _error(tmp_path, clusters)
    assert re.search(expected, message), message


def test_unknown_cluster_and_no_clusters(tmp_path: Path) -> None:
    fleet = _load(tmp_path, GOOD)
    with pytest.raises(FleetError, match=r"no cluster named 'x' \(known: pis\)"):
        fleet.cluster("x")  # type: ignore[attr-defined]
    with pytest.raises(FleetError, match="has no clusters; add a 'clusters:' section"):
        load_fleet("multi-device").cluster()
