"""Data sources feeding a gateway (runtime.cluster.drive) over real gRPC, workers in this
process: with one frame in flight a source sends its next frame once the last is answered;
with two (DeepThings' pipelining) once every tile of the last was handed out, never more than
two unanswered, and every frame still answered, equal to the single-device model."""

from __future__ import annotations

import itertools

import pytest
import torch
from cluster_helpers import TOKEN, digits, digits_plan

from edgeweave.errors import EdgeWeaveError
from edgeweave.runtime.cluster.drive import drive
from edgeweave.runtime.cluster.frames import FrameResult
from edgeweave.runtime.cluster.gateway import TileGateway

SLACK_S = 1e-6  # ms <-> s round trips


def frames(n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(digits().input_shape, generator=g) for _ in range(n)]


def answered(r: FrameResult) -> float:
    return r.submitted + r.latency_ms / 1000.0


def by_source(results: list[FrameResult], source: str) -> list[FrameResult]:
    return sorted((r for r in results if r.source == source), key=lambda r: r.submitted)


def slowed_gateway(plan, workers) -> TileGateway:
    """A gateway dilated 10x with workers a, b, c joined, each dilated 10x (the plan prices b
    at 30x), so a tile lasts past the moment its source sends the next frame."""
    gw = TileGateway(digits(), plan, token=TOKEN, gateway_dilation=10.0,
                     dilations={"a": 10.0, "b": 30.0, "c": 10.0})
    try:
        for device in "abc":
            gw.join(device, workers.start(device, dilation=10.0))
    except BaseException:
        gw.close()
        raise
    return gw


def test_two_frames_in_flight_each_sent_once_the_last_was_taken_none_lost(workers):
    """Two sources, two frames in flight each, level-1 tiles waiting for the level-0 ones they
    reuse; then one in flight on the same gateway. Devices and the rest dilated 10x, so a
    tile lasts past the moment its source sends the next frame."""
    plan = digits_plan(grid=(2, 3), reuse=True)
    level0 = {t.index for t in plan.partition.tiles if t.level == 0}
    assert 0 < len(level0) < 6
    gw = slowed_gateway(plan, workers)
    try:
        xs = frames(8)
        piped = drive(gw, xs, ["a", "c"], 60.0, in_flight=2)
        single = drive(gw, xs[:3], ["a"], 60.0, in_flight=1)
    finally:
        gw.close()
    with torch.no_grad():
        want = [digits().module(x) for x in xs]
    assert len(piped) == 8 and len({r.frame for r in piped}) == 8  # none lost, none twice
    overlapped = before_level1 = 0
    for i, source in enumerate("ac"):
        mine = by_source(piped, source)
        assert len(mine) == 4
        # a source's frames in the order it sent them: each equal to the single-device model
        for r, w in zip(mine, want[i::2], strict=True):
            assert torch.allclose(r.output, w, atol=1e-5)
            assert sorted(t.tile for t in r.timeline) == list(range(6)) and r.rerun == 0
        for prev, nxt in itertools.pairwise(mine):
            # sent only once every tile of the last was handed out...
            # (every level-0 tile: a level-1 tile may still wait for their halo)
            last_out = prev.submitted + max(t.sent_ms for t in prev.timeline
                                            if t.tile in level0) / 1000.0
            assert nxt.submitted >= last_out - SLACK_S
            overlapped += nxt.submitted < answered(prev)  # ...not waiting for its answer
            # nor for its level-1 tiles, which wait for the level-0 halo they reuse
            before_level1 += nxt.submitted < prev.submitted + max(
                t.sent_ms for t in prev.timeline if t.tile not in level0) / 1000.0
        for r in mine:  # never more than two of its frames unanswered at once
            assert sum(o.submitted <= r.submitted < answered(o) for o in mine) <= 2
    assert overlapped >= 1  # a source had two frames in flight at once
    assert before_level1 >= 1  # its next frame went while the last's level 1 waited
    for prev, nxt in itertools.pairwise(by_source(single, "a")):  # one in flight: in turn
        assert nxt.submitted >= answered(prev) - SLACK_S
    for r, w in zip(by_source(single, "a"), want[:3], strict=True):
        assert torch.allclose(r.output, w, atol=1e-5)


