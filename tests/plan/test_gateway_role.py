"""DeepThings' gateway role in the partition optimiser (``plan_cluster(gateway_tiles=False)``):
the gateway holds no tile, the tiles go to the other devices, and the plan's frames/s is the
busiest of the medium, a tile device and the gateway's rest; bad requests fail with one clear
error."""

from __future__ import annotations

import pytest

from edgeweave.errors import PlanError
from edgeweave.graph import capture_spec
from edgeweave.plan import load_plan
from edgeweave.plan.multidevice import plan_cluster
from edgeweave.profile import analytic_profile
from edgeweave.topology import Fleet


def fleet(mbps: float = 10_000.0) -> Fleet:
    """An rpi4 gateway ``a``, an rpi3 ``b`` and an rpi4 ``c`` on one medium."""
    nodes = [{"name": "a", "tier": "device", "hardware": "rpi4"},
             {"name": "b", "tier": "device", "hardware": "rpi3"},
             {"name": "c", "tier": "device", "hardware": "rpi4"}]
    return Fleet.from_dict({
        "name": "gateway-role", "nodes": nodes, "links": [],
        "clusters": [{"name": "abc", "devices": ["a", "b", "c"], "gateway": "a",
                      "medium": {"mbps": mbps, "rtt_ms": 0.01}}]})


@pytest.fixture(scope="module")
def digits():
    graph = capture_spec("digits-cnn")
    return graph, analytic_profile(graph, fleet())


@pytest.mark.parametrize("objective", ["latency", "throughput"])
@pytest.mark.parametrize("max_blocks", [1, 3])
def test_the_gateway_holds_no_tile_and_the_plan_prices_that(digits, objective, max_blocks,
                                                            tmp_path) -> None:
    graph, profile = digits
    plan = plan_cluster(graph, profile, fleet(mbps=50.0), methods=("fused-tiles",),
                        objective=objective, max_blocks=max_blocks, gateway_tiles=False)
    part = plan.partition
    assert part is not None and part.method == "fused-tiles" and not part.gateway_tiles
    assert part.all_tiles() and {t.device for t in part.all_tiles()} <= {"b", "c"}
    # the plan may leave the rpi3 out (plan.subclusters): then it is no device of the plan
    assert {t.device for t in part.all_tiles()} <= set(part.devices) and "a" in part.devices
    load = {x.name: x for x in part.load}
    assert load["a"].tasks == 0 and load["a"].compute_ms == 0
    assert sum(x.tasks for x in part.load) == len(part.all_tiles())
    pred = part.predicted
    # frames/s: the busiest of the medium, each tile device, and the gateway (its rest)
    busiest = max(pred["medium_busy_ms"], *(x.compute_ms for x in part.load if x.name != "a"),
                  pred["rest_ms"])
    assert pred["fps"] == pytest.approx(1000.0 / busiest, rel=1e-6)
    assert pred["latency_ms"] == pytest.approx(pred["cluster_ms"] + pred["rest_ms"], rel=1e-6)
    path = tmp_path / "plan.json"
    path.write_text(plan.model_dump_json())
    assert load_plan(path).partition.gateway_tiles is False


def test_the_gateway_with_tiles_is_never_worse_for_latency(digits) -> None:
    """The devices without the gateway are a subset of the search: an exact latency search
    over all of them is at least as good."""
    graph, profile = digits
    kw = dict(methods=("fused-tiles",), max_blocks=1, largest_grid=2, max_assignments=10_000)
    without = plan_cluster(graph, profile, fleet(), gateway_tiles=False, **kw)
    with_ = plan_cluster(graph, profile, fleet(), **kw)
    assert with_.partition.gateway_tiles
    assert with_.exact and without.exact
    assert with_.partition.predicted["latency_ms"] <= (
        without.partition.predicted["latency_ms"] + 1e-9)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(gateway_tiles=False), r"--no-gateway-tiles: a gateway without tiles applies to "
                                r"fused tiles only; use --method fused-tiles"),
    (dict(gateway_tiles=False, methods=("fused-tiles",), devices=["a"]),
     r"--no-gateway-tiles: cluster 'abc' has no device besides its gateway 'a'"),
])
def test_bad_requests(digits, kwargs, pattern) -> None:
    graph, profile = digits
    with pytest.raises(PlanError, match=pattern):
        plan_cluster(graph, profile, fleet(), **kwargs)
