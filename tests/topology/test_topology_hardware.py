"""The hardware catalog is the numeric ground truth for every latency/energy estimate."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edgeweave.errors import FleetError
from edgeweave.topology import CATALOG, HardwareProfile, get_hardware

REQUIRED = {"rpi3", "rpi4", "jetson-nano", "phone", "edge-server", "cloud-gpu"}


def test_catalog_has_required_profiles() -> None:
    assert set(CATALOG) >= REQUIRED


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_profile_numbers_are_sane(name: str) -> None:
    profile = CATALOG[name]
    assert profile.name == name
    assert profile.gflops > 0
    assert profile.memory_mb > 0
    assert profile.source.strip()
    assert profile.description.strip()
    for watts in (
        profile.power_compute_w,
        profile.power_idle_w,
        profile.power_tx_w,
        profile.power_rx_w,
    ):
        assert watts >= 0
    assert profile.power_compute_w >= profile.power_idle_w


def test_throughput_ordering_matches_hardware_classes() -> None:
    g = {name: CATALOG[name].gflops for name in REQUIRED}
    assert g["rpi3"] < g["rpi4"] < g["phone"] < g["jetson-nano"] < g["edge-server"]
    assert g["edge-server"] < g["cloud-gpu"]


def test_gpus_have_dispatch_overhead() -> None:
    assert CATALOG["cloud-gpu"].op_overhead_ms > 0
    assert CATALOG["jetson-nano"].op_overhead_ms > 0
    assert CATALOG["rpi4"].op_overhead_ms == 0


def test_get_hardware_known_and_unknown() -> None:
    assert get_hardware("rpi4") is CATALOG["rpi4"]
    with pytest.raises(FleetError, match=r"unknown hardware 'rpi5'.*known: .*rpi4"):
        get_hardware("rpi5")


def test_profile_is_frozen_and_validated() -> None:
    with pytest.raises(ValidationError):
        CATALOG["rpi4"].gflops = 1.0  # type: ignore[misc]
    with pytest.raises(ValidationError):
        HardwareProfile(
            name="x",
            description="",
            gflops=0,
            memory_mb=1,
            power_compute_w=1,
            power_idle_w=1,
            power_tx_w=1,
            power_rx_w=1,
            source="s",
        )
