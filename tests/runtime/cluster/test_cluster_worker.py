"""A cluster worker trusts nothing a gateway claims: it builds only models from its own
registry, refuses a plan whose tile regions differ from its own, takes exactly the weights its
model has, and checks every task's tile, neighbours and tensor shapes before any work."""

from __future__ import annotations

import dataclasses

import grpc
import pytest
import torch
from cluster_helpers import TOKEN, digits, digits_plan

from edgeweave.graph.blocks import chain_block
from edgeweave.graph.layerwise import unit_tiles
from edgeweave.graph.reuse import reuse_tiles
from edgeweave.graph.tile_exec import run_tiles
from edgeweave.graph.tiles import tiles_for_bounds
from edgeweave.runtime import tensors
from edgeweave.runtime.cluster import halo, steps
from edgeweave.runtime.cluster.blueprint import (
    block_recipe,
    cluster_spec,
    layer_recipe,
    layer_specs,
    layer_weights,
    module_weights,
    regions_digest,
    setup_stream,
)
from edgeweave.runtime.cluster.executors import TileExecutor
from edgeweave.runtime.cluster.halo import plan_hops
from edgeweave.runtime.cluster.layer_exec import LayerExecutor
from edgeweave.runtime.proto import cluster_pb2 as cpb
from edgeweave.runtime.proto import cluster_pb2_grpc as cpb_grpc
from edgeweave.runtime.recipe import package
from edgeweave.security import authed_channel


@pytest.fixture(scope="module")
def fused():
    """digits-cnn's fused block on a 2x2 grid with data reuse, as a gateway describes it."""
    plan = digits_plan(grid=(2, 2), reuse=True)
    part = plan.partition
    graph = digits()
    ex = TileExecutor(graph, part.fused_depth, tuple(part.grid), part.reuse)
    pkg = package(block_recipe(part.model, part.input_shape, [ex.block]),
                  module_weights(graph, ex.block.names))
    return part, ex, pkg


def stub(target: str) -> cpb_grpc.ClusterWorkerStub:
    return cpb_grpc.ClusterWorkerStub(authed_channel(target, token=TOKEN))


def setup_error(target: str, requests) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        stub(target).Setup(iter(list(requests)), timeout=30)
    return err.value


def test_worker_builds_the_plans_tiles_and_answers_tasks_like_the_reference(workers, fused):
    part, ex, pkg = fused
    target = workers.start("b")
    spec = cluster_spec(part, "b", regions_digest(ex.tiles))
    reply = stub(target).Setup(setup_stream(spec, pkg), timeout=60)
    assert reply.tasks == 4 and reply.digest == pkg.digest
    x = torch.randn(digits().input_shape)
    results = {}
    level0 = [t for t in ex.tiles if t.level == 0]
    tasks = []
    for k, tile in enumerate(level0):
        crop = x[:, :, tile.input.r0:tile.input.r1, tile.input.c0:tile.input.c1]
        msg = cpb.Task(task=k + 1, tile=tile.index, return_codec="none")
        msg.crop.CopyFrom(tensors.encode({"crop": crop}, ["crop"], "none")[0])
        tasks.append(msg)
    replies = list(stub(target).Work(iter(tasks), timeout=60))
    assert replies[0].hello and all(not r.error for r in replies[1:])
    # each tile met for the first time was warmed before its clock, and says how long; and
    # how long the device took to decode the crop and encode the result
    assert all(r.warm_ms > 0 and r.compute_ms > 0 for r in replies[1:])
    assert all(r.decode_ms > 0 and r.encode_ms > 0 for r in replies[1:])
    for r, tile in zip(replies[1:], level0, strict=True):
        results[tile.index] = tensors.decode([r.output])["output"]
        assert {s.name for s in r.shares} == set(ex.share_specs(tile))
    reference = run_tiles(digits(), ex.block, reuse_tiles(ex.block, (2, 2)), x)
    for index, out in results.items():
        region = ex.tiles[index].output
        assert torch.allclose(out, reference[:, :, region.r0:region.r1, region.c0:region.c1],
                              atol=1e-6)


@pytest.mark.parametrize(("model", "code", "says"), [
    ("/tmp/evil.py:factory", grpc.StatusCode.INVALID_ARGUMENT, "looks like a file path"),
    ("nosuchnet", grpc.StatusCode.FAILED_PRECONDITION, "has no model 'nosuchnet'"),
])
def test_worker_refuses_a_model_it_does_not_trust(workers, fused, model, code, says):
    part, ex, pkg = fused
    target = workers.start("b")
    spec = cluster_spec(part, "b", regions_digest(ex.tiles))
    evil = dataclasses.replace(pkg, recipe=dataclasses.replace(pkg.recipe, model=model))
    err = setup_error(target, setup_stream(spec, evil))
    assert err.code() == code and says in err.details()


