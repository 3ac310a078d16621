"""A cluster plan with more devices is never priced worse than with fewer: the fused tiles are
also searched without the slowest hardware classes (plan.subclusters), the best plan of every
search wins, and a plan that leaves a device out says so and does not use it (no tile, no
worker); a homogeneous cluster costs no extra search."""

from __future__ import annotations

import pytest

from edgeweave.errors import EdgeWeaveError
from edgeweave.graph import capture_spec
from edgeweave.plan.cluster_cost import ClusterModel
from edgeweave.plan.multidevice import plan_cluster
from edgeweave.plan.subclusters import speed_subsets
from edgeweave.profile import analytic_profile
from edgeweave.runtime.cluster.cluster_run import worker_devices
from edgeweave.runtime.cluster.drive import with_sources
from edgeweave.topology import Fleet


def slow(gflops: float, name: str = "slow") -> dict:
    """An inline hardware profile ``gflops`` fast (a microcontroller-class board)."""
    return {"name": name, "description": f"a {gflops} GFLOP/s board", "gflops": gflops,
            "memory_mb": 512, "power_compute_w": 2.0, "power_idle_w": 1.0,
            "power_tx_w": 1.5, "power_rx_w": 1.4, "source": "test"}


def fleet(hardware: list, mbps: float = 10_000.0, memory_mb: dict | None = None) -> Fleet:
    """Devices ``d0`` (the gateway), ``d1``, ... with ``hardware`` in that order, on one
    medium (fast by default, so that splitting the tiny digits model pays)."""
    names = [f"d{k}" for k in range(len(hardware))]
    return Fleet.from_dict({
        "name": "mixed", "links": [],
        "nodes": [{"name": n, "tier": "device", "hardware": h}
                  for n, h in zip(names, hardware, strict=True)],
        "clusters": [{"name": "mixed", "devices": names, "gateway": "d0",
                      "medium": {"mbps": mbps, "rtt_ms": 0.01},
                      "memory_mb": memory_mb or {}}]})


#: Fastest first after the gateway, each device slower than every one before it: the first
#: n-1 devices are then always among the sub-clusters the n-device plan searches.
DESCENDING = ["rpi4", "rpi4", "rpi3", slow(1.5, "half-rpi3"), slow(0.6, "fifth-rpi3")]


@pytest.fixture(scope="module")
def digits():
    graph = capture_spec("digits-cnn")
    return graph, analytic_profile(graph, fleet(["rpi4"]))


def figure(plan) -> float:
    """What the objective minimises, in ms: latency, or the time per frame (1 / frames/s)."""
    if plan.objective == "latency":
        return float(plan.predicted["total_ms"])
    return 1000.0 / float(plan.predicted["throughput_fps"])


@pytest.mark.parametrize("objective, in_flight", [("latency", None), ("throughput", None),
                                                  ("throughput", 4)])
def test_adding_a_slower_device_never_prices_the_plan_worse(digits, objective,
                                                            in_flight) -> None:
    """For n = 2..5 devices of a heterogeneous fleet, each slower than the ones before it
    (greedy assignments: at most 8 tried exhaustively; grids up to 3x3, up to 2 fused blocks),
    the n-device plan is priced no worse than the plan on the first n-1 devices (they are one
    of the sub-clusters it searches; a tie goes to the simpler plan, to 6 decimals of a ms),
    and every plan's devices are some of its cluster's and hold every tile and stealer."""
    graph, profile = digits
    before = None
    for n in range(1, len(DESCENDING) + 1):
        plan = plan_cluster(graph, profile, fleet(DESCENDING[:n]), objective=objective,
                            in_flight=in_flight, max_assignments=8, max_blocks=2,
                            largest_grid=3)
        part = plan.partition
        assert part is not None and part.gateway == "d0" and "d0" in part.devices
        assert set(part.devices) <= {f"d{k}" for k in range(n)}
        assert {t.device for t in part.all_tiles()} <= set(part.devices)
        assert set(part.stealers) <= set(part.devices)
        if before is not None:
            assert figure(plan) <= figure(before) + 1e-6, (n, part.search["subsets"])
        before = plan