def test_with_two_fused_blocks_the_next_frame_goes_once_the_first_blocks_tiles_are_taken(
        workers):
    """DeeperThings' two blocks: a source's queue holds a frame's first-block tiles (the
    second block's are queued after the sync point, where the frame is gathered), so the
    source sends its next frame once those are handed out, before the last frame's second
    block is, and every frame is still answered, equal to the single-device model."""
    plan = digits_plan(blocks=[(1, (2, 2), False), (3, (1, 2), False)])
    assert [len(s.tiles) for s in plan.partition.stages()] == [4, 2]
    gw = slowed_gateway(plan, workers)
    try:
        xs = frames(5)
        piped = drive(gw, xs, ["a"], 60.0, in_flight=2)
    finally:
        gw.close()
    mine = by_source(piped, "a")
    assert len(mine) == 5 and len({r.frame for r in mine}) == 5
    with torch.no_grad():
        for r, x in zip(mine, xs, strict=True):
            assert torch.allclose(r.output, digits().module(x), atol=1e-5)
            assert sorted(t.tile for t in r.timeline) == list(range(6))
    early = 0
    for prev, nxt in itertools.pairwise(mine):
        sent = {t.tile: prev.submitted + t.sent_ms / 1000.0 for t in prev.timeline}
        assert nxt.submitted >= max(sent[k] for k in range(4)) - SLACK_S
        early += nxt.submitted < max(sent[4], sent[5])
    assert early >= 1  # sent before the last frame's second block was handed out


@pytest.mark.parametrize("in_flight", [0, 17, 1.5, True])
def test_frames_in_flight_out_of_range_are_named(in_flight):
    with pytest.raises(EdgeWeaveError, match=rf"in_flight {in_flight!r}: expected a whole "
                                             r"number of frames from 1 to 16"):
        drive(None, [], ["a"], 1.0, in_flight=in_flight)  # type: ignore[arg-type]


def test_a_plan_priced_for_frames_in_flight_spreads_whole_frames_over_every_stealer(workers):
    """One tile a frame, six frames in flight, the plan priced as work stealing across them:
    the slower rpi3 ``b`` (priced 3x slower) takes frames too, every frame is answered once
    and equals the single-device model."""
    plan = digits_plan(grid=(1, 1), reuse=False, objective="throughput", in_flight=6)
    part = plan.partition
    assert part.scheduler == "stealing" and part.stealers == ["a", "b", "c"]
    gw = slowed_gateway(plan, workers)
    try:
        xs = frames(12)
        got = drive(gw, xs, ["a"], 60.0, in_flight=6)
    finally:
        gw.close()
    assert sorted(r.frame for r in got) == sorted({r.frame for r in got}) and len(got) == 12
    ran = {d: sum(r.tasks.get(d, 0) for r in got) for d in "abc"}
    assert sum(ran.values()) == 12 and ran["b"] >= 1 and ran["c"] >= 1
    with torch.no_grad():
        want = [digits().module(x) for x in xs]
    for r, w in zip(sorted(got, key=lambda r: r.submitted), want, strict=True):
        assert torch.allclose(r.output, w, atol=1e-5)


def test_only_a_plan_for_frames_in_flight_counts_the_gateways_rests_as_a_backlog():
    """A plan priced one frame at a time keeps Pace's test as it was; one priced as stealing
    across frames in flight steals eagerly and counts the rests its gateway owes."""
    for plan, eager in ((digits_plan(grid=(2, 2), reuse=False), False),
                        (digits_plan(grid=(1, 1), reuse=False, objective="throughput",
                                     in_flight=4), True)):
        gw = TileGateway(digits(), plan, token=TOKEN)
        try:
            assert gw.scheduler.eager is eager
            assert (gw.scheduler.pace.backlog is not None) is eager
        finally:
            gw.close()
