"""How the cluster is emulated on one host: slow motion (every dilation and the medium slowed by
one factor, the times reported divided back), the devices that get a worker, and the tasks a
loaded host could not emulate faithfully, counted by the worker."""

from __future__ import annotations

import time

import pytest
from cluster_helpers import digits_plan

from edgeweave.errors import EdgeWeaveError
from edgeweave.runtime import dilation
from edgeweave.runtime.cluster.cluster_run import ClusterRun, worker_devices, working_devices
from edgeweave.runtime.cluster.gateway import FrameResult
from edgeweave.runtime.cluster.medium import SharedMedium
from edgeweave.runtime.cluster.session import slow_motion
from edgeweave.runtime.cluster.worker import WorkerConfig, WorkerService
from edgeweave.runtime.proto import cluster_pb2 as cpb


def test_slow_motion_leaves_room_for_the_wait_for_a_core():
    # idle host: real time; 8 runnable on 2 cores: a burst takes ~4.5x its CPU time, and the
    # rpi4's 8x stretch needs 3x that (13.5), so the run goes 2x slower
    assert slow_motion({"pi4": 8.0, "pi3": 24.0}, load=0.0, cores=2) == 1.0
    assert slow_motion({"pi4": 8.0, "pi3": 24.0}, load=8.0, cores=2) == 2.0
    assert slow_motion({"pi4": 2.0}, load=8.0, cores=2) == 7.0


def test_a_slowed_medium_takes_time_scale_times_longer():
    medium = SharedMedium(mbps=8.0, rtt_ms=0.0, time_scale=2.0)  # 100 kB: 0.1 s x 2
    start = time.monotonic()
    msg = cpb.Task()
    medium.send(msg, 100_000, "gw", "a")
    assert msg.deliver_at_ns / 1e9 - start == pytest.approx(0.2, abs=0.03)


def test_a_slow_motion_run_reports_the_devices_own_time():
    plan = digits_plan(grid=(2, 2), reuse=False)
    frames = [FrameResult(k, "a", None, 300.0 + k, 150.0, 150.0 + k, 10, {"a": 4},
                          {"a": 120.0}, 0, 0, delivery_ms=30.0) for k in range(3)]
    run = ClusterRun(plan, "stealing", ["a"], {"a": 8.0}, frames, wall_s=0.9,
                     workers={"a": {"tasks": 12.0, "overrun_tasks": 0.0}}, time_scale=3.0)
    doc = run.to_json()
    assert run.latency_ms == pytest.approx(301.0 / 3) and run.fps == pytest.approx(10.0)
    assert doc["cluster_ms"] == 50.0 and doc["delivery_ms"] == 10.0
    assert doc["per_frame_ms"] == pytest.approx([100.0, 301.0 / 3, 302.0 / 3])
    assert run.device_work()["a"]["compute_ms_per_frame"] == pytest.approx(40.0)
    emulation = doc["emulation"]
    assert emulation["time_scale"] == 3.0 and emulation["faithful"]
    assert emulation["host_cores_needed"] == pytest.approx(1 / 24)
    assert "played 3x slower" in emulation["how"]


def test_only_the_devices_the_plan_uses_and_the_sources_get_a_worker():
    part = digits_plan(grid=(2, 2), reuse=False).partition
    only_a = part.model_copy(update={"tiles": [t.model_copy(update={"device": "a"})
                                               for t in part.tiles]})
    assert working_devices(only_a, ["a"]) == ["a"]
    assert working_devices(only_a, ["c", "a"]) == ["a", "c"]  # a data source computes too
    both = part.model_copy(update={"tiles": [t.model_copy(update={"device": "bc"[k % 2]})
                                             for k, t in enumerate(part.tiles)]})
    assert working_devices(both, ["a"]) == ["a", "b", "c"]  # the gateway stitches
    assert worker_devices(both, ["a"]) == ["a", "b", "c"]
    # a layer-wise gateway computes its own parts in-process: no worker process for it
    layers = digits_plan("layer-wise").partition
    assert layers.gateway == "a" and "a" in working_devices(layers, ["a"])
    assert worker_devices(layers, ["a"]) == [d for d in working_devices(layers, ["a"])
                                            if d != "a"]


