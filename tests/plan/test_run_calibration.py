"""A cluster plan priced again from a calibration pass (plan.run_calibration): the factors fitted
from what the devices took, and the plan's prices scaled by them (priced, not timed)."""

from __future__ import annotations

import pytest
from test_multidevice import cluster_fleet

from edgeweave.errors import PlanError
from edgeweave.graph import capture_spec
from edgeweave.plan.multidevice import plan_cluster
from edgeweave.plan.run_calibration import RunCalibration, fit_calibration
from edgeweave.profile import analytic_profile


@pytest.fixture(scope="module")
def digits():
    graph = capture_spec("digits-cnn")
    return graph, analytic_profile(graph, cluster_fleet())


def test_each_device_gets_its_measured_over_priced_compute():
    """Per device, the median frame's measured over priced compute: one stalled frame does
    not decide it; a device that ran nothing gets the median of every device's frames."""
    cal = fit_calibration([(0, "a", 10.0, 15.0), (0, "a", 30.0, 45.0), (1, "a", 40.0, 60.0),
                           (2, "a", 40.0, 400.0), (0, "c", 20.0, 20.0),
                           (0, "c", 5.0, float("nan"))], ["a", "b", "c"],
                          rest=[(100.0, 120.0), (100.0, 200.0), (100.0, 130.0)],
                          ms_per_mb=4.0, frames=3)
    assert cal.compute_scale["a"] == pytest.approx(1.5)  # frames 1.5, 1.5 and 10
    assert cal.compute_scale["c"] == pytest.approx(1.0)  # the NaN task is not counted
    assert cal.compute_scale["b"] == pytest.approx(1.5)  # median of 1.5, 1.5, 10, 1
    assert cal.rest_scale == pytest.approx(1.3)  # the median frame's
    assert cal.ms_per_mb == 4.0 and cal.tasks == 5
    assert cal.to_json()["compute_scale"]["a"] == pytest.approx(1.5)
    with pytest.raises(PlanError, match="positive numbers"):
        RunCalibration({"a": 0.0})
    with pytest.raises(PlanError, match="positive numbers"):
        RunCalibration({"a": 1.0}, rest_scale=float("nan"))


def test_a_calibrated_plan_prices_each_device_and_the_rest_by_its_factor(digits):
    """On the gateway alone (no medium), a 1x1 tile and the rest both twice as long double
    the predicted latency; the plan records the calibration it was priced with."""
    graph, profile = digits
    fleet = cluster_fleet()
    pins = dict(methods=("fused-tiles",), grid=(1, 1), reuse=False, devices=["a"])
    base = plan_cluster(graph, profile, fleet, **pins).partition
    cal = RunCalibration({"a": 2.0}, rest_scale=2.0, ms_per_mb=0.0)
    doubled = plan_cluster(graph, profile, fleet, calibration=cal, **pins).partition
    assert doubled.predicted["latency_ms"] == pytest.approx(2 * base.predicted["latency_ms"])
    assert doubled.predicted["rest_ms"] == pytest.approx(2 * base.predicted["rest_ms"])
    assert doubled.tiles[0].compute_ms == pytest.approx(2 * base.tiles[0].compute_ms)
    assert doubled.search["run_calibration"]["compute_scale"] == {"a": 2.0}
    assert base.search["run_calibration"] is None
    # its cost per MiB replaces ms_per_mb: a task on another device carries bytes
    spread = dict(methods=("fused-tiles",), grid=(2, 2), reuse=False)
    free = plan_cluster(graph, profile, fleet, ms_per_mb=50.0, **spread)
    assert free.partition.search["task_overhead"]["runtime_ms_per_mb"] == 50.0
    cal0 = RunCalibration({}, ms_per_mb=0.0)
    assert plan_cluster(graph, profile, fleet, ms_per_mb=50.0, calibration=cal0,
                        **spread).partition.search["task_overhead"]["runtime_ms_per_mb"] == 0.0


def test_a_device_calibrated_slow_gets_no_tile(digits):
    """The optimiser chooses again at the calibrated prices: a device that computed 100x
    slower than priced is left out of the assignment it had a share of."""
    graph, profile = digits
    fleet = cluster_fleet()
    pins = dict(methods=("fused-tiles",), grid=(2, 2), reuse=False)
    base = plan_cluster(graph, profile, fleet, **pins).partition
    assert "c" in {t.device for t in base.tiles}
    slow = plan_cluster(graph, profile, fleet, calibration=RunCalibration({"c": 100.0}),
                        **pins).partition
    assert "c" not in {t.device for t in slow.tiles}