def test_worker_refuses_a_plan_whose_regions_differ(workers, fused):
    part, ex, pkg = fused
    target = workers.start("b")
    other = regions_digest(reuse_tiles(ex.block, (2, 1)))
    err = setup_error(target, setup_stream(cluster_spec(part, "b", other), pkg))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "tile regions" in err.details() and "differ" in err.details()


def test_worker_refuses_weights_for_other_layers_and_a_grid_beyond_its_bounds(workers, fused):
    part, ex, pkg = fused
    target = workers.start("b")
    spec = cluster_spec(part, "b", regions_digest(ex.tiles))
    fewer = dataclasses.replace(pkg, recipe=dataclasses.replace(
        pkg.recipe, nodes=pkg.recipe.nodes[:-1]))
    err = setup_error(target, setup_stream(spec, fewer))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "recipe" in err.details()
    huge = cluster_spec(part, "b", "0" * 64)
    huge.grid_rows = 1000
    err = setup_error(target, setup_stream(huge, pkg))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "grid 1000x2" in err.details()
    many = cluster_spec(part, "b", "0" * 64)  # more fused blocks than a worker builds
    many.blocks.extend(cpb.FusedStage(depth=1, grid_rows=1, grid_cols=1) for _ in range(99))
    err = setup_error(target, setup_stream(many, pkg))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "99 fused blocks" in err.details()


def test_worker_checks_every_task_before_work(workers, fused):
    part, ex, pkg = fused
    target = workers.start("b")
    with pytest.raises(grpc.RpcError) as err:  # no plan yet
        list(stub(target).Work(iter([]), timeout=10))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    stub(target).Setup(setup_stream(cluster_spec(part, "b", regions_digest(ex.tiles)), pkg),
                       timeout=60)
    tile = ex.tiles[0]
    crop = torch.zeros(1, 1, tile.input.height + 1, tile.input.width)

    def task(k: int, **fields) -> cpb.Task:
        msg = cpb.Task(task=k, tile=fields.pop("tile", 0), **fields)
        msg.crop.CopyFrom(tensors.encode({"crop": crop}, ["crop"], "none")[0])
        return msg

    level1 = next(t.index for t in ex.tiles if t.level == 1)
    bad = [task(1),  # a crop one row too tall
           task(2, tile=99),  # no such tile
           task(3, tile=level1, reused_from=[level1]),  # not a neighbour it reuses from
           task(4, return_codec="topk:0.5"),  # not an activation codec
           task(5, block=1)]  # the plan has one fused block
    replies = list(stub(target).Work(iter(bad), timeout=30))[1:]
    assert [r.task for r in replies] == [1, 2, 3, 4, 5]
    assert all(r.error_code == "INVALID_ARGUMENT" for r in replies)
    h, w = tile.input.height, tile.input.width
    assert f"declared float32 [1, 1, {h + 1}, {w}]" in replies[0].error
    assert f"takes float32 [1, 1, {h}, {w}]" in replies[0].error
    assert "tiles 0 to 3" in replies[1].error
    assert "reuses the halo of tiles" in replies[2].error
    assert "fused blocks 0 to 0" in replies[4].error


def test_a_fresh_tile_module_runs_once_before_the_clock_and_not_again(fused, monkeypatch):
    """A worker warms a tile's module the first time it meets it (its first forward pays
    PyTorch's one-off setup, which the device's dilated clock must not count), and only then:
    the same tile again, or a variant already built, costs no extra run."""
    _, ex, _ = fused
    fresh = TileExecutor(digits(), ex.block, (2, 2), True)
    runs = []
    real = fresh.run
    monkeypatch.setattr(fresh, "run", lambda tile, values: runs.append(tile.index)
                        or real(tile, values))
    x = torch.randn(digits().input_shape)
    tile = fresh.tile(0)
    values = {"crop": x[:, :, tile.input.r0:tile.input.r1, tile.input.c0:tile.input.c1]}
    assert fresh.warm(tile, values) > 0.0  # the ms it took, reported apart from compute
    assert runs == [0]
    assert fresh.warm(tile, values) == 0.0 and fresh.warm(fresh.tile(0), values) == 0.0
    assert runs == [0]
    other = fresh.tile(next(t.index for t in fresh.tiles if t.level == 0 and t.index != 0))
    fresh.warm(other, {"crop": x[:, :, other.input.r0:other.input.r1,
                                 other.input.c0:other.input.c1]})
    assert runs == [0, other.index]


