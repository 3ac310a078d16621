"""A frame's predicted latency with several frames in the system (runtime.cluster.loaded):
the price `edgeweave distribute` holds a run from several sources, or pipelined, against."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from cluster_helpers import cluster_fleet, digits, digits_plan

from edgeweave.profile import analytic_profile
from edgeweave.runtime.cluster.lab import device_dilations
from edgeweave.runtime.cluster.loaded import forecast_run, loaded_price


def _run(plan, sources, in_flight=1, scheduler="stealing"):
    fleet = cluster_fleet()
    dilations = device_dilations(analytic_profile(digits(), fleet), fleet,
                                 list(fleet.cluster().devices))
    return SimpleNamespace(plan=plan, sources=sources, in_flight=in_flight,
                           scheduler=scheduler, calibration=None, dilations=dilations,
                           results=[None] * 4, prefetch=0, gather_at_source=False)


def _price(plan, *args, **kwargs):
    return loaded_price(digits(), _run(plan, *args, **kwargs))


def test_one_frame_in_the_system_keeps_the_plans_price():
    plan = digits_plan(grid=(2, 2))
    price = _price(plan, ["a"])
    assert price.frames == 1 and price.period_ms is None and price.fps is None
    assert price.latency_ms == plan.partition.predicted["latency_ms"]
    assert price.basis == "one frame alone"


def test_layer_wise_frames_in_the_system_wait_k_periods_of_the_busiest_resource():
    """Two frames in flight from each of two sources: four frames; a layer-wise frame takes
    the larger of its price alone and four periods of the plan's busiest resource."""
    plan = digits_plan("layer-wise")
    one = plan.partition.predicted["latency_ms"]
    period = 1000.0 / plan.predicted["throughput_fps"]
    price = _price(plan, ["a", "b"], in_flight=2, scheduler="layer-wise")
    assert price.frames == 4 and price.period_ms == pytest.approx(period)
    assert price.forecast is None
    assert price.latency_ms == pytest.approx(max(one, 4 * period))
    assert price.fps == pytest.approx(1000.0 / max(period, one / 4))
    assert price.latency_ms >= one and "busiest resource" in price.basis
    assert price.to_json()["predicted_ms"] == price.latency_ms


@pytest.mark.parametrize("scheduler", ["static", "stealing", "sharing"])
def test_fused_tile_frames_in_the_system_are_forecast_by_their_scheduler(scheduler):
    """Fused tiles from two sources: the run replayed by its own scheduler, as many frames as
    it measured, each waiting for the other source's (never less than a frame alone)."""
    plan = digits_plan(grid=(2, 2))
    one = plan.partition.predicted["latency_ms"]
    price = _price(plan, ["a", "c"], scheduler=scheduler)
    assert price.frames == 2 and price.period_ms is None and price.forecast is not None
    assert price.forecast.frames == 4
    assert price.latency_ms == forecast_run(digits(), _run(plan, ["a", "c"],
                                                           scheduler=scheduler)).latency_ms
    assert price.latency_ms >= one * (1 - 1e-9)
    assert f"run's {scheduler} scheduler" in price.basis
    doc = price.to_json()
    assert doc["predicted_ms"] == price.latency_ms and doc["predicted_fps"] == price.fps
    assert sum(doc["predicted_tasks_per_frame"].values()) == pytest.approx(
        len(plan.partition.all_tiles()))
