"""The planner facade: constraints, unavailable tiers, and its error messages."""

import pytest

from edgeweave.errors import PlanError
from edgeweave.plan import plan
from edgeweave.plan.bruteforce import monotone_placements
from edgeweave.plan.costs import CostModel
from edgeweave.plan.modes import base_forbid
from edgeweave.profile import random_profile
from helpers import make_profile

MIB = 2**20


def chain4(tiers=("device", "edge", "cloud")):
    lat = [(0, 0, 0), (10, 2, 1), (20, 4, 1), (5, 1, 1)]
    return make_profile(
        latencies=[t[: len(tiers)] for t in lat],
        out_bytes=[100_000, 50_000, 2_000, 100],
        edges=[(0, 1), (1, 2), (2, 3)],
        links=[(10.0, 10.0), (50.0, 30.0)][: len(tiers) - 1],
        param_bytes=[0, 3 * MIB, 8 * MIB, MIB],
        tiers=tiers,
    )


@pytest.mark.parametrize("seed", range(6))
def test_device_memory_limit_is_respected_and_optimal_on_dags(seed):
    prof = random_profile(seed, 9)
    cm = CostModel(prof)
    limit_mb = 4.0
    result = plan(prof, "energy", device_mem_mb=limit_mb)
    assert result.predicted["device_param_bytes"] <= limit_mb * MIB
    feasible = [
        cm.evaluate(lab) for lab in monotone_placements(cm, base_forbid(cm))
        if cm.evaluate(lab).device_param_bytes <= limit_mb * MIB
    ]
    best = min(bd.energy_j for bd in feasible)
    assert result.predicted["energy_j"] >= best - 1e-12
    if result.exact:
        assert result.predicted["energy_j"] == pytest.approx(best)


def test_memory_limit_pushes_heavy_layers_off_the_device():
    prof = chain4()
    free = plan(prof, "energy")
    assert free.placement["n2"] == "device" or free.predicted["device_param_bytes"] > 0
    tight = plan(prof, "latency", device_mem_mb=3.5)
    assert tight.placement["n2"] != "device"
    assert tight.predicted["device_param_bytes"] <= 3.5 * MIB


def test_unreachable_slo_names_the_fastest_possible():
    with pytest.raises(PlanError, match=r"latency SLO 1 ms \(fastest placement: \d"):
        plan(chain4(), "latency", slo_ms=1.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"objective": "speed"}, "--objective"),
        ({"slo_ms": -5}, "--slo-ms"),
        ({"device_mem_mb": 0}, "--device-mem-mb"),
    ],
)
def test_bad_arguments_name_the_option(kwargs, match):
    with pytest.raises(PlanError, match=match):
        plan(chain4(), **kwargs)


def test_fleet_without_cloud_marks_cloud_modes_unavailable():
    result = plan(chain4(("device", "edge")), "latency")
    avail = {a.mode: a.available for a in result.alternatives}
    assert avail["device-edge"] and avail["edge-only"]
    assert not avail["cloud-only"] and not avail["edge-cloud"]
    assert set(result.placement.values()) <= {"device", "edge"}


def test_single_tier_fleet_plans_device_only():
    result = plan(chain4(("device",)), "latency")
    assert set(result.placement.values()) == {"device"}
    assert result.mode == "device-only"


def test_throughput_objective_picks_the_pipeline_with_the_fastest_slowest_stage():
    result = plan(chain4(), "throughput")
    fps = result.predicted["throughput_fps"]
    assert all(fps >= a.throughput_fps - 1e-9 for a in result.alternatives if a.available)