def test_worker_keeps_rows_between_split_layers_and_checks_what_it_is_sent(workers):
    """Resident rows: a layer-wise worker keeps its rows of one split layer for the next,
    reads the halo it is sent around them, returns only the rows asked back, and refuses a
    task that names rows it never kept, rows outside its part, or a frame it holds nothing
    of."""
    plan = digits_plan("layer-wise", size=3, layer_split="resident")
    part, graph = plan.partition, digits()
    i, device = next((k, d) for k, la in enumerate(part.layers) if la.resident
                     for d in la.devices if d != part.gateway)
    mine = layer_specs(part, device)
    target = workers.start(device)
    stub(target).Setup(setup_stream(cluster_spec(part, device), package(
        layer_recipe(part.model, part.input_shape, mine), layer_weights(graph, mine))),
        timeout=60)
    hop = plan_hops(graph, part)[i]
    assert hop is not None
    before, after = (unit_tiles(graph, mine[k].split()) for k in (i - 1, i))
    p0, p1 = part.layers[i - 1].devices.index(device), part.layers[i].devices.index(device)
    # the whole map before and after, computed here part by part (every device's weights)
    every = [dataclasses.replace(s, parts=tuple(range(len(la.devices))))
             for s, la in zip(mine, part.layers, strict=True)]
    local = LayerExecutor(graph, every, dict(layer_weights(graph, every)))
    assert i == 1 and graph.node(part.layers[0].unit[0]).inputs[0] in graph.placeholders
    source = torch.randn(graph.input_shape)  # the first split layer reads the frame
    mid = halo.recompute(graph, local, every, 0, 0, source)
    want = halo.recompute(graph, local, every, 1, 1, mid)
    r0 = before[p0].input

    def first(k: int, frame: str, back: list[int]) -> cpb.Task:
        msg = cpb.Task(task=k, frame=frame, tile=p0, layer=i - 1, return_codec="none",
                       keep=True, back=back)
        msg.crop.CopyFrom(tensors.encode({"crop": source[:, :, r0.r0:r0.r1, r0.c0:r0.c1]},
                                         ["crop"], "none")[0])
        return msg

    keep = hop.keep[p1]
    assert keep is not None
    t = after[p1].input
    halo_values = {name: mid[:, :, a:b] for name, (a, b) in
                   (("above", (t.r0, keep[0])), ("below", (keep[1], t.r1))) if b > a}

    def second(k: int, frame: str, kept: tuple[int, int]) -> cpb.Task:
        msg = cpb.Task(task=k, frame=frame, tile=p1, layer=i, return_codec="none",
                       resident=True, keep_r0=kept[0], keep_r1=kept[1])
        msg.pieces.extend(tensors.encode(halo_values, list(halo_values), "none"))
        return msg

    out_rows = before[p0].output
    edges = [x for r in hop.back[p0] for x in r]
    tasks = [first(1, "f1", edges), second(2, "f1", keep),
             second(3, "f2", keep),  # nothing kept for f2
             first(4, "f3", [out_rows.r0, out_rows.r1 + 1]),  # rows beyond its part
             first(5, "f4", []), second(6, "f4", (keep[0] - 1, keep[1]))]
    replies = list(stub(target).Work(iter(tasks), timeout=60))[1:]
    assert [r.task for r in replies] == [1, 2, 3, 4, 5, 6]
    got = tensors.decode([replies[0].output])["output"]
    assert got.shape[2] == sum(b - a for a, b in hop.back[p0])  # only the edges came back
    assert torch.allclose(got[:, :, :hop.back[p0][0][1] - hop.back[p0][0][0]],
                          mid[:, :, hop.back[p0][0][0]:hop.back[p0][0][1]], atol=1e-6)
    o = after[p1].output
    assert not replies[1].error
    assert torch.allclose(tensors.decode([replies[1].output])["output"],
                          want[:, :, o.r0:o.r1, o.c0:o.c1], atol=1e-5)
    assert replies[2].error_code == "INVALID_ARGUMENT" and "kept no rows" in replies[2].error
    assert replies[3].error_code == "INVALID_ARGUMENT" and "back rows" in replies[3].error
    # a kept part no other part reads returns no rows at all
    assert not replies[4].error and tensors.decode([replies[4].output])["output"].shape[2] == 0
    assert replies[5].error_code == "INVALID_ARGUMENT"