def test_slow_motion_is_refused_below_one():
    from edgeweave.runtime.cluster.session import run_cluster

    plan = digits_plan(grid=(2, 2), reuse=False)
    with pytest.raises(EdgeWeaveError, match=r"time scale 0\.5: expected 1 or more"):
        run_cluster(None, plan, None, None, [], time_scale=0.5)  # type: ignore[arg-type]


def test_the_gateway_computes_on_one_thread_while_the_cluster_runs(monkeypatch):
    """The gateway's compute is dilated on its thread's CPU time, which leaves out torch's
    other intra-op threads: a run holds torch to one thread, as the workers and the profile,
    and gives the host's setting back after."""
    import torch

    from edgeweave.graph.capture import capture_spec
    from edgeweave.runtime.cluster import session
    from edgeweave.runtime.cluster.session import run_cluster

    seen = []

    class Stop(Exception):
        pass

    def lab(*args, **kwargs):
        seen.append(torch.get_num_threads())
        raise Stop

    monkeypatch.setattr(session, "ClusterLab", lab)
    monkeypatch.setattr(session, "device_dilations", lambda *a: {"a": 8.0, "b": 8.0,
                                                                  "c": 8.0, "d": 8.0})
    plan = digits_plan(grid=(2, 2), reuse=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(Stop):
            run_cluster(capture_spec("digits-cnn"), plan, None, None, [],  # type: ignore[arg-type]
                        time_scale=1.0)
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_worker_counts_a_task_the_host_could_not_emulate():
    service = WorkerService(WorkerConfig("pi4", dilation=8.0))
    wall0, cpu0 = dilation.start()
    service._note_host((wall0 - 0.5, cpu0))  # 500 ms of wall, ~0 of CPU: waited for a core
    assert service.stats["overrun_tasks"] == 1.0
    assert service.stats["core_wait_ms"] == pytest.approx(500.0, abs=50.0)
    mark = dilation.start()
    end = time.thread_time() + 0.02
    while time.thread_time() < end:  # 20 ms of CPU, no wait: the 8x stretch covers it
        pass
    service._note_host(mark)
    assert service.stats["overrun_tasks"] == 1.0


def test_a_run_sets_its_compute_and_its_replayed_schedule_beside_the_plan():
    """A run whose every tile computed exactly as planned, on its planned device, with the
    planned rest: compute drift 0 and the plan's schedule replayed is the prediction; twice
    the compute is +100% drift (slow motion undone in both)."""
    from edgeweave.runtime.cluster.frames import TaskTiming

    plan = digits_plan(grid=(2, 2), reuse=True)
    part = plan.partition
    rest = part.predicted["rest_ms"]

    def run(factor: float) -> ClusterRun:
        timeline = [TaskTiming(t.index, t.device, 0.0, 1.0, 0.0, 2.0 * factor * t.compute_ms)
                    for t in part.tiles]
        frames = [FrameResult(k, "a", None, 1.0, 1.0, 2.0 * rest, 0, {}, {}, 0, 0,
                              timeline=timeline) for k in range(2)]
        return ClusterRun(plan, "static", ["a"], {"a": 8.0}, frames, wall_s=1.0,
                          time_scale=2.0)

    assert run(1.0).compute_vs_plan_pct == pytest.approx(0.0, abs=1e-9)
    assert run(1.0).replayed_ms() == pytest.approx(part.predicted["latency_ms"], rel=1e-6)
    assert run(2.0).compute_vs_plan_pct == pytest.approx(100.0)
    assert run(2.0).replayed_ms() > part.predicted["latency_ms"]


def test_a_calibration_pass_reprices_the_plan_from_what_its_devices_took():
    """Calibration frames whose every tile took 1.5x its price (one stolen to the rpi3 b,
    priced there by the dilation ratio) and whose rest took 1.2x (slow motion undone): the
    devices' factors are 1.5, the rest's 1.2, and the plan priced again with them predicts
    1.2x the rest and 1.5x each tile's compute, for the same grid and devices."""
    from cluster_helpers import cluster_fleet, digits

    from edgeweave.profile import analytic_profile
    from edgeweave.runtime.cluster.calibrate import calibration_of
    from edgeweave.runtime.cluster.frames import TaskTiming
    from edgeweave.runtime.cluster.session import plan_calibrated, plan_emulated

    graph, fleet = digits(), cluster_fleet()
    profile = analytic_profile(graph, fleet)
    plan = plan_emulated(graph, profile, fleet, methods=("fused-tiles",), grid=(2, 2),
                         reuse=False)
    part = plan.partition
    dilations = {"a": 8.0, "b": 24.0, "c": 8.0}
    ran = {t.index: ("b" if k == 0 else t.device) for k, t in enumerate(part.tiles)}
    timeline = [TaskTiming(t.index, ran[t.index], 0.0, 1.0, 0.0, 2.0 * 1.5 * t.compute_ms
                           * dilations[ran[t.index]] / dilations[t.device])
                for t in part.tiles]
    frames = [FrameResult(k, "a", None, 1.0, 1.0, 2.0 * 1.2 * part.predicted["rest_ms"], 0,
                          {}, {}, 0, 0, timeline=timeline) for k in range(2)]
    cal = calibration_of(plan, frames, dilations, time_scale=2.0)
    assert cal.rest_scale == pytest.approx(1.2) and cal.frames == 2
    assert cal.tasks == 2 * len(part.tiles) and cal.ms_per_mb is None
    assert set(cal.compute_scale) == set(part.devices)  # b ran the stolen tile
    assert all(k == pytest.approx(1.5) for k in cal.compute_scale.values())
    again = plan_calibrated(graph, profile, fleet, plan, cal).partition
    assert (again.fused_depth, again.grid, again.reuse) == (part.fused_depth, part.grid,
                                                            part.reuse)
    assert again.predicted["rest_ms"] == pytest.approx(1.2 * part.predicted["rest_ms"])
    priced = {t.index: t.compute_ms for t in part.tiles}
    for t in again.tiles:
        if t.device == part.tiles[t.index].device:
            assert t.compute_ms == pytest.approx(1.5 * priced[t.index])
    assert again.predicted["latency_ms"] > part.predicted["latency_ms"]
    assert again.search["run_calibration"]["rest_scale"] == pytest.approx(1.2)


def test_a_calibration_runs_one_block_when_it_prices_several_blocks_dearer():
    """Several fused blocks are chosen on the profile's prices; the calibration pass can show
    their tiles cost more than priced (here 40x on every device, the rest as priced): the plan
    then runs the best single block at those prices, which beats the several repriced
    (before, the blocks were kept and only their tiles' devices chosen again)."""
    from cluster_helpers import cluster_fleet, digits

    from edgeweave.plan.run_calibration import RunCalibration
    from edgeweave.profile import analytic_profile
    from edgeweave.runtime.cluster.session import plan_calibrated, plan_emulated

    graph, fleet = digits(), cluster_fleet()
    profile = analytic_profile(graph, fleet)
    pins = [(2, (2, 2), False), (3, (1, 2), False)]
    # every device (a calibration prices only the devices that ran, and keeps them)
    plan = plan_emulated(graph, profile, fleet, methods=("fused-tiles",), blocks=pins,
                         devices=fleet.cluster().devices)
    assert len(plan.partition.stages()) == 2
    cal = RunCalibration(dict.fromkeys(plan.partition.devices, 40.0), 1.0, None)
    ran = plan_calibrated(graph, profile, fleet, plan, cal).partition
    several, one = (plan_emulated(graph, profile, fleet, methods=("fused-tiles",),
                                  calibration=cal, devices=fleet.cluster().devices,
                                  **pin).partition
                    for pin in ({"blocks": pins}, {"max_blocks": 1}))
    assert len(ran.stages()) == 1 and ran.describe_blocks() == one.describe_blocks()
    assert ran.predicted["latency_ms"] == pytest.approx(one.predicted["latency_ms"])
    assert ran.predicted["latency_ms"] < several.predicted["latency_ms"]


def test_a_layer_wise_calibration_prices_each_device_with_the_gateways_own_layers():
    """Layer-wise: a device's compute in a frame against its parts' prices, the gateway's
    with the layers it runs itself between the split ones; 2x everywhere gives 2."""
    from cluster_helpers import cluster_fleet, digits

    from edgeweave.profile import analytic_profile
    from edgeweave.runtime.cluster.calibrate import calibration_of
    from edgeweave.runtime.cluster.session import plan_emulated

    graph, fleet = digits(), cluster_fleet(size=4)
    profile = analytic_profile(graph, fleet)
    plan = plan_emulated(graph, profile, fleet, methods=("layer-wise",), layer_devices=4)
    part = plan.partition
    assert part.method == "layer-wise" and part.layers
    priced: dict[str, float] = {}
    for la in part.layers:
        for device, ms in zip(la.devices, la.compute_ms, strict=True):
            priced[device] = priced.get(device, 0.0) + ms
    own = part.predicted["cluster_ms"] - sum(la.makespan_ms for la in part.layers)
    priced["a"] += own
    rest = part.predicted["rest_ms"]
    frames = [FrameResult(k, "a", None, 1.0, 1.0, 3.0 * rest, 0, {},
                          {d: 2.0 * ms for d, ms in priced.items()}, 0, 0) for k in range(3)]
    cal = calibration_of(plan, frames, dict.fromkeys("abcd", 8.0))
    assert set(cal.compute_scale) == set(part.devices)
    assert all(k == pytest.approx(2.0) for k in cal.compute_scale.values())
    assert cal.rest_scale == pytest.approx(3.0 if rest > 0 else 1.0)


def test_a_calibration_that_moves_a_layers_rows_needs_a_new_gateway():
    """The run rebuilds its gateway when the calibrated plan's assignment differs from the
    one it was built for: the same prices give the same assignment; a split layer's rows or
    steps moved (its devices the same: vgg16's calibrated rows on emulated Pis) differ, as do
    parts moved off a device that ran 4x slower than priced."""
    from cluster_helpers import cluster_fleet, digits

    from edgeweave.plan.run_calibration import RunCalibration
    from edgeweave.profile import analytic_profile
    from edgeweave.runtime.cluster.session import assignment, plan_calibrated, plan_emulated

    graph, fleet = digits(), cluster_fleet()
    profile = analytic_profile(graph, fleet)
    plan = plan_emulated(graph, profile, fleet, methods=("layer-wise",), layer_devices=3)
    part = plan.partition
    assert part.layer_split == "overlap" and part.layers[1].steps
    same = plan_calibrated(graph, profile, fleet, plan,
                           RunCalibration(dict.fromkeys("abc", 1.0), 1.0, None))
    assert assignment(same) == assignment(plan)

    def with_layer(k, **update):
        layers = list(part.layers)
        layers[k] = layers[k].model_copy(update=update)
        return plan.model_copy(update={"partition": part.model_copy(update={"layers": layers})})

    bounds = list(part.layers[0].row_bounds)
    bounds[1] -= 1
    assert assignment(with_layer(0, row_bounds=bounds)) != assignment(plan)
    assert assignment(with_layer(1, steps=part.layers[1].steps[:-1])) != assignment(plan)
    slow = plan_calibrated(graph, profile, fleet, plan,
                           RunCalibration({"a": 1.0, "b": 4.0, "c": 1.0}, 1.0, None))
    assert assignment(slow) != assignment(plan)


def test_a_calibration_without_a_cost_per_mib_keeps_the_plans_own():
    """A layer-wise plan priced with the runtime's cost per MiB, calibrated by frames that
    measured none: priced again with the plan's cost (dropping it priced every scatter and
    gather as free), and with the calibration's when it measured one."""
    from cluster_helpers import cluster_fleet, digits

    from edgeweave.plan.run_calibration import RunCalibration
    from edgeweave.profile import analytic_profile
    from edgeweave.runtime.cluster.session import plan_calibrated, plan_emulated

    graph, fleet = digits(), cluster_fleet(size=2)
    profile = analytic_profile(graph, fleet)
    plan = plan_emulated(graph, profile, fleet, methods=("layer-wise",), layer_devices=2,
                         ms_per_mb=400.0)
    free = plan_emulated(graph, profile, fleet, methods=("layer-wise",), layer_devices=2)
    assert plan.partition.predicted["latency_ms"] > free.partition.predicted["latency_ms"]

    def again(per_mb: float | None):
        cal = RunCalibration(dict.fromkeys("ab", 1.0), 1.0, per_mb)
        return plan_calibrated(graph, profile, fleet, plan, cal)

    kept, measured = again(None).partition, again(0.0).partition
    assert kept.search["task_overhead"]["runtime_ms_per_mb"] == 400.0
    assert kept.predicted["latency_ms"] == pytest.approx(plan.partition.predicted["latency_ms"])
    assert measured.search["task_overhead"]["runtime_ms_per_mb"] == 0.0
    assert measured.predicted["latency_ms"] == pytest.approx(free.partition.predicted["latency_ms"])


def test_several_sources_frames_are_replayed_on_one_clock():
    """Two sources' frames, every tile run on a at 10 ms, the rest 5 ms on a (a fast
    medium): apart, each frame replays as its own 4 tiles + rest; arriving together, the
    second queues behind the first on a; a frame whose arrival was not recorded: no replay."""
    from edgeweave.runtime.cluster.frames import TaskTiming
    from edgeweave.runtime.cluster.replay import replay_sources

    part = digits_plan(grid=(2, 2), reuse=False).partition

    def frame(k: int, source: str, at: float) -> FrameResult:
        timeline = [TaskTiming(t.index, "a", float(n), 10.0 * (n + 1), 0.0, 10.0)
                    for n, t in enumerate(part.tiles)]
        return FrameResult(k, source, None, 45.0, 40.0, 5.0, 0, {}, {}, 0, 0,
                           timeline=timeline, home="a", submitted=at)

    apart = replay_sources(part, [frame(0, "a", 100.0), frame(1, "c", 100.5)], 1.0)
    assert apart == pytest.approx(45.0, abs=0.5)
    together = replay_sources(part, [frame(0, "a", 100.0), frame(1, "c", 100.0)], 1.0)
    assert together == pytest.approx((85.0 + 90.0) / 2, abs=0.5)
    assert replay_sources(part, [frame(0, "a", 0.0), frame(1, "c", 100.0)], 1.0) is None


def test_steady_fps_leaves_the_pipelines_filling_out():
    """Four frames answered 0.5 s apart after a 3 s fill, in 2x slow motion: 4 frames over
    the 4.5 s wall is 1.78 frames/s, what the run sustained is 3 answers in 1.5 s, x2."""
    plan = digits_plan(grid=(2, 2))
    frames = [FrameResult(k, "a", None, (3.0 + 0.5 * k - 0.1 * k) * 1000.0, 1.0, 1.0, 0,
                          {}, {}, 0, 0, submitted=100.0 + 0.1 * k) for k in range(4)]
    run = ClusterRun(plan, "stealing", ["a"], {"a": 8.0}, frames, wall_s=4.5, time_scale=2.0)
    assert run.fps == pytest.approx(4 * 2.0 / 4.5)
    assert run.steady_fps == pytest.approx(3 * 2.0 / 1.5)
    unrecorded = [FrameResult(0, "a", None, 1.0, 1.0, 1.0, 0, {}, {}, 0, 0)] * 3
    assert run.__class__(plan, "stealing", ["a"], {}, unrecorded, 1.0).steady_fps != (
        run.steady_fps)  # NaN: no submission instants


def test_steady_fps_of_answers_in_pairs_is_their_rate():
    """Two devices answering a frame each every second: pairs at 1, 2, 3, 4 s are 2 frames/s.
    Answers after the first over first-to-last would count 7 in 3 s (2.33 frames/s)."""
    plan = digits_plan(grid=(2, 2))
    ends = [1.0, 1.01, 2.0, 2.01, 3.0, 3.01, 4.0, 4.01]
    frames = [FrameResult(k, "a", None, 500.0, 1.0, 1.0, 0, {}, {}, 0, 0,
                          submitted=100.0 + end - 0.5) for k, end in enumerate(ends)]
    run = ClusterRun(plan, "stealing", ["a"], {"a": 8.0}, frames, wall_s=4.5)
    assert run.steady_fps == pytest.approx(2.0, rel=0.02)
