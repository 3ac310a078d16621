"""A frame's predicted latency with several frames in the system (runtime.cluster.loaded):
the price `edgeweave distribute` holds a run from several sources, or pipelined, against."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from cluster_helpers import cluster_fleet, digits, digits_plan

from edgeweave.profile import analytic_profile
from edgeweave.runtime.cluster.loaded import loaded_price


def _run(plan, sources, in_flight=1, scheduler="stealing"):
    return SimpleNamespace(plan=plan, sources=sources, in_flight=in_flight,
                           scheduler=scheduler, calibration=None)


def _price(plan, *args, **kwargs):
    fleet = cluster_fleet()
    return loaded_price(digits(), analytic_profile(digits(), fleet), fleet,
                        _run(plan, *args, **kwargs))


def test_one_frame_in_the_system_keeps_the_plans_price():
    plan = digits_plan(grid=(2, 2))
    price = _price(plan, ["a"])
    assert price.frames == 1 and price.period_ms is None and price.fps is None
    assert price.latency_ms == plan.partition.predicted["latency_ms"]
    assert price.basis == "one frame alone"


@pytest.mark.parametrize(("method", "scheduler"), [("layer-wise", "layer-wise"),
                                                   ("fused-tiles", "static")])
def test_frames_in_the_system_wait_k_periods_of_the_busiest_resource(method, scheduler):
    """Two frames in flight from each of two sources: four frames; a frame takes the larger
    of its price alone and four periods of the plan's busiest resource."""
    plan = digits_plan(method) if method == "layer-wise" else digits_plan(grid=(2, 2))
    one = plan.partition.predicted["latency_ms"]
    period = 1000.0 / plan.predicted["throughput_fps"]
    price = _price(plan, ["a", "b"], in_flight=2, scheduler=scheduler)
    assert price.frames == 4 and price.period_ms == pytest.approx(period)
    assert price.latency_ms == pytest.approx(max(one, 4 * period))
    assert price.fps == pytest.approx(1000.0 / max(period, one / 4))
    assert price.latency_ms >= one and "busiest resource" in price.basis
    assert price.to_json()["predicted_ms"] == price.latency_ms