def test_worker_computes_a_part_step_by_step_and_checks_each_step(workers):
    """Overlapped resident rows (graph.overlap): a worker computes its part of a split layer
    as an interior step, from rows it kept alone, then its edge steps with the halo sent, and
    keeps each step's rows for the next layer; it refuses a step whose rows leave its part and
    one that reads kept rows no step has computed yet."""
    plan = digits_plan("layer-wise", size=3, layer_split="resident")
    part, graph = plan.partition, digits()
    run = next(iter(steps.plan_runs(graph, part).values()))
    i = run.first + 1
    device = next(d for d in part.layers[i].devices if d != part.gateway)
    mine = layer_specs(part, device)
    target = workers.start(device)
    stub(target).Setup(setup_stream(cluster_spec(part, device), package(
        layer_recipe(part.model, part.input_shape, mine), layer_weights(graph, mine))),
        timeout=60)
    every = [dataclasses.replace(s, parts=tuple(range(len(la.devices))))
             for s, la in zip(mine, part.layers, strict=True)]
    local = LayerExecutor(graph, every, dict(layer_weights(graph, every)))
    source = torch.randn(graph.input_shape)
    mid = halo.recompute(graph, local, every, run.first, run.first, source)
    want = halo.recompute(graph, local, every, i, i, mid)
    (first,) = [s for s in run.steps if s.split == run.first
                and part.devices[s.device] == device]
    later = [s for s in run.steps if s.split == i and part.devices[s.device] == device]
    # the part cut: an interior from kept rows alone, then edges that read halo
    assert len(later) >= 2 and later[0].halo == () and all(s.halo for s in later[1:])

    def task(k: int, step, frame: str = "f", rows=None) -> cpb.Task:
        rows = rows or step.rows
        msg = cpb.Task(task=k, frame=frame, tile=step.part, layer=step.split,
                       return_codec="none", out_r0=rows[0], out_r1=rows[1], keep=step.kept)
        msg.back.extend(halo.flat(step.back) if step.kept else [])
        r = step.tile.input
        if step.keep is None:
            msg.crop.CopyFrom(tensors.encode({"crop": source[:, :, r.r0:r.r1, r.c0:r.c1]},
                                             ["crop"], "none")[0])
            return msg
        msg.resident, msg.keep_r0, msg.keep_r1 = True, step.keep[0], step.keep[1]
        pieces = {name: mid[:, :, a:b, r.c0:r.c1] for name, (a, b) in
                  (("above", (r.r0, step.keep[0])), ("below", (step.keep[1], r.r1)))
                  if b > a}
        msg.pieces.extend(tensors.encode(pieces, list(pieces), "none"))
        return msg

    whole = unit_tiles(graph, mine[i].split())[part.layers[i].devices.index(device)].output
    # frame g: only the first row of the first layer's part computed (a step of it), so the
    # next layer's interior reads kept rows no step computed
    block = chain_block(graph, part.layers[run.first].unit)
    head = tiles_for_bounds(block, (first.rows[0], first.rows[0] + 1),
                           (0, first.tile.output.c1))[0]
    partial = cpb.Task(task=10, frame="g", tile=first.part, layer=run.first,
                       return_codec="none", out_r0=head.output.r0, out_r1=head.output.r1,
                       keep=True)
    r = head.input
    partial.crop.CopyFrom(tensors.encode({"crop": source[:, :, r.r0:r.r1, r.c0:r.c1]},
                                         ["crop"], "none")[0])
    tasks = [task(1, first), *(task(2 + k, s) for k, s in enumerate(later)),
             task(8, later[0], rows=(whole.r0, whole.r1 + 1)), partial, task(11, later[0], "g")]
    replies = list(stub(target).Work(iter(tasks), timeout=60))[1:]
    assert [r.task for r in replies] == [1, *range(2, 2 + len(later)), 8, 10, 11]
    n = 1 + len(later)
    assert not any(r.error for r in replies[:n]), [r.error for r in replies[:n]]
    for step, reply in zip(later, replies[1:n], strict=True):
        got = tensors.decode([reply.output])["output"]
        at = 0
        for a, b in step.back:
            assert torch.allclose(got[:, :, at:at + b - a], want[:, :, a:b], atol=1e-5)
            at += b - a
        assert at == got.shape[2] and at == step.rows[1] - step.rows[0]  # the last layer
    assert replies[n].error_code == "INVALID_ARGUMENT" and "step rows" in replies[n].error
    assert not replies[n + 1].error
    assert replies[n + 2].error_code == "INVALID_ARGUMENT"
    assert "not all among" in replies[n + 2].error
