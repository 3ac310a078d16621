"""The partition optimiser: on a tiny case its exhaustive search equals brute force over every
depth, grid, reuse and assignment; memory limits hold; the plan JSON round-trips and its tiles
rebuild, from the JSON alone, into modules whose outputs stitch to the model's block; bad
requests fail with one clear error."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from edgeweave.errors import EdgeWeaveError, GraphError, PlanError
from edgeweave.graph import capture_spec
from edgeweave.graph.blocks import cut_depths, fused_block
from edgeweave.graph.reuse import reuse_tiles
from edgeweave.graph.tile_exec import ShareStore, TileModule, run_block, stitch
from edgeweave.graph.tiles import tile_grid
from edgeweave.plan import load_plan
from edgeweave.plan.cluster_cost import ClusterModel, tile_tasks, tile_work
from edgeweave.plan.costs import CostModel
from edgeweave.plan.fused_search import grid_options
from edgeweave.plan.multidevice import plan_cluster
from edgeweave.plan.rest import place_rest
from edgeweave.profile import analytic_profile
from edgeweave.topology import Fleet


def cluster_fleet(mbps: float = 10_000.0, memory_mb: dict[str, float] | None = None,
                  edge: bool = False) -> Fleet:
    """An rpi4 gateway, an rpi3 and another rpi4 on one medium (fast by default, so that
    splitting the tiny digits model pays)."""
    nodes = [{"name": "a", "tier": "device", "hardware": "rpi4"},
             {"name": "b", "tier": "device", "hardware": "rpi3"},
             {"name": "c", "tier": "device", "hardware": "rpi4"}]
    links = []
    if edge:
        nodes.append({"name": "edge", "tier": "edge", "hardware": "edge-server"})
        links.append({"from": "a", "to": "edge", "mbps": 18.88, "rtt_ms": 5})
    return Fleet.from_dict({
        "name": "test-cluster", "nodes": nodes, "links": links,
        "clusters": [{"name": "abc", "devices": ["a", "b", "c"], "gateway": "a",
                      "medium": {"mbps": mbps, "rtt_ms": 0.01},
                      "memory_mb": memory_mb or {}}]})


@pytest.fixture(scope="module")
def digits():
    graph = capture_spec("digits-cnn")
    return graph, analytic_profile(graph, cluster_fleet())


def brute_force(graph, profile, fleet, devices, largest_grid):
    """Every depth x grid x reuse x assignment of tiles to devices, priced with the same cost
    model (rest of the model placed after the block), plus the single-device option."""
    cm = CostModel(profile)
    model = ClusterModel(profile, fleet, fleet.cluster())
    best = float("inf")
    for depth in cut_depths(graph):
        block = fused_block(graph, depth)
        rest = place_rest(cm, block.names, "latency")
        for grid in grid_options(block, largest_grid):
            for reuse in (False, True):
                tiles = reuse_tiles(block, grid) if reuse else tile_grid(block, grid)
                work = tile_work(block, tiles)
                for combo in itertools.product(devices, repeat=len(work)):
                    schedule = model.simulate(tile_tasks(model, work, combo))
                    best = min(best, schedule.makespan_ms + rest.latency_ms)
    return best


def test_exhaustive_search_equals_brute_force(digits) -> None:
    graph, profile = digits
    fleet = cluster_fleet()
    devices = ["a", "b"]
    result = plan_cluster(graph, profile, fleet, methods=("fused-tiles",), devices=devices,
                          largest_grid=2, max_assignments=10_000, max_blocks=1)
    assert result.exact and result.partition is not None
    assert result.partition.search["exact"]
    want = brute_force(graph, profile, fleet, devices, largest_grid=2)
    assert result.predicted["total_ms"] == pytest.approx(want, rel=1e-9)
    # with the single-device plan in the running the answer can only improve
    both = plan_cluster(graph, profile, fleet, methods=("fused-tiles", "single"),
                        devices=devices, largest_grid=2, max_assignments=10_000)
    assert both.predicted["total_ms"] <= want + 1e-9


def test_splitting_pays_on_a_fast_medium_and_not_on_a_slow_one(digits) -> None:
    graph, profile = digits
    fast = plan_cluster(graph, profile, cluster_fleet())
    assert fast.partition is not None and fast.partition.method != "single"
    assert fast.partition.predicted["speedup_vs_one"] > 1.0
    slow = plan_cluster(graph, analytic_profile(graph, cluster_fleet(0.5)), cluster_fleet(0.5))
    assert slow.partition is not None and slow.partition.method == "single"
    assert slow.partition.predicted["speedup_vs_one"] == pytest.approx(1.0)


def test_memory_limits_are_respected(digits) -> None:
    graph, _ = digits
    block_weights = fused_block(graph).param_bytes
    tiny = block_weights / 2**20 / 2  # b cannot hold the deepest block's weights
    fleet = cluster_fleet(memory_mb={"b": tiny})
    result = plan_cluster(graph, analytic_profile(graph, fleet), fleet, methods=("fused-tiles",),
                          depth=max(cut_depths(graph)))
    part = result.partition
    assert part is not None
    assert all(t.device != "b" for t in part.tiles)
    for load in part.load:
        assert load.memory_bytes <= load.memory_limit_bytes


def test_a_pinned_configuration_over_every_limit_names_the_devices(digits) -> None:
    graph, _ = digits
    # the edge takes the rest of the model, so the gateway only holds the frame and the block
    # output; no device can hold the fused block's weights (0.018 MiB)
    fleet = cluster_fleet(memory_mb={"a": 0.01, "b": 0.01, "c": 0.01}, edge=True)
    profile = analytic_profile(graph, fleet)
    with pytest.raises(PlanError, match=r"fused depth 2, grid 2x2: no device can hold tile 0: "
                                        r"it needs 0.024 MiB \(block weights 0.0183 MiB .*"
                                        r"memory limits: a 0.01 MiB, b 0.01 MiB, c 0.01 MiB"):
        plan_cluster(graph, profile, fleet, methods=("fused-tiles",), depth=2, grid=(2, 2))
    # searching, the optimiser finds what fits (here: the frame sent to the edge)
    result = plan_cluster(graph, profile, fleet)
    assert result.partition is not None
    for load in result.partition.load:
        assert load.memory_bytes <= load.memory_limit_bytes


def test_nothing_fits(digits) -> None:
    graph, _ = digits
    fleet = cluster_fleet(memory_mb={"a": 0.01, "b": 0.01, "c": 0.01})
    with pytest.raises(PlanError, match=r"model 'digits-cnn': no cluster plan fits: single "
                                        r"device: .*memory limit.*the rest of the model after "
                                        r".* does not fit"):
        plan_cluster(graph, analytic_profile(graph, fleet), fleet)


def test_plan_json_round_trips_and_rebuilds_the_tiles(digits, tmp_path) -> None:
    graph, profile = digits
    result = plan_cluster(graph, profile, cluster_fleet(), methods=("fused-tiles",),
                          depth=2, grid=(2, 3), reuse=True)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(result.to_json()))
    loaded = load_plan(path)
    assert loaded.partition == result.partition
    part = loaded.partition
    assert part is not None and part.method == "fused-tiles" and part.reuse
    assert part.model == "digits-cnn" and part.grid == (2, 3) and part.fused_depth == 2
    assert {t.device for t in part.tiles} <= {"a", "b", "c"}
    assert set(part.prefix_nodes) <= set(loaded.placement)
    # a worker rebuilds its block from the specifier and depth, checks the plan's regions
    # against its own, and runs its tiles; the gateway keeps shares and stitches
    graph2 = capture_spec(part.model, input_shape=tuple(part.input_shape))
    block = fused_block(graph2, part.fused_depth)
    mine = {t.index: t for t in reuse_tiles(block, part.grid)}
    tiles = [t.to_tile() for t in part.tiles]
    assert all(t == mine[t.index] for t in tiles)
    x = torch.randn(graph2.input_shape)
    store, outputs = ShareStore(tiles), {}
    with torch.no_grad():
        for tile in sorted(tiles, key=lambda t: (t.level, t.index)):
            crop = x[:, :, tile.input.r0:tile.input.r1, tile.input.c0:tile.input.c1]
            outputs[tile.index], shares = TileModule(graph2, block, tile)(crop,
                                                                          store.pieces(tile))
            store.keep(tile.index, shares)
        got = stitch(block, tiles, outputs)
        assert torch.allclose(got, run_block(graph2, block, x), rtol=1e-4, atol=1e-5)


def test_layer_wise_and_single_plans_carry_a_partition(digits) -> None:
    graph, profile = digits
    layered = plan_cluster(graph, profile, cluster_fleet(), methods=("layer-wise",))
    part = layered.partition
    assert part is not None and part.method == "layer-wise" and part.layers
    assert layered.mode == "cluster-layer-wise"
    for layer in part.layers:
        assert set(layer.devices) <= {"a", "b", "c"}
        assert len(layer.devices) == len(layer.compute_ms) == len(layer.in_bytes)
    # rows kept on the devices where they can be, each part's interior computed while its
    # halo crosses
    assert part.layer_split == "overlap"
    # the 2-D grid (3 devices: 3x1, equal rows whatever each device's speed), priced as planned
    grid = plan_cluster(graph, profile, cluster_fleet(), methods=("layer-wise",),
                        layer_split="grid").partition
    assert grid is not None and grid.layer_split == "grid"
    pinned = plan_cluster(graph, profile, cluster_fleet(mbps=1.0), methods=("layer-wise",),
                          layer_devices=3).partition  # a slow medium: splitting does not pay
    assert pinned is not None and {d for la in pinned.layers for d in la.devices} == {"a", "b",
                                                                                      "c"}
    # rows kept on the devices: the gateway's rows lie between two devices', so the halo at
    # both its edges crosses the medium once (the others' crosses twice, through it)
    assert pinned.layer_split == "overlap" and pinned.devices[0] == "a"
    assert all(la.devices.index("a") == 1 for la in pinned.layers if la.kind == "rows")
    for layer in grid.layers:
        if layer.kind == "rows":
            sizes = [b - a for a, b in itertools.pairwise(layer.row_bounds)]
            assert max(sizes) - min(sizes) <= 1
    single = plan_cluster(graph, profile, cluster_fleet(), methods=("single",))
    assert single.partition is not None and single.partition.method == "single"
    assert single.mode == single.partition.rest_mode == "device-only"


def test_the_rest_runs_where_the_single_device_planner_puts_it() -> None:
    from torch import nn

    from edgeweave.graph import capture

    # a thin fused block, then heavy layers and a small output: worth shipping to the edge
    heavy = [m for _ in range(8) for m in (nn.Conv2d(64, 64, 3, padding=1), nn.ReLU())]
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 64, 1),
                          *heavy, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    graph = capture(model, (1, 3, 32, 32), name="heavy")
    fleet = cluster_fleet(mbps=18.88, edge=True)
    result = plan_cluster(graph, analytic_profile(graph, fleet), fleet,
                          methods=("fused-tiles",), depth=1, grid=(2, 2), reuse=False)
    part = result.partition
    assert part is not None and part.rest_mode == "edge-only"
    assert all(result.placement[n] == "device" for n in part.prefix_nodes)
    assert result.placement[graph.outputs[0]] == "edge"
    assert part.predicted["rest_ms"] > 0


@pytest.mark.parametrize(("kwargs", "error", "pattern"), [
    ({"devices": ["a", "zz"]}, PlanError, r"--devices: unknown device 'zz' in cluster 'abc' "
                                          r"\(its devices: a, b, c\)"),
    ({"devices": ["b", "c"]}, PlanError, "the gateway 'a' of cluster 'abc' must be one of them"),
    ({"grid": (6, 6), "depth": 3, "methods": ("fused-tiles",)}, GraphError,
     "grid 6x6 is larger than the 4x4 output feature map"),
    ({"depth": 9, "methods": ("fused-tiles",)}, GraphError, "fused depth 9 is not available"),
    ({"objective": "energy"}, PlanError, "--objective: 'energy' is not supported"),
    ({"methods": ("magic",)}, PlanError, "--method: magic"),
    ({"layer_split": "diagonal"}, PlanError, "--layer-split: 'diagonal'; expected one of"),
    ({"layer_devices": 4}, PlanError, r"--layer-devices 4: expected 1 to 3"),
    ({"cluster": "nope"}, EdgeWeaveError, r"no cluster named 'nope' \(known: abc\)"),
])
def test_bad_requests(digits, kwargs, error, pattern) -> None:
    graph, profile = digits
    with pytest.raises(error, match=pattern):
        plan_cluster(graph, profile, cluster_fleet(), **kwargs)


def test_model_with_no_fusable_prefix() -> None:
    from torch import nn

    from edgeweave.graph import capture

    mlp = capture(nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4)),
                  (1, 1, 8, 8), name="mlp")
    fleet = cluster_fleet()
    profile = analytic_profile(mlp, fleet)
    with pytest.raises(GraphError, match="model 'mlp' has no fusable prefix"):
        plan_cluster(mlp, profile, fleet, methods=("fused-tiles",))
    # searching every method, fused tiles are skipped with a note; layer-wise still runs
    result = plan_cluster(mlp, profile, fleet)
    assert any("no fusable prefix" in n for n in result.partition.search["notes"])
