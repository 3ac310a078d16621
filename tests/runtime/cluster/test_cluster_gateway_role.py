"""DeepThings' gateway role in the runtime: a fused-tile plan whose gateway holds no tile
(``plan_cluster(gateway_tiles=False)``) gets no worker for the gateway; the other devices steal
every tile of frames pipelined from the gateway, which gathers, stitches and runs every frame's
rest itself; every frame is answered, equal to the single-device model."""

from __future__ import annotations

import torch
from cluster_helpers import TOKEN, digits, digits_plan

from edgeweave.runtime.cluster.cluster_run import has_worker, worker_devices
from edgeweave.runtime.cluster.drive import drive
from edgeweave.runtime.cluster.gateway import GATEWAY_LOCAL, TileGateway


def test_a_gateway_without_tiles_gets_no_worker_the_others_do():
    without = digits_plan(grid=(2, 2), gateway_tiles=False).partition
    with_ = digits_plan(grid=(2, 2)).partition
    assert not has_worker(without, "a") and has_worker(without, "b")
    assert "a" not in worker_devices(without, ["a"])
    assert set(worker_devices(without, ["a"])) == {t.device for t in without.all_tiles()}
    assert has_worker(with_, "a")  # a gateway with tiles computes them on its worker
    layers = digits_plan(method="layer-wise", size=4, layer_split="grid").partition
    assert not has_worker(layers, "a")  # a layer-wise gateway computes in-process, as before


def test_a_gateway_without_tiles_runs_every_rest_and_answers_every_frame(workers):
    """Two frames in flight from the gateway; only b and c have workers and steal the tiles
    (two fused blocks, the second cut from the first's stitched map); the rest of every frame
    runs on the gateway."""
    plan = digits_plan(blocks=[(1, (2, 2), False), (3, (1, 2), False)], gateway_tiles=False)
    part = plan.partition
    assert not part.gateway_tiles and len(part.stages()) == 2
    assert {t.device for t in part.all_tiles()} <= {"b", "c"}
    gw = TileGateway(digits(), plan, token=TOKEN, prefetch=1, gateway_dilation=5.0,
                     dilations={"b": 15.0, "c": 5.0})
    g = torch.Generator().manual_seed(7)
    xs = [torch.randn(digits().input_shape, generator=g) for _ in range(6)]
    try:
        for device in worker_devices(part, ["a"]):
            gw.join(device, workers.start(device, dilation=5.0))
        results = drive(gw, xs, ["a"], 60.0, in_flight=2)
    finally:
        gw.close()
    assert len(results) == 6 and len({r.frame for r in results}) == 6  # none lost or twice
    for r in results:
        assert r.home == "a"  # gathered, and its rest run, on the gateway
        assert set(r.tasks) <= {"b", "c"} and GATEWAY_LOCAL not in r.tasks
        assert sum(r.tasks.values()) == len(part.all_tiles())
        assert {t.device for t in r.timeline} <= {"b", "c"}
    by_order = sorted(results, key=lambda r: r.submitted)
    with torch.no_grad():
        for x, r in zip(xs, by_order, strict=True):
            assert torch.allclose(r.output, digits().module(x), atol=1e-5)


def test_a_calibrated_plan_keeps_the_gateway_without_tiles():
    """The calibration pass prices the plan again (one block, or several and the best one
    compared): the gateway still holds no tile and the objective is kept."""
    from cluster_helpers import cluster_fleet

    from edgeweave.plan.run_calibration import RunCalibration
    from edgeweave.profile import analytic_profile
    from edgeweave.runtime.cluster.session import plan_calibrated, plan_emulated

    graph, fleet = digits(), cluster_fleet()
    profile = analytic_profile(graph, fleet)
    for pins in ({"grid": (2, 2)}, {"blocks": [(1, (2, 2), False), (3, (1, 2), False)]}):
        plan = plan_emulated(graph, profile, fleet, methods=("fused-tiles",),
                             objective="throughput", gateway_tiles=False, **pins)
        cal = RunCalibration({"b": 1.3, "c": 1.1}, 1.2, None)
        again = plan_calibrated(graph, profile, fleet, plan, cal)
        assert again.objective == "throughput" and not again.partition.gateway_tiles
        assert {t.device for t in again.partition.all_tiles()} <= {"b", "c"}


def test_the_gateway_sleeps_its_rests_stretch_and_answers_the_models_output():
    """The rest runs in the gateway's process beside its dispatching: its dilation's stretch
    sleeps (a busy wait held the GIL and a core while the next frames' tiles waited), so the
    process spends a small part of the emulated time on the CPU; the output is the model's."""
    import time

    from edgeweave.graph.blocks import fused_block
    from edgeweave.graph.tile_exec import run_block
    from edgeweave.runtime.cluster.rest import RestRunner

    graph = digits()
    plan = digits_plan(grid=(2, 2), gateway_tiles=False)
    part = plan.partition
    block = fused_block(graph, part.fused_depth)
    runner = RestRunner(graph, plan, part.prefix_nodes, dilation=400.0)
    x = torch.randn(graph.input_shape, generator=torch.Generator().manual_seed(2))
    given = {block.output.name: run_block(graph, block, x)}
    runner.run(x, given)  # traced and warmed up on the first call
    wall, cpu = time.perf_counter(), time.process_time()
    result = runner.run(x, given)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    with torch.no_grad():
        assert torch.allclose(result.output, graph.module(x), atol=1e-5)
    assert wall >= 0.01  # stretched 400x
    assert cpu < 0.5 * wall  # slept, not spun
