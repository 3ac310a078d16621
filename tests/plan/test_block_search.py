"""DeeperThings' consecutive fused blocks in the planner: the dynamic program over block
boundaries finds the best of every pinned combination, the plan JSON carries the blocks (and a
plan written before blocks existed still reads as one), and bad pins are named."""

from __future__ import annotations

import itertools

import pytest

from edgeweave.errors import GraphError
from edgeweave.graph import capture_spec
from edgeweave.graph.blocks import cut_depths, fused_blocks
from edgeweave.plan import block_search, fused_search, load_plan
from edgeweave.plan.fused_search import grid_options
from edgeweave.plan.multidevice import plan_cluster
from edgeweave.plan.partition import Partition
from edgeweave.profile import analytic_profile
from edgeweave.topology import Fleet


def fleet(mbps: float) -> Fleet:
    return Fleet.from_dict({
        "name": "pair", "nodes": [{"name": "a", "tier": "device", "hardware": "rpi4"},
                                  {"name": "b", "tier": "device", "hardware": "rpi3"}],
        "clusters": [{"name": "ab", "devices": ["a", "b"], "gateway": "a",
                      "medium": {"mbps": mbps, "rtt_ms": 0.01}}]})


@pytest.fixture(scope="module")
def digits():
    graph = capture_spec("digits-cnn")
    return graph, analytic_profile(graph, fleet(10_000.0))



def _pinned_plans(graph, profile, cluster, objective="latency"):
    """Every plan of 2 or 3 pinned blocks (each block's grid up to 2x2, data reuse on and off),
    with the fused depths it ends at: what the block search must come close to."""
    depths = sorted(cut_depths(graph))
    for count in (2, 3):
        for ends in itertools.combinations(depths, count):
            options = [[(g, r) for g in grid_options(b, 2) for r in (False, True)
                        if not (r and g == (1, 1))] for b in fused_blocks(graph, ends)]
            for combo in itertools.product(*options):
                yield ends, plan_cluster(graph, profile, cluster, methods=("fused-tiles",),
                                         objective=objective,
                                         blocks=[(d, g, r) for d, (g, r)
                                                 in zip(ends, combo, strict=True)])

def test_the_block_search_is_the_best_of_every_pinned_combination(digits) -> None:
    """Every 2- and 3-block split of digits-cnn's prefix with every grid up to 2x2 and data
    reuse on or off in each block (each block's assignment exhaustive), pinned one by one:
    none beats the searched plan's multi-block figure, which the search record puts beside the
    best single block."""
    graph, profile = digits
    cluster = fleet(10_000.0)
    plan = plan_cluster(graph, profile, cluster, methods=("fused-tiles",), largest_grid=2)
    record = plan.partition.search["blocks"]
    assert record["one_block_ms"] > 0 and record["multi_block_ms"] > 0
    assert plan.predicted["total_ms"] == pytest.approx(min(record["one_block_ms"],
                                                           record["multi_block_ms"]))
    assert not plan.exact and any("not exact" in n for n in plan.partition.search["notes"])
    pinned = []
    for ends, p in _pinned_plans(graph, profile, cluster):
        assert [s.depth for s in p.partition.stages()] == list(ends)
        pinned.append(p.predicted["total_ms"])
    assert min(pinned) == pytest.approx(record["multi_block_ms"])


def test_blocks_round_trip_in_the_plan_json_and_old_plans_read_as_one_block(
        digits, tmp_path) -> None:
    graph, profile = digits
    plan = plan_cluster(graph, profile, fleet(10_000.0), methods=("fused-tiles",),
                        blocks=[(2, (2, 2), True), (3, (1, 2), False)])
    part = plan.partition
    assert part.fused_depth == 3 and part.grid is None and part.tiles == []
    assert [(s.depth, s.grid, s.reuse) for s in part.stages()] == [(2, (2, 2), True),
                                                                   (3, (1, 2), False)]
    assert any(t.reused for t in part.stages()[0].tiles)  # level-1 tiles of the first block
    assert part.prefix_nodes == [n for s in fused_blocks(graph, [2, 3]) for n in s.names]
    assert sum(x.tasks for x in part.load) == 6  # every block's tiles
    path = tmp_path / "plan.json"
    path.write_text(plan.model_dump_json())
    assert load_plan(path).partition.stages() == part.stages()
    one = plan_cluster(graph, profile, fleet(10_000.0), methods=("fused-tiles",),
                       depth=2, grid=(2, 1)).partition
    old = one.model_dump(mode="json")
    del old["blocks"]  # a plan written before several blocks existed
    (stage,) = Partition.model_validate(old).stages()
    assert (stage.depth, stage.grid, stage.tiles) == (2, (2, 1), one.tiles)


