"""The gateway over real gRPC (workers in this process for speed; test_cluster_processes.py
runs them as processes): every frame answered and equal to the single-device model under both
schedulers with several data sources, fused tiles with and without data reuse, layer-wise; a
device stopped mid-frame, a device joining late, no device at all."""

from __future__ import annotations

import time

import pytest
import torch
from cluster_helpers import TOKEN, cluster_fleet, digits, digits_plan

from edgeweave.errors import EdgeWeaveError
from edgeweave.graph import capture_spec
from edgeweave.plan.multidevice import plan_cluster
from edgeweave.profile import analytic_profile
from edgeweave.runtime.cluster import halo, layers, steps
from edgeweave.runtime.cluster.gateway import GATEWAY_LOCAL, TileGateway
from edgeweave.runtime.cluster.layers import LayerGateway


def frames(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(digits().input_shape, generator=g) for _ in range(n)]


def reference(x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return digits().module(x)


def run(gw, xs, sources):
    futures = [gw.submit(x, s) for x, s in zip(xs, sources, strict=True)]
    return [f.result(timeout=60) for f in futures]


def layer_frames(workers, plan, devices, n, **options):
    """``n`` frames through a layer-wise gateway with a worker for each of ``devices``."""
    gw = LayerGateway(digits(), plan, token=TOKEN, **options)
    try:
        for device in devices:
            gw.join(device, workers.start(device))
        xs = frames(n)
        return xs, run(gw, xs, [None] * n)
    finally:
        gw.close()


@pytest.mark.parametrize("scheduler", ["stealing", "sharing", "static"])
@pytest.mark.parametrize("reuse", [True, False])
def test_every_frame_from_several_sources_equals_the_single_device_output(
        workers, scheduler, reuse):
    """With a prefetch and devices of unlike pace (b said 3x slower): whoever takes what, every
    level-1 tile goes out only once the level-0 tiles it reuses are back."""
    plan = digits_plan(grid=(2, 3), reuse=reuse)
    gw = TileGateway(digits(), plan, scheduler=scheduler, token=TOKEN, prefetch=1,
                     dilations={"a": 1.0, "b": 3.0, "c": 1.0})
    try:
        for device in "abc":
            gw.join(device, workers.start(device))
        xs = frames(6)
        results = run(gw, xs, ["a", "b", "c"] * 2)
    finally:
        gw.close()
    for x, r in zip(xs, results, strict=True):
        assert torch.allclose(r.output, reference(x), atol=1e-5)
        assert sum(r.tasks.values()) == 6 and r.rerun == 0
        # every tile's timing, once, on the device that ran it
        assert sorted(t.tile for t in r.timeline) == list(range(6))
        assert {t.device for t in r.timeline} == set(r.tasks)
        assert all(0 <= t.sent_ms <= t.done_ms <= r.cluster_ms for t in r.timeline)
        timing = {t.tile: t for t in r.timeline}
        for tile, sources in gw.sources_of.items():
            assert all(timing[tile].sent_ms >= timing[k].done_ms for k in sources)
        assert r.home == "a"  # gathered, and the rest run, at the gateway
    if scheduler == "static":  # the plan's assignment, every frame
        planned = {t.index: t.device for t in plan.partition.tiles}
        want = {d: list(planned.values()).count(d) for d in set(planned.values())}
        assert all(r.tasks == want for r in results)


@pytest.mark.parametrize("split", ["biased", "grid", "resident"])
def test_layer_wise_across_workers_equals_the_single_device_output(workers, split):
    """MoDNN's speed-biased rows on three devices; the 2-D grid on four rpi4 (2x2: every
    convolution cut on both axes, halo on both); speed-biased rows kept on the devices between
    layers (only halo rows cross). The gateway ``a`` has no worker: it computes its own parts
    in-process (run_cluster starts none for it)."""
    names = "abc" if split == "biased" else "abcd"
    plan = digits_plan("layer-wise", size=len(names), layer_split=split)
    part = plan.partition
    assert part.layer_split == split
    assert len(part.layers) >= 2 and {d for la in part.layers for d in la.devices} == set(names)
    rows = [la for la in part.layers if la.kind == "rows"]
    assert rows and all(len(la.col_bounds) == (3 if split == "grid" else 2) for la in rows)
    assert any(la.resident for la in rows) == (split == "resident")
    xs, results = layer_frames(workers, plan, names[1:], 3)
    for x, r in zip(xs, results, strict=True):
        assert torch.allclose(r.output, reference(x), atol=1e-5)
        assert set(r.tasks) == set(names) and r.medium_bytes > 0 and r.delivery_ms > 0
        # every shipped part's runtime cost and bytes (one part per device per layer: none
        # queued), so a calibration prices the runtime's cost per MiB of a layer-wise plan
        # too; the gateway's own parts run in-process
        shipped = sum(n for d, n in r.tasks.items() if d != "a")
        assert len(r.task_overhead_ms) == len(r.task_overhead_bytes) == shipped
        assert all(ms >= 0 for ms in r.task_overhead_ms) and all(r.task_overhead_bytes)
        # of each, what the device spent decoding and encoding: a part, never more
        assert len(r.task_codec_ms) == shipped
        assert all(0 < c <= ms for c, ms in zip(r.task_codec_ms, r.task_overhead_ms,
                                                   strict=True))
        assert r.rerun == 0 and r.tasks["a"] >= 1  # no part fell back to the gateway


def test_resident_rows_a_part_no_neighbour_reads_return_nothing(workers):
    """Three of four rpi4: the first device's rows of the first layer are read by no other
    part of the next (its neighbour's input starts below them), so it keeps them all and
    returns none; every frame still equals the single-device output."""
    plan = digits_plan("layer-wise", size=4, layer_split="resident", layer_devices=3)
    part = plan.partition
    first = part.layers[0]
    assert part.layers[1].resident and 0 in first.out_bytes  # nothing crosses back
    xs, results = layer_frames(workers, plan, sorted(
        {d for la in part.layers for d in la.devices} - {part.gateway}), 2)
    for x, r in zip(xs, results, strict=True):
        assert torch.allclose(r.output, reference(x), atol=1e-5) and r.rerun == 0


@pytest.mark.parametrize("size", [3, 4])
def test_overlapped_steps_across_workers_equal_the_single_device_output(workers, size):
    """Overlapped resident rows (graph.overlap): each device computes its interior rows while
    its edges' halo crosses, one step per task; every frame equals the single-device output,
    every device computes, and more tasks than split parts ran (the parts were cut)."""
    plan = digits_plan("layer-wise", size=size)  # the default split: overlap
    part = plan.partition
    assert part.layer_split == "overlap" and any(la.steps for la in part.layers)
    names = sorted({d for la in part.layers for d in la.devices})
    gw_runs = steps.plan_runs(digits(), part)
    assert gw_runs and all(r.last > r.first for r in gw_runs.values())
    xs, results = layer_frames(workers, plan, [n for n in names if n != part.gateway], 3)
    parts = sum(len(la.devices) for la in part.layers)
    # a step is a task: more of them than split parts where the plan cut a part (four
    # devices on digits' 4 pooled rows leave each one row, nothing to cut)
    shipped = sum(max(len(la.steps), len(la.devices)) for la in part.layers)
    assert shipped > parts or size == 4
    for x, r in zip(xs, results, strict=True):
        assert torch.allclose(r.output, reference(x), atol=1e-5)
        assert r.rerun == 0 and set(r.tasks) == set(names) and r.medium_bytes > 0
        assert sum(r.tasks.values()) == shipped
        # the shipped steps that did not queue: each one's runtime cost, the device's
        # decoding and encoding a part of it
        assert r.task_codec_ms and len(r.task_codec_ms) == len(r.task_overhead_ms)
        assert all(0 < c <= ms for c, ms in zip(r.task_codec_ms, r.task_overhead_ms,
                                                   strict=True))


def test_the_gateway_cuts_the_parts_the_plan_cut_and_refuses_other_steps():
    """The plan decides which parts are cut into interior and edges (plan.overlap_cost); the
    gateway follows it, and refuses a plan whose steps its split layers do not give."""
    plan = digits_plan("layer-wise", size=3)
    part = plan.partition
    runs = steps.plan_runs(digits(), part)
    made = [(s.split, s.part, s.rows) for r in runs.values() for s in r.steps]
    assert made == [(i, s.part, tuple(s.rows)) for i, la in enumerate(part.layers)
                    for s in la.steps]
    # the same plan with one cut part left whole: the gateway's steps follow
    i = next(k for k, la in enumerate(part.layers) if len(la.steps) > len(la.devices))
    la = part.layers[i]
    p = next(q for q in range(len(la.devices)) if sum(s.part == q for s in la.steps) > 1)
    mine = [s for s in la.steps if s.part == p]
    rows = (min(s.rows[0] for s in mine), max(s.rows[1] for s in mine))
    kept = [s for s in la.steps if s.part != p]
    at = next(k for k, s in enumerate(la.steps) if s.part == p)
    whole = mine[0].model_copy(update={"rows": rows})
    uncut = part.model_copy(update={"layers": [
        la.model_copy(update={"steps": [*kept[:at], whole, *kept[at:]]}) if k == i else x
        for k, x in enumerate(part.layers)]})
    edited = {(s.split, s.part): s.rows for r in steps.plan_runs(digits(), uncut).values()
              for s in r.steps if s.split == i}
    assert edited[(i, p)] == rows
    # rows the geometry does not give
    bad = part.model_copy(update={"layers": [
        x.model_copy(update={"steps": [x.steps[0].model_copy(update={"rows": (
            x.steps[0].rows[0], x.steps[0].rows[1] + 1)}),
                                       *x.steps[1:]]}) if k == i else x
        for k, x in enumerate(part.layers)]})
    with pytest.raises(EdgeWeaveError, match="plan it again"):
        steps.plan_runs(digits(), bad)


STRIDED_NET = """from torch import nn
def factory():
    return nn.Sequential(nn.Conv2d(16, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 1, 1),
                         nn.AvgPool2d(1, 2),
                         nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(64 * 32 * 32, 3)), (1, 16, 64, 64)
"""


def file_model_frames(workers, tmp_path, source: str, split: str):
    """Two frames through a layer-wise plan on 3 of 4 devices of a model the workers build
    from the operator's file (``source``); the plan, and each frame's result and the
    model's own output."""
    path = tmp_path / "net.py"
    path.write_text(source)
    graph = capture_spec(f"{path}:factory")
    fleet = cluster_fleet(size=4)
    plan = plan_cluster(graph, analytic_profile(graph, fleet), fleet, methods=("layer-wise",),
                        layer_split=split, layer_devices=3, model_spec=graph.spec,
                        devices=list(fleet.cluster().devices))
    part = plan.partition
    gw = LayerGateway(graph, plan, token=TOKEN)
    try:
        for device in {d for la in part.layers for d in la.devices} - {part.gateway}:
            gw.join(device, workers.start(device, models=(f"{path}:factory",)))
        xs = [torch.randn(graph.input_shape) for _ in range(2)]
        results = run(gw, xs, [None] * 2)
    finally:
        gw.close()
    with torch.no_grad():
        return plan, [(r, graph.module(x)) for x, r in zip(xs, results, strict=True)]


def test_resident_rows_where_a_window_leaves_the_last_column_out(workers, tmp_path):
    """A stride-2 pool of kernel 1 on 64 columns reads columns 0 to 62 only: the parts that
    read the rows kept on their devices take those columns of their band and halo (the pool
    before it runs in the convolution's unit). The workers rebuild the model from the
    operator's file."""
    plan, results = file_model_frames(workers, tmp_path, STRIDED_NET, "resident")
    part = plan.partition
    assert [la.resident for la in part.layers if la.kind == "rows"] == [False, True, True]
    for r, want in results:
        assert torch.allclose(r.output, want, atol=1e-5) and r.rerun == 0


RESIDUAL_NET = """from torch import nn
class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.down is None else self.down(x)))
def factory():
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), Block(16, 16, 1),
                         Block(16, 32, 2), nn.Flatten(), nn.Linear(32 * 16 * 16, 4)), \
        (1, 3, 32, 32)
"""


@pytest.mark.parametrize("split", ["resident", "overlap"])
def test_residual_blocks_split_by_rows_across_workers_equal_the_model(workers, tmp_path,
                                                                      split):
    """A residual block is one layer-wise unit (both branches and the add on each device's
    rows, graph.layerwise.residual_blocks), so the rows stay on the devices from block to
    block, the stride-2 block with its downsampling shortcut too; every frame equals the
    model, built by the workers from the operator's file."""
    plan, results = file_model_frames(workers, tmp_path, RESIDUAL_NET, split)
    blocks = [la for la in plan.partition.layers if any("add" in n for n in la.unit)]
    assert len(blocks) == 2 and all(la.resident for la in blocks)
    for r, want in results:
        assert torch.allclose(r.output, want, atol=1e-5) and r.rerun == 0
        assert len(r.tasks) == 3


def test_a_device_stopped_mid_frame_loses_no_frame(workers):
    """The static plan (the harder case: the plan pinned tiles to the device that stops)."""
    plan = digits_plan(grid=(2, 2), reuse=True)
    gw = TileGateway(digits(), plan, scheduler="static", token=TOKEN)
    try:
        for device in "abc":
            gw.join(device, workers.start(device, dilation=400.0))
        xs = frames(3)
        futures = [gw.submit(x, "a") for x in xs]
        busy = max("abc", key=gw.pool.held)
        time.sleep(0.1)
        workers.stop(busy)
        results = [f.result(timeout=60) for f in futures]
    finally:
        gw.close()
    assert sum(r.rerun for r in results) >= 1
    for x, r in zip(xs, results, strict=True):
        assert torch.allclose(r.output, reference(x), atol=1e-5)
        assert busy not in r.tasks or sum(r.tasks.values()) == 4


@pytest.mark.parametrize("split", ["resident", "overlap"])
def test_a_device_that_kept_rows_stopped_mid_frame_loses_no_frame(workers, monkeypatch, split):
    """Resident rows: a device stops once it has computed (and kept) rows, so the gateway
    lacks the rows its next parts read and recomputes the run of resident layers from its
    start (overlapped: from the run's input, which it holds); every frame is still answered,
    equal to the single-device model."""
    plan = digits_plan("layer-wise", size=3, layer_split=split)
    part = plan.partition
    assert part.layer_split == split
    victim = next(d for la in part.layers if la.resident for d in la.devices
                  if d != part.gateway)
    starts = []

    def recompute(*args):
        starts.append(args[3:5])
        return halo.recompute(*args)

    monkeypatch.setattr(layers if split == "resident" else steps, "recompute", recompute)
    gw = LayerGateway(digits(), plan, token=TOKEN)
    try:
        for device in "bc":
            gw.join(device, workers.start(device, dilation=2000.0))
        xs = frames(3)
        futures = [gw.submit(x) for x in xs]
        deadline = time.monotonic() + 30
        while workers.services[victim].stats["tasks"] < 1 and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(0.05)  # its edge rows reach the gateway; it computes its next part
        workers.stop(victim)
        results = [f.result(timeout=60) for f in futures]
    finally:
        gw.close()
    assert starts and all(first < lost for first, lost in starts)
    assert sum(r.rerun for r in results) >= 1 and victim not in results[-1].tasks
    for x, r in zip(xs, results, strict=True):
        assert torch.allclose(r.output, reference(x), atol=1e-5)


def test_a_device_joining_late_starts_stealing(workers):
    plan = digits_plan(grid=(2, 2), reuse=False)
    gw = TileGateway(digits(), plan, scheduler="stealing", token=TOKEN)
    try:
        gw.join("a", workers.start("a", dilation=300.0))
        xs = frames(4)
        futures = [gw.submit(x, "a") for x in xs]
        late = workers.start("c")
        gw.join("c", late)
        assert gw.scheduler.pending() > 0  # still work to steal when it asked
        results = [f.result(timeout=60) for f in futures]
    finally:
        gw.close()
    assert sum(r.tasks.get("c", 0) for r in results) >= 1
    assert sum(r.stolen for r in results) >= 1
    for x, r in zip(xs, results, strict=True):
        assert torch.allclose(r.output, reference(x), atol=1e-5)


@pytest.mark.parametrize("scheduler", ["stealing", "sharing"])
def test_stealing_gathers_a_frame_at_its_source_and_sharing_at_the_gateway(workers, scheduler):
    """Frames from device b, only b working: under stealing gathered at the source b keeps
    its frame, so nothing crosses the medium; under sharing every tile goes b -> gateway
    a -> b and its result back to a (DeepThings' centralized queue)."""
    plan = digits_plan(grid=(2, 2), reuse=True)
    gw = TileGateway(digits(), plan, scheduler=scheduler, token=TOKEN, gather_at_source=True)
    try:
        gw.join("b", workers.start("b"))
        xs = frames(2)
        results = run(gw, xs, ["b", "b"])
    finally:
        gw.close()
    for x, r in zip(xs, results, strict=True):
        assert r.tasks == {"b": 4} and torch.allclose(r.output, reference(x), atol=1e-5)
        assert (r.medium_bytes == 0) == (scheduler == "stealing")
        assert r.home == ("b" if scheduler == "stealing" else "a")
        # the runtime's cost per task, measured for tasks that did not queue on the device
        # (stealing hands b one at a time; sharing pushes every ready tile at once)
        assert all(v >= 0 for v in r.task_overhead_ms)
        assert len(r.task_overhead_bytes) == len(r.task_overhead_ms)
        assert all(b > 0 for b in r.task_overhead_bytes)
        assert len(r.task_overhead_ms) == 4 or scheduler == "sharing"
        assert all(0 < c <= ms for c, ms in zip(r.task_codec_ms, r.task_overhead_ms,
                                                   strict=True))
    assert any(r.task_overhead_ms for r in results)


def test_with_no_device_left_the_gateway_computes_the_tiles_itself():
    plan = digits_plan(grid=(2, 2), reuse=True)
    gw = TileGateway(digits(), plan, token=TOKEN)
    try:
        xs = frames(2)
        results = run(gw, xs, ["a", "a"])
    finally:
        gw.close()
    for x, r in zip(xs, results, strict=True):
        assert r.tasks == {GATEWAY_LOCAL: 4}
        assert torch.allclose(r.output, reference(x), atol=1e-5)


def test_gateway_refuses_a_plan_whose_tiles_were_altered():
    plan = digits_plan(grid=(2, 2))
    part = plan.partition
    first = part.tiles[0].model_copy(update={"input": type(part.tiles[0].input)(0, 1, 0, 1)})
    altered = plan.model_copy(update={"partition": part.model_copy(
        update={"tiles": [first, *part.tiles[1:]]})})
    with pytest.raises(EdgeWeaveError, match="the plan's tiles differ"):
        TileGateway(digits(), altered, token=TOKEN)


def test_bad_frames_and_sources_are_named():
    gw = TileGateway(digits(), digits_plan(grid=(2, 2)), token=TOKEN)
    try:
        with pytest.raises(EdgeWeaveError, match="data source 'zz'"):
            gw.submit(frames(1)[0], "zz")
        with pytest.raises(EdgeWeaveError, match=r"frame has shape \[1, 1, 4, 4\]"):
            gw.submit(torch.zeros(1, 1, 4, 4))
        with pytest.raises(EdgeWeaveError, match="device 'zz' is not in the plan"):
            gw.join("zz", "127.0.0.1:1")
    finally:
        gw.close()


def test_a_device_that_answers_nothing_in_time_is_cut_off_and_its_tiles_rerun(workers):
    """A worker holding tasks and answering none (hung, or stalling on purpose) is waited for
    at most the task timeout; its tiles run elsewhere and the frame is answered correctly."""
    plan = digits_plan(grid=(2, 2), reuse=False)
    gw = TileGateway(digits(), plan, scheduler="stealing", token=TOKEN, task_timeout_s=0.5)
    try:
        gw.join("b", workers.start("b", dilation=100_000.0))  # a minute per tile
        xs = frames(2)
        futures = [gw.submit(x, "a") for x in xs]
        deadline = time.monotonic() + 30
        while gw.pool.held("b") == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gw.pool.held("b") > 0  # b took a tile and sits on it
        gw.join("a", workers.start("a"))
        results = [f.result(timeout=60) for f in futures]
        assert "b" not in gw.pool.alive()
    finally:
        gw.close()
    assert sum(r.rerun for r in results) >= 1
    for x, r in zip(xs, results, strict=True):
        assert torch.allclose(r.output, reference(x), atol=1e-5)
        assert "b" not in r.tasks


def test_sharing_routes_every_tile_through_the_gateway(workers):
    """DeepThings' work sharing, no reuse, frames from b and only b working: each crop
    crosses the medium twice (b to gateway a, a back to b) and each result once (to a)."""
    plan = digits_plan(grid=(2, 2), reuse=False)
    gw = TileGateway(digits(), plan, scheduler="sharing", token=TOKEN)
    try:
        gw.join("b", workers.start("b"))
        xs = frames(2)
        results = run(gw, xs, ["b", "b"])
        crops = sum(t.input.area * 4 for t in gw.stages.blocks[0].tiles)  # 1 channel, float32
        out = gw.block.output
        results_bytes = out.shape[0] * out.map_area * 4
    finally:
        gw.close()
    for x, r in zip(xs, results, strict=True):
        assert torch.allclose(r.output, reference(x), atol=1e-5)
        assert r.home == "a" and r.tasks == {"b": 4}
        assert r.medium_bytes == 2 * crops + results_bytes


@pytest.mark.parametrize("scheduler", ["stealing", "sharing"])
def test_several_fused_blocks_answer_every_frame_even_when_a_device_dies(workers, scheduler):
    """DeeperThings: two fused blocks (2x2 with data reuse, then 1x3 cut from the stitched
    map) on three workers, every device a data source; one worker is stopped mid-run (slowed
    so it holds tasks): every frame is still answered and equal to the single-device
    output."""
    plan = digits_plan(blocks=[(2, (2, 2), True), (3, (1, 3), False)])
    part = plan.partition
    assert part.describe_blocks() == \
        "fused depth 2, grid 2x2, reuse | fused depth 3, grid 1x3"
    assert [t.index for t in part.all_tiles()] == list(range(7)) and part.tiles == []
    gw = TileGateway(digits(), plan, scheduler=scheduler, token=TOKEN, prefetch=1)
    try:
        for device, slow in (("a", 1.0), ("b", 400.0), ("c", 1.0)):
            gw.join(device, workers.start(device, dilation=slow))
        xs = frames(6, seed=3)
        futures = [gw.submit(x, s) for x, s in zip(xs, "abcabc", strict=True)]
        time.sleep(0.1)
        workers.stop("b")
        results = [f.result(timeout=60) for f in futures]
    finally:
        gw.close()
    assert sum(r.rerun for r in results) >= 1  # b held tasks when it stopped
    for x, r in zip(xs, results, strict=True):
        assert torch.allclose(r.output, reference(x), atol=1e-5)
        assert sum(r.tasks.values()) == 7 and sorted(t.tile for t in r.timeline) == \
            list(range(7))
        second = [t for t in r.timeline if t.tile >= 4]  # cut from the stitched first block
        assert min(t.sent_ms for t in second) >= max(t.done_ms for t in r.timeline
                                                     if t.tile < 4)
        timing = {t.tile: t for t in r.timeline}
        assert gw.sources_of  # level-1 tiles of the first block wait for their neighbours
        for tile, sources in gw.sources_of.items():
            assert all(timing[tile].sent_ms >= timing[k].done_ms for k in sources)


def test_the_gateways_own_layers_between_split_ones_are_dilated_as_one_stretch(
        workers, tmp_path, monkeypatch):
    """MoDNN's biased split leaves a residual block's add and activation to the gateway.
    Held after every one of them, the next began from cold caches: each run of the gateway's
    own layers between split layers is dilated once."""
    from edgeweave.runtime.cluster.prefix import PrefixRun

    stretches: list[object] = []
    hold = PrefixRun._hold

    def counted(self, stretch):
        if stretch is not None:
            stretches.append(stretch)
        return hold(self, stretch)

    monkeypatch.setattr(PrefixRun, "_hold", counted)
    plan, results = file_model_frames(workers, tmp_path, RESIDUAL_NET, "biased")
    for r, want in results:
        assert torch.allclose(r.output, want, atol=1e-5) and r.rerun == 0
    part = plan.partition
    split = {n for la in part.layers for n in la.unit}
    order = list(part.prefix_nodes)
    runs, own = 0, 0
    for before, name in zip([None, *order[:-1]], order, strict=True):
        if name not in split:
            own += 1
            runs += before is None or before in split
    assert own > runs > 0  # the adds and their activations, in runs of two
    assert len(stretches) == runs * len(results)


@pytest.mark.parametrize("method", ["layer-wise", "fused-tiles"])
def test_maps_compressed_on_the_medium_move_fewer_bytes_and_the_same_output(workers, method):
    """``fp16+zstd``: the maps that cross (layer-wise halo and gathers, tile results) are
    compressed after the fp16 cast; every frame is the model's output, as with fp16. Layer-wise
    gathers whole maps, on fewer bytes; digits-cnn's tile results are a few hundred bytes each,
    too few for zstd's frame header to pay (the bytes are charged as sent either way)."""
    names = "abcd"
    moved = {}
    for codec in ("fp16", "fp16+zstd"):
        plan = digits_plan(method, size=4, result_codec=codec, layer_devices=4,
                           grid=(2, 2) if method == "fused-tiles" else None)
        assert plan.partition.result_codec == codec
        if method == "layer-wise":
            xs, results = layer_frames(workers, plan, names[1:], 2)
        else:
            gw = TileGateway(digits(), plan, scheduler="stealing", token=TOKEN)
            try:
                for device in names:
                    gw.join(device, workers.start(device))
                xs = frames(2)
                results = run(gw, xs, [None] * 2)
            finally:
                gw.close()
        for x, r in zip(xs, results, strict=True):
            assert torch.allclose(r.output, reference(x), atol=5e-2) and r.rerun == 0
        moved[codec] = [r.medium_bytes for r in results]
    if method == "layer-wise":
        assert all(z < f for z, f in zip(moved["fp16+zstd"], moved["fp16"], strict=True)), moved


@pytest.mark.parametrize(("decode", "encode", "counted"), [
    (1.5, 2.0, 3.5), (-5.0, 1.0, 0.0), (float("nan"), 1.0, 0.0), (float("inf"), 0.0, 3.6e6)])
def test_a_workers_codec_claim_is_bounded(decode, encode, counted):
    """A worker's decode and encode ms are a peer's figures: a negative or NaN claim counts
    as nothing and an endless one as an hour in the run's statistics."""
    from edgeweave.runtime.cluster.frames import codec_ms
    from edgeweave.runtime.proto import cluster_pb2 as cpb

    assert codec_ms(cpb.TaskResult(decode_ms=decode, encode_ms=encode)) == counted
