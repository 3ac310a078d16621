"""What a task costs beyond its FLOP share (plan.cluster_cost): the per-call cost a tile pays
again for every layer it computes part of, the runtime's cost per MiB it carries, and the
optimiser
keeping a model on one device when those make splitting it lose (priced, not timed)."""

from __future__ import annotations

import pytest
from test_multidevice import cluster_fleet

from edgeweave.errors import PlanError
from edgeweave.graph import capture_spec
from edgeweave.graph.blocks import cut_depths, fused_block
from edgeweave.graph.tiles import tile_grid
from edgeweave.plan.cluster_cost import ClusterModel, tile_tasks, tile_work
from edgeweave.plan.multidevice import plan_cluster
from edgeweave.profile import Profile, analytic_profile
from edgeweave.profile.tile_calibration import call_share


def with_call_ms(profile: Profile, call_ms: float) -> Profile:
    extra = dict(profile.model_extra or {})
    extra["host"] = {**extra["host"], "tile_call_ms": call_ms}
    return Profile.model_validate({**profile.model_dump(), **extra})


@pytest.fixture(scope="module")
def digits():
    graph = capture_spec("digits-cnn")
    return graph, analytic_profile(graph, cluster_fleet())


def test_a_tile_pays_the_call_cost_of_every_layer_it_computes_part_of(digits) -> None:
    graph, profile = digits
    fleet = cluster_fleet()
    block = fused_block(graph, max(cut_depths(graph)))
    flop = ClusterModel(profile, fleet, fleet.cluster())
    costly = ClusterModel(with_call_ms(profile, 0.5), fleet, fleet.cluster(), ms_per_mb=3.0)
    gflops = float(profile.model_extra["host"]["gflops"])
    call = {n: 0.5 * gflops / fleet.node(n).hardware.gflops for n in ("a", "b")}
    assert costly.devices["a"].call_ms == pytest.approx(call["a"])
    # the whole map as one tile: the profile's latency; as a task, plus 3 ms per MiB it carries
    (whole,) = tile_work(block, tile_grid(block, (1, 1)))
    assert costly.compute_ms("a", whole.fractions) == pytest.approx(
        flop.compute_ms("a", whole.fractions))
    (task,) = tile_tasks(costly, [whole], ["a"])
    wire = sum(costly.task_bytes(whole))
    assert wire > 0 and task.compute_ms == pytest.approx(
        flop.compute_ms("a", whole.fractions) + 3.0 * wire / 2**20)
    # each tile of a 2x2 grid: its FLOP share + the call cost per (1 - fraction)
    tiles = tile_grid(block, (2, 2))
    for tile, work in zip(tiles, tile_work(block, tiles), strict=True):
        for device in ("a", "b"):
            assert costly.compute_ms(device, work.fractions) == pytest.approx(
                flop.compute_ms(device, work.fractions)
                + call[device] * call_share(block, tile))
    assert call_share(block, tiles[0]) > 0


def test_the_optimiser_keeps_one_device_when_the_task_costs_make_splitting_lose(digits):
    graph, profile = digits
    fleet = cluster_fleet()  # a fast medium: splitting the FLOPs alone pays
    split = plan_cluster(graph, profile, fleet)
    assert split.partition.method != "single" and not split.partition.search["task_overhead"][
        "calibrated"]
    assert any("FLOP share" in note for note in split.partition.search["notes"])
    one_ms = split.partition.predicted["one_device_ms"]
    costly = with_call_ms(profile, 10.0)
    kept = plan_cluster(graph, costly, fleet)
    assert kept.partition.method == "single"
    assert kept.partition.predicted["speedup_vs_one"] == pytest.approx(1.0)
    assert kept.partition.search["task_overhead"]["calibrated"]
    # every distributed alternative it turned down is priced no faster than the one device
    # (fused tiles' best is then its 1x1 grid on the gateway: the one device itself)
    for alt in kept.alternatives:
        if alt.mode.startswith("cluster-"):
            assert alt.total_ms >= one_ms - 1e-9
    forced = plan_cluster(graph, costly, fleet, methods=("fused-tiles",))
    assert forced.predicted["total_ms"] >= one_ms
    # a measured runtime cost per MiB alone can tip it too
    assert plan_cluster(graph, profile, fleet, ms_per_mb=1e4).partition.method == "single"


def test_a_negative_task_cost_is_refused(digits) -> None:
    graph, profile = digits
    with pytest.raises(PlanError, match="task overhead"):
        plan_cluster(graph, profile, cluster_fleet(), ms_per_mb=-1.0)



def test_each_layer_pays_the_call_cost_calibrated_on_its_own_block(digits) -> None:
    """Calibrated per block (profile.tile_calibration), a later block's layers pay their own
    per-call cost, not the first block's: here free in the first block and 10 ms a call after
    it, so no tile may cut a later layer; priced with one figure for the prefix (the first
    block's), the planner tiled them all (as it did resnet18's 7x7 blocks, which ran slower)."""
    graph, profile = digits
    fleet = cluster_fleet()
    depths = sorted(cut_depths(graph))
    first = set(fused_block(graph, depths[0]).names)
    later = [n for n in fused_block(graph, depths[-1]).names if n not in first]
    assert later
    by_node = {n: 0.0 if n in first else 10.0 for n in [*first, *later]}
    extra = dict(profile.model_extra or {})
    extra["host"] = {**extra["host"], "tile_call_ms": 0.0, "tile_call_ms_by_node": by_node}
    costly = Profile.model_validate({**profile.model_dump(), **extra})
    model = ClusterModel(costly, fleet, fleet.cluster())
    gflops = float(profile.model_extra["host"]["gflops"])
    block = fused_block(graph, depths[-1])
    tiles = tile_grid(block, (2, 2))
    flop = ClusterModel(with_call_ms(profile, 0.0), fleet, fleet.cluster())
    for work in tile_work(block, tiles):
        extra_ms = sum(by_node[n] * gflops / fleet.node("a").hardware.gflops * (1 - f)
                       for n, f in work.fractions.items() if f > 0)
        assert extra_ms > 0 and model.compute_ms("a", work.fractions) == pytest.approx(
            flop.compute_ms("a", work.fractions) + extra_ms)
    # the plan: no later layer cut into tiles (one device, or later blocks kept whole)
    assert plan_cluster(graph, with_call_ms(profile, 0.0), fleet).partition.method == \
        "fused-tiles"  # free calls everywhere: it tiles
    part = plan_cluster(graph, costly, fleet).partition
    for stage in part.stages():  # a block ending past the first cut holds a later layer
        assert stage.grid == (1, 1) or stage.depth == depths[0], part.describe_blocks()