def test_bad_block_pins_are_named(digits) -> None:
    graph, profile = digits
    with pytest.raises(GraphError, match="each deeper than the one before"):
        plan_cluster(graph, profile, fleet(10_000.0), methods=("fused-tiles",),
                     blocks=[(2, (1, 1), False), (1, (1, 1), False)])
    with pytest.raises(GraphError, match="larger than the"):
        plan_cluster(graph, profile, fleet(10_000.0), methods=("fused-tiles",),
                     blocks=[(1, (1, 1), False), (2, (9, 9), False)])


def test_for_throughput_the_blocks_are_priced_by_the_busiest_resource_not_summed_time(
        digits) -> None:
    """With frames in flight, frames/s is limited by the busiest resource over a whole frame
    (a device with the gateway's share of the rest, or the medium), not by the blocks'
    summed makespans. The throughput search comes within 1% of the most frames/s of every
    pinned 2- and 3-block combination (grids up to 2x2, reuse on/off; it is not exact: its
    tiles are moved one at a time), above the latency search's blocks, and its predicted
    frames/s is that bottleneck's, as the plan's device loads give it. (Priced by the sum of
    makespans, it chose the latency plan's blocks, depth 1 1x1 | depth 3 2x2, 4% below the
    best pinned.)"""
    graph, profile = digits
    cluster = fleet(10_000.0)
    plan = plan_cluster(graph, profile, cluster, methods=("fused-tiles",), largest_grid=2,
                        objective="throughput")
    record = plan.partition.search["blocks"]
    assert plan.predicted["throughput_fps"] == pytest.approx(max(record["one_block_fps"],
                                                                 record["multi_block_fps"]))
    assert any("busiest resource" in n for n in plan.partition.search["notes"])
    pinned = [p.predicted["throughput_fps"]
              for _, p in _pinned_plans(graph, profile, cluster, objective="throughput")]
    assert record["multi_block_fps"] >= 0.99 * max(pinned)
    latency = plan_cluster(graph, profile, cluster, methods=("fused-tiles",), largest_grid=2)
    assert record["multi_block_fps"] > latency.partition.search["blocks"]["multi_block_fps"]
    # the plan's frames/s is its busiest resource's
    part = plan.partition
    busiest = max([part.predicted["medium_busy_ms"]] + [
        load.compute_ms + (part.predicted["rest_ms"] if load.name == "a" else 0.0)
        for load in part.load])
    assert plan.predicted["throughput_fps"] == pytest.approx(1000.0 / busiest)


@pytest.mark.parametrize("objective", ["latency", "throughput"])
def test_the_search_shortcuts_leave_the_plan_as_it_was(digits, monkeypatch, objective) -> None:
    """The block search cuts a later block's tiles from its prefix's (graph.tiles.restrict)
    and skips an assignment whose busy times alone cannot beat the best (fused_search.assign):
    both only save time. The same plan, to the last figure, with both turned off."""
    graph, profile = digits
    cluster = fleet(100.0)

    def planned():
        plan = plan_cluster(graph, profile, cluster, largest_grid=3, objective=objective)
        return plan.model_dump(mode="json")

    fast = planned()
    monkeypatch.setattr(fused_search, "BOUND_SLACK_MS", float("inf"))
    monkeypatch.setattr(block_search, "later_tiles_and_work",
                        lambda prefix, block, grid, reuse, cache: fused_search.tiles_and_work(
                            block, grid, reuse, None, frame_input=False))
    assert planned() == fast
