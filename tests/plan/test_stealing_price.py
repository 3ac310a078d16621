"""Work stealing across frames in flight, priced (plan.stealing_price): the fluid bound splits
one frame's tiles over the devices by speed, keeps them on the gateway when the medium is dear
and off it when the rest of the model fills it; a plan priced that way lists its stealers,
never prices below the fixed assignment's frames/s, round-trips through its JSON, and bad
requests get one clear error."""

from __future__ import annotations

import pytest
from test_multidevice import cluster_fleet

from edgeweave.errors import PlanError
from edgeweave.graph import capture_spec
from edgeweave.graph.blocks import cut_depths, fused_block
from edgeweave.graph.tiles import tile_grid
from edgeweave.plan import load_plan
from edgeweave.plan.cluster_cost import ClusterModel, tile_tasks, tile_work
from edgeweave.plan.fused_search import assign, balanced, compute_table, greedy
from edgeweave.plan.medium import Schedule
from edgeweave.plan.multidevice import plan_cluster
from edgeweave.plan.stealing_price import stealers_of, stealing_price
from edgeweave.profile import analytic_profile
from edgeweave.runtime.cluster.cluster_run import working_devices
from edgeweave.topology import serialize_ms


@pytest.fixture(scope="module")
def digits():
    graph = capture_spec("digits-cnn")
    return graph, analytic_profile(graph, cluster_fleet())


def whole_frame(graph, fleet):
    """The deepest fused block as one tile (a whole frame's block on one device)."""
    block = fused_block(graph, max(cut_depths(graph)))
    model = ClusterModel(analytic_profile(graph, fleet), fleet, fleet.cluster())
    return model, tile_work(block, tile_grid(block, (1, 1)))


def test_one_tile_per_frame_spreads_over_the_devices_in_proportion_to_their_speed(digits):
    graph, _ = digits
    fleet = cluster_fleet(mbps=1e6)
    model, work = whole_frame(graph, fleet)
    alone = {d: model.compute_ms(d, work[0].fractions) for d in "abc"}
    price = stealing_price(model, work, ["a", "b", "c"], 0.0, 0.0)
    assert price is not None
    # every device busy the whole period: P = 1 / sum(1 / c_d)
    assert price.period_ms == pytest.approx(1 / sum(1 / ms for ms in alone.values()), rel=1e-3)
    assert sum(price.shares.values()) == pytest.approx(1.0)
    for d in "abc":
        assert price.shares[d] * alone[d] == pytest.approx(price.period_ms, rel=1e-3)
    assert price.shares["b"] < price.shares["a"]  # the rpi3 takes fewer frames
    assert price.value(latency_ms=10 * price.period_ms, in_flight=4) == pytest.approx(
        2.5 * price.period_ms)  # Little's law: 4 frames per 10 periods at most


def test_a_dear_medium_keeps_the_tiles_on_the_gateway_and_its_rest_pushes_them_off(digits):
    graph, _ = digits
    slow = cluster_fleet(mbps=0.001)
    model, work = whole_frame(graph, slow)
    price = stealing_price(model, work, ["a", "b", "c"], 0.0, 0.0)
    # a whole frame on the air costs seconds: the others take at most what the air carries
    # in the time the gateway computes one frame
    assert price is not None and price.shares["a"] > 0.999
    assert price.period_ms <= model.compute_ms("a", work[0].fractions)
    assert price.medium_ms <= price.period_ms * (1 + 1e-9)
    fast = cluster_fleet(mbps=1e6)
    model, work = whole_frame(graph, fast)
    own = model.compute_ms("a", work[0].fractions)
    busy = stealing_price(model, work, ["a", "b", "c"], rest_gateway_ms=10 * own,
                          rest_other_ms=0.0)
    assert busy is not None and busy.shares["a"] == pytest.approx(0.0, abs=1e-6)
    assert busy.period_ms == pytest.approx(10 * own, rel=1e-6)  # the gateway's rest binds