def test_a_device_too_slow_to_help_is_left_out_and_says_so(digits) -> None:
    """A board 500x slower than an rpi4 holds any frame up: the plan leaves it out (its
    search notes name it and the sub-cluster that won), gives it no tile, lists no load for it,
    and the runtime starts it no worker unless it is a data source."""
    graph, profile = digits
    cluster = fleet(["rpi4", "rpi4", slow(0.018)])
    plan = plan_cluster(graph, profile, cluster, methods=("fused-tiles",), max_blocks=1)
    part = plan.partition
    assert part is not None and part.method == "fused-tiles"
    record = part.search["subsets"]
    assert [r["devices"] for r in record["searched"]] == [["d0", "d1", "d2"], ["d0", "d1"]]
    assert record["chosen"] == ["d0", "d1"] and record["left_out"] == ["d2"]
    assert any("leaves out d2" in note for note in part.search["notes"])
    assert part.devices == ["d0", "d1"]
    assert "d2" not in {t.device for t in part.all_tiles()}
    assert "d2" not in {x.name for x in part.load}
    assert worker_devices(part, ["d0"]) == ["d0", "d1"]
    # a camera on the slow board still sends frames: it joins the plan's devices (no tile)
    sourced = with_sources(plan, cluster, ["d0", "d2"]).partition
    assert sourced.devices == ["d0", "d1", "d2"] and sourced.all_tiles() == part.all_tiles()
    assert worker_devices(sourced, ["d0", "d2"]) == ["d0", "d1", "d2"]
    with pytest.raises(EdgeWeaveError, match="data source 'x' is not a device of the plan's "
                                             "cluster 'mixed'"):
        with_sources(plan, cluster, ["x"])


def test_pins_hold_on_every_sub_cluster(digits) -> None:
    """A pinned depth and grid are kept on the sub-clusters too; a pinned configuration that
    only the whole cluster can hold (the rpi4 helper's memory is too small for a tile, the
    gateway holds none) is searched on it alone; pinned devices are kept as named (no
    sub-cluster searched: a user's choice, or a calibration's workers already running)."""
    graph, profile = digits
    cluster = fleet(["rpi4", "rpi4", slow(0.018)])
    pinned = plan_cluster(graph, profile, cluster, methods=("fused-tiles",), depth=2,
                          grid=(2, 2), reuse=False)
    part = pinned.partition
    assert (part.fused_depth, part.grid, part.devices) == (2, (2, 2), ["d0", "d1"])
    tight = fleet(["rpi4", "rpi4", slow(0.018)], memory_mb={"d1": 0.001})
    only = plan_cluster(graph, profile, tight, methods=("fused-tiles",), depth=2, grid=(1, 2),
                        gateway_tiles=False)
    assert only.partition.devices == ["d0", "d1", "d2"]
    assert {t.device for t in only.partition.all_tiles()} == {"d2"}
    record = only.partition.search["subsets"]
    assert record["searched"][1] == {"devices": ["d0", "d1"], "value": None,
                                     "latency_ms": None, "fps": None}
    chosen = plan_cluster(graph, profile, cluster, methods=("fused-tiles",),
                          devices=["d0", "d1", "d2"], max_blocks=1)
    assert chosen.partition.search["subsets"] is None
    assert chosen.partition.devices == ["d0", "d1", "d2"]


def test_a_homogeneous_cluster_searches_no_sub_cluster(digits) -> None:
    graph, profile = digits
    cluster = fleet(["rpi4", "rpi4", "rpi4", "rpi4"])
    model = ClusterModel(profile, cluster, cluster.cluster())
    assert speed_subsets(model, model.names) == []
    plan = plan_cluster(graph, profile, cluster, max_blocks=1)
    assert plan.partition.search["subsets"] is None
    assert plan.partition.devices == ["d0", "d1", "d2", "d3"]
    # a gateway of another class is no step: the rpi3 gateway and the rpi4s stay together
    mixed = fleet(["rpi3", "rpi4", "rpi4"])
    model = ClusterModel(profile, mixed, mixed.cluster())
    assert speed_subsets(model, model.names) == []
    steps = fleet(["rpi4", "rpi3", "rpi4", slow(0.5), "rpi3"])
    model = ClusterModel(profile, steps, steps.cluster())
    assert speed_subsets(model, model.names) == [["d0", "d1", "d2", "d4"], ["d0", "d2"]]