def test_frames_from_other_sources_cross_the_medium_as_a_crop_or_as_a_result(digits):
    """On a dear medium the gateway's own frames never touch it; a frame another device
    produced must cross once, as its crop to whoever runs it or as its result to the
    gateway (its own device runs it), whichever is smaller."""
    graph, _ = digits
    model, work = whole_frame(graph, cluster_fleet(mbps=0.5))
    alone = stealing_price(model, work, ["a", "b", "c"], 0.0, 0.0)
    spread = stealing_price(model, work, ["a", "b", "c"], 0.0, 0.0,
                            origins={"a": 1, "b": 1, "c": 1})
    assert alone is not None and spread is not None
    assert alone.shares["a"] > 0.99 and alone.period_ms < 0.1 * spread.period_ms
    crop, result = (serialize_ms(b, 0.5) for b in model.task_bytes(work[0]))
    assert spread.period_ms == pytest.approx(2 / 3 * min(crop, result), rel=1e-6)
    assert spread.medium_ms <= spread.period_ms * (1 + 1e-9)
    # the crop is the smaller here (an 8x8 digit against its feature maps): all to the gateway
    assert crop < result and spread.shares["a"] == pytest.approx(1.0, abs=1e-6)
    # a medium fast enough to be free: where the frames come from changes nothing
    model, work = whole_frame(graph, cluster_fleet(mbps=1e9))
    free = [stealing_price(model, work, ["a", "b", "c"], 0.0, 0.0, origins=o)
            for o in (None, {"b": 1.0}, {"a": 1, "b": 2, "c": 3})]
    assert all(p is not None for p in free)
    assert {round(p.period_ms, 9) for p in free if p is not None} == {
        round(free[0].period_ms, 9)}


def test_a_plan_priced_for_several_sources_says_so_and_bad_sources_get_one_error(digits):
    graph, profile = digits
    fleet = cluster_fleet(mbps=0.5)
    one = plan_cluster(graph, profile, fleet, objective="throughput", methods=("fused-tiles",),
                       grid=(1, 1), reuse=False, in_flight=3)
    three = plan_cluster(graph, profile, fleet, objective="throughput",
                         methods=("fused-tiles",), grid=(1, 1), reuse=False, in_flight=3,
                         sources=["a", "b", "c"])
    assert three.partition is not None and one.partition is not None
    # the other sources' frames cross the dear medium: a longer period than the gateway's own
    assert three.partition.predicted["stealing_period_ms"] > \
        10 * one.partition.predicted["stealing_period_ms"]
    assert any("the frames from a, b, c" in n for n in three.partition.search["notes"])
    for kwargs, words in [(dict(sources=["a", "x"], in_flight=3), ["--sources", "'x'", "abc"]),
                          (dict(sources=[], in_flight=3), ["--sources", "none given"]),
                          (dict(sources=["a"]), ["--sources", "--in-flight"])]:
        with pytest.raises(PlanError) as err:
            plan_cluster(graph, profile, fleet, objective="throughput",
                         methods=("fused-tiles",), **kwargs)
        assert all(w in str(err.value) for w in words), str(err.value)


def test_stealers_are_the_devices_that_may_hold_every_tile():
    assert stealers_of([["a", "b", "c"], ["a", "c"], ["c", "a"]]) == ["a", "c"]
    assert stealers_of([]) == []


def test_a_plan_priced_for_frames_in_flight_lists_its_stealers_and_round_trips(digits, tmp_path):
    graph, profile = digits
    fleet = cluster_fleet()
    fixed = plan_cluster(graph, profile, fleet, objective="throughput",
                         methods=("fused-tiles",), max_blocks=1)
    stolen = plan_cluster(graph, profile, fleet, objective="throughput",
                          methods=("fused-tiles",), in_flight=8)
    part = stolen.partition
    assert part is not None and fixed.partition is not None
    assert part.scheduler == "stealing" and part.in_flight == 8
    assert part.stealers == ["a", "b", "c"]
    assert set(part.predicted["stealing_shares"]) == {"a", "b", "c"}
    # stealing can always keep the fixed assignment, so it never prices lower
    assert part.predicted["fps"] >= fixed.partition.predicted["fps"] * (1 - 1e-9)
    # Little's law: no more than 8 frames per frame latency
    assert part.predicted["fps"] <= 8 * 1000.0 / part.predicted["latency_ms"] * (1 + 1e-9)
    # every stealer gets a worker, whether or not the plan's tiles name it
    assert working_devices(part, [part.gateway]) == ["a", "b", "c"]
    assert fixed.partition.stealers == [] and fixed.partition.in_flight == 1
    path = tmp_path / "plan.json"
    path.write_text(stolen.model_dump_json())
    again = load_plan(path).partition
    assert again is not None and again.stealers == part.stealers and again.in_flight == 8


@pytest.mark.parametrize("kwargs, words", [
    (dict(objective="latency", in_flight=4), ["--in-flight 4", "--objective throughput"]),
    (dict(objective="throughput", in_flight=0), ["--in-flight 0", "1 to 64"]),
    (dict(objective="throughput", in_flight=4, blocks=[(2, (2, 2), False), (4, (1, 1), False)]),
     ["--in-flight 4", "one fused block", "2 blocks"]),
])
def test_bad_frames_in_flight_get_one_clear_error(digits, kwargs, words):
    graph, profile = digits
    with pytest.raises(PlanError) as err:
        plan_cluster(graph, profile, cluster_fleet(), methods=("fused-tiles",), **kwargs)
    for word in words:
        assert word in str(err.value)


def test_a_calibration_keeps_the_stealing_price_and_scales_it(digits):
    """Priced again from a calibration pass (every device 2x slower than profiled), a plan for
    frames in flight stays one: the same frames in flight and stealers, half the frames/s."""
    from edgeweave.plan.run_calibration import RunCalibration
    from edgeweave.runtime.cluster.session import plan_calibrated

    graph, profile = digits
    fleet = cluster_fleet(mbps=1e6)
    plan = plan_cluster(graph, profile, fleet, objective="throughput",
                        methods=("fused-tiles",), grid=(1, 1), reuse=False, in_flight=6)
    slow = RunCalibration({d: 2.0 for d in "abc"}, rest_scale=2.0, ms_per_mb=0.0)
    again = plan_calibrated(graph, profile, fleet, plan, slow).partition
    part = plan.partition
    assert again is not None and part is not None
    assert (again.scheduler, again.in_flight, again.stealers) == ("stealing", 6, part.stealers)
    assert again.predicted["fps"] == pytest.approx(part.predicted["fps"] / 2, rel=0.05)
    # priced for frames from several sources: priced again from the same sources
    several = plan_cluster(graph, profile, fleet, objective="throughput",
                           methods=("fused-tiles",), grid=(1, 1), reuse=False, in_flight=6,
                           sources=["b", "c"])
    assert several.partition is not None and several.partition.sources == ["b", "c"]
    again = plan_calibrated(graph, profile, fleet, several, slow).partition
    assert again is not None and again.sources == ["b", "c"]
    assert any("the frames from b, c" in n for n in again.search["notes"])


def test_too_many_assignments_take_the_better_of_earliest_finish_and_balance(digits):
    """A 3x3 grid on three devices, too many assignments to try: for frames/s (the busiest
    resource) the assignment is the better of earliest-finish list scheduling and balancing
    the busy times, each simulated."""
    graph, profile = digits
    fleet = cluster_fleet(mbps=1e6)
    block = fused_block(graph, max(cut_depths(graph)))
    model = ClusterModel(profile, fleet, fleet.cluster())
    work = tile_work(block, tile_grid(block, (3, 3)))
    allowed = [["a", "b", "c"]] * len(work)

    def busiest(s: Schedule) -> float:
        return max(s.medium_busy_ms, *s.device_busy_ms.values())

    chosen, _, value, exhaustive = assign(model, work, allowed, busiest, 1)
    assert not exhaustive
    table = compute_table(model, work, allowed)
    traffic = [model.task_bytes(w) for w in work]
    ser = [serialize_ms(i, 1e6) + serialize_ms(o, 1e6) for i, o in traffic]
    tried = [greedy(model, work, allowed, table),
             balanced(model, allowed, table, traffic, ser, busiest)]
    values = [busiest(model.simulate(tile_tasks(model, work, t))) for t in tried]
    assert value == pytest.approx(min(values)) and chosen == tried[values.index(min(values))]
