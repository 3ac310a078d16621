"""Work stealing, work sharing and the static plan as bookkeeping: who gets which tile, in
which order, and what happens to a dead device's tiles."""

from __future__ import annotations

import pytest

from edgeweave.errors import EdgeWeaveError
from edgeweave.runtime.cluster.scheduler import (
    Central,
    Job,
    Pace,
    Static,
    Stealing,
    make_scheduler,
)


def jobs(frame: int, source: str, planned: list[str]) -> list[Job]:
    return [Job(frame, k, 0, source, device) for k, device in enumerate(planned)]


def always(job: Job) -> bool:
    return True


def test_stealing_sources_take_their_own_tiles_first_others_steal_round_robin():
    s = Stealing()
    s.add(jobs(0, "a", ["a"] * 3), ["a", "b", "c"])
    s.add(jobs(1, "b", ["a"] * 3), ["a", "b", "c"])
    got = s.dispatch({"a": 1, "b": 1, "c": 1}, always)
    assert got[0] == ("a", Job(0, 0, 0, "a", "a"))  # a source takes its own queue's head
    assert got[1] == ("b", Job(1, 0, 0, "b", "a"))
    assert got[2] == ("c", Job(0, 1, 0, "a", "a"))  # c steals from the first victim
    # c keeps asking: the victims come round-robin (b, a, b)
    assert [s.take("c", always).frame for _ in range(3)] == [1, 0, 1]
    assert s.take("c", always) is None and s.pending() == 0


def test_stealing_requeues_a_dead_devices_tiles_in_front_and_a_late_joiner_steals():
    s = Stealing()
    s.add(jobs(0, "a", ["a"] * 4), ["a"])
    first, second = s.take("a", always), s.take("a", always)
    s.requeue([first, second], [])
    assert s.take("z", always) == first  # a device never seen before steals at once
    assert s.take("z", always) == second


def test_static_pushes_every_ready_tile_to_its_planned_device_in_order():
    s = Static()
    s.add(jobs(0, "a", ["a", "b", "a", "c"]), ["a", "b", "c"])
    blocked = Job(0, 3, 0, "a", "c")
    got = s.dispatch({"a": 9, "b": 9, "c": 9}, lambda j: j != blocked)
    assert [(d, j.tile) for d, j in got] == [("a", 0), ("b", 1), ("a", 2)]
    assert s.dispatch({"a": 9, "c": 9}, always) == [("c", blocked)]


def test_static_moves_a_dead_devices_tiles_to_the_least_loaded_live_device():
    s = Static()
    s.add(jobs(0, "a", ["a", "b", "b", "c"]), ["a", "b", "c"])
    sent = s.dispatch({"b": 9}, always)  # b got its two tiles, then died
    s.leave("b", ["a", "c"])
    s.requeue([j for _, j in sent], ["a", "c"])
    got = s.dispatch({"a": 9, "c": 9}, always)
    assert sorted(j.tile for _, j in got) == [0, 1, 2, 3]
    # a and c had one tile each: b's two go one to each (the least loaded at each move)
    assert sorted(d for d, j in got if j.tile in (1, 2)) == ["a", "c"]


def test_unknown_scheduler_is_named():
    with pytest.raises(EdgeWeaveError, match="--scheduler 'fifo'"):
        make_scheduler("fifo")


def test_stealing_takes_the_first_ready_tile_and_waits_when_none_is():
    """A data-reuse tile whose neighbour is being computed is not ready: the device takes the
    next one, from its own queue or a victim's, and nothing when no tile is ready."""
    s = Stealing()
    s.add(jobs(0, "a", ["a"] * 3), ["a", "b"])
    blocked = {Job(0, 0, 0, "a", "a"), Job(0, 1, 0, "a", "a")}
    ready = lambda j: j not in blocked  # noqa: E731
    assert s.take("a", ready) == Job(0, 2, 0, "a", "a")
    assert s.take("b", ready) is None and s.pending() == 2
    blocked.clear()
    assert [s.take("b", ready).tile for _ in range(2)] == [0, 1]


def test_a_tile_handed_out_counts_as_running_for_the_next_choice_of_the_same_round():
    """With room for two tasks, a device must not take a reuse tile whose neighbour it was
    handed just before (it would compute that neighbour's halo again)."""
    s = Stealing(prefetch=1)
    s.add(jobs(0, "a", ["a", "a"]), ["a"])
    running: set[int] = set()
    got = s.dispatch({"a": 2}, lambda j: not (j.tile == 1 and 0 in running),
                     lambda device, j: running.add(j.tile))
    assert got == [("a", Job(0, 0, 0, "a", "a"))] and s.pending() == 1


def test_stealing_prefers_the_tiles_the_plan_gave_each_device():
    """Devices as fast as planned get the plan's tiles (the remote one the tile sized for it);
    with nothing planned for it left, a device still steals whatever is ready."""
    s = Stealing()
    s.add(jobs(0, "a", ["b", "a", "a"]), ["a", "b"])
    got = s.dispatch({"a": 1, "b": 1}, always)
    assert [(d, j.tile) for d, j in got] == [("a", 1), ("b", 0)]
    assert s.take("b", always).tile == 2


def test_sharing_keeps_one_queue_at_the_gateway_first_come_first_served():
    """DeepThings' work sharing: every source's tiles in one queue in arrival order; an idle
    device gets its head (a planned tile first, a ready one), a source gets no preference for
    its own tiles, and a dead device's tiles go back in front."""
    s = make_scheduler("sharing", prefetch=1)
    assert isinstance(s, Central) and s.limit() == 2
    s.add(jobs(0, "a", ["a", "b"]), ["a", "b"])
    s.add(jobs(1, "b", ["a", "b"]), ["a", "b"])
    assert s.take("b", always) == Job(0, 1, 0, "a", "b")  # b's planned tile of frame 0
    first = s.take("b", always)
    assert first == Job(1, 1, 0, "b", "b")
    s.requeue([first], ["a"])
    assert [s.take("a", always) for _ in range(3)] == [
        Job(0, 0, 0, "a", "a"), Job(1, 0, 0, "b", "a"), first]
    assert s.pending() == 0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_device_takes_no_task_another_would_finish_sooner():
    """An rpi3 (pace 4) idle beside a busy rpi4 (pace 1): a big tile waits for the rpi4, which
    is done with it sooner even after its current one; a small one goes to the rpi3 at once.
    When the rpi4 frees up it takes the big tile."""
    clock = Clock()
    s = Stealing(pace=Pace({"pi4": 1.0, "pi3": 4.0}, clock))
    s.add([Job(0, 0, 0, "pi4", "pi4", cost=100.0), Job(0, 1, 0, "pi4", "pi4", cost=100.0),
           Job(0, 2, 0, "pi4", "pi4", cost=10.0)], ["pi4", "pi3"])
    first = s.dispatch({"pi4": 1, "pi3": 0}, always)
    assert first == [("pi4", Job(0, 0, 0, "pi4", "pi4", cost=100.0))]
    clock.now = 0.05  # 50 ms into its 100: done with a big tile at 150 vs the rpi3's 400
    got = s.dispatch({"pi4": 0, "pi3": 1}, always)
    assert got == [("pi3", Job(0, 2, 0, "pi4", "pi4", cost=10.0))]  # 40 ms vs 60
    assert s.dispatch({"pi4": 0, "pi3": 0}, always) == [] and s.pending() == 1
    s.finished("pi4", first[0][1], compute_ms=100.0)
    s.finished("pi3", got[0][1], compute_ms=40.0)
    assert s.dispatch({"pi4": 1, "pi3": 1}, always) == [
        ("pi4", Job(0, 1, 0, "pi4", "pi4", cost=100.0))]


def test_a_devices_pace_is_measured_and_a_prefetch_goes_to_whoever_frees_up_first():
    """No seed: the devices look alike until one answers slowly; then, with room for a second
    task each, the fast device's prefetch is allowed (it frees up first) and the slow one's
    is not."""
    clock = Clock()
    s = Stealing(prefetch=1, pace=Pace(clock=clock))
    s.add([Job(0, k, 0, "a", "a", cost=10.0) for k in range(5)], ["a", "b"])
    got = s.dispatch({"a": 1, "b": 1}, always)
    assert [d for d, _ in got] == ["a", "b"]
    clock.now = 0.01
    s.finished("a", got[0][1], compute_ms=10.0)
    s.finished("b", got[1][1], compute_ms=80.0)  # b is 8x slower
    assert s.pace.of("a") == 1.0 and s.pace.of("b") == 8.0
    got = s.dispatch({"a": 2, "b": 2}, always)
    # a takes two (its second ends at 20 ms, before b's first at 80); b gets none
    assert [d for d, _ in got] == ["a", "a"] and s.pending() == 1


def test_a_thief_steals_from_the_source_with_the_most_work_left():
    s = Stealing()
    s.add([Job(0, 0, 0, "a", "a", cost=1.0), Job(0, 1, 0, "a", "a", cost=1.0)], ["a", "b", "c"])
    s.add([Job(1, 0, 0, "b", "b", cost=5.0)], ["a", "b", "c"])
    assert s.take("c", always) == Job(1, 0, 0, "b", "b", cost=5.0)  # 5 ms left at b, 2 at a


def test_an_unmeasured_device_is_as_much_slower_than_its_seed_as_the_measured_ones():
    """The host's load slows every emulated device: an rpi4 measured 25% over its seed makes
    the unmeasured rpi3 25% slower than its seed too; a small tile's per-call cost moves a
    pace by its small share of the work, not as one sample in two."""
    pace = Pace({"pi4": 10.0, "pi3": 30.0})
    pace.finished("pi4", Job(0, 0, 0, "pi4", "pi4", cost=10.0), compute_ms=150.0)
    assert pace.of("pi4") == pytest.approx(12.5)  # the seed counts as one task
    assert pace.of("pi3") == pytest.approx(37.5)
    pace.finished("pi4", Job(0, 1, 1, "pi4", "pi4", cost=1.0), compute_ms=30.0)
    assert pace.of("pi4") == pytest.approx(155.0 / 11.0)
    assert Pace().of("any") == 1.0


def test_a_task_goes_where_its_bytes_need_not_cross_the_medium_unless_that_is_later():
    """A level-1 tile's reused halo waits where its frame is gathered (``a``): ``b``, as fast
    and as idle, would fetch it first (300 ms), so ``a`` takes it; with ``a`` busy for a
    second, ``b`` does."""
    clock = Clock()
    tile = Job(0, 1, 1, "a", "a", cost=100.0)
    pace = Pace({"a": 1.0, "b": 1.0}, clock, transfer=lambda d, j: 0.0 if d == "a" else 300.0)
    s = Stealing(prefetch=1, pace=pace)
    s.add([tile], ["a", "b"])
    assert s.dispatch({"b": 1, "a": 1}, always) == [("a", tile)]
    s = Stealing(pace=pace)
    pace.handed("a", Job(0, 0, 0, "a", "a", cost=1000.0))
    s.add([tile], ["a", "b"])
    assert s.dispatch({"b": 1, "a": 0}, always) == [("b", tile)]


def test_stealing_queues_a_later_block_of_an_older_frame_before_a_newer_frame():
    """Frames in flight: frame 1's first block is queued while frame 0 still runs; frame 0's
    second block (tiles 4-5, after its sync point) then goes before frame 1's tiles."""
    s = Stealing()
    s.add(jobs(0, "a", ["b"] * 4), ["b"])
    assert [s.take("b", always).tile for _ in range(4)] == [0, 1, 2, 3]
    s.add(jobs(1, "a", ["b"] * 4), ["b"])
    s.add([Job(0, 4, 0, "a", "b"), Job(0, 5, 0, "a", "b")], ["b"])
    got = [s.take("b", always) for _ in range(6)]
    assert [(j.frame, j.tile) for j in got] == [(0, 4), (0, 5), (1, 0), (1, 1), (1, 2),
                                                (1, 3)]


def test_eager_stealing_lets_a_slow_idle_device_take_a_tile_a_busy_fast_one_would_finish_first():
    """A plan priced as stealing across frames in flight counts on the rpi3's share: eager,
    the idle rpi3 takes the waiting whole-frame tile that Pace's test keeps for the busy
    rpi4 (which would finish it sooner)."""
    def setup(eager: bool) -> Stealing:
        clock = Clock()
        s = Stealing(pace=Pace({"pi4": 1.0, "pi3": 3.0}, clock), eager=eager)
        s.add([Job(f, 0, 0, "pi4", "pi4", cost=100.0) for f in range(2)], ["pi4", "pi3"])
        assert s.dispatch({"pi4": 1, "pi3": 0}, always)[0][0] == "pi4"
        clock.now = 0.01
        return s
    assert setup(False).dispatch({"pi4": 0, "pi3": 1}, always) == []
    assert setup(True).dispatch({"pi4": 0, "pi3": 1}, always) == [
        ("pi3", Job(1, 0, 0, "pi4", "pi4", cost=100.0))]


def test_eager_stealing_hands_a_tile_to_an_idle_device_before_a_busy_ones_prefetch():
    """With room for a prefetch, the device holding fewer tasks asks first, whatever the
    order the devices are listed in."""
    s = Stealing(prefetch=1, pace=Pace(clock=Clock()), eager=True)
    s.add([Job(0, 0, 0, "a", "a", cost=10.0)], ["a", "b"])
    assert s.dispatch({"a": 1, "b": 2}, always) == [("b", Job(0, 0, 0, "a", "a", cost=10.0))]


def test_a_device_with_a_backlog_steals_only_what_no_other_device_would_finish_sooner():
    """The gateway has rests to run for the frames in flight (Pace's backlog): even eager,
    it leaves a tile to a device that would be done with it first, and takes it when its
    backlog is gone."""
    backlog = {"gw": 500.0}
    clock = Clock()
    s = Stealing(pace=Pace({"gw": 1.0, "pi4": 1.0}, clock, backlog=lambda d: backlog.get(d, 0.0)),
                 eager=True)
    s.add([Job(0, 0, 0, "gw", "gw", cost=100.0), Job(1, 0, 0, "gw", "gw", cost=100.0)],
          ["gw", "pi4"])
    assert s.dispatch({"gw": 1, "pi4": 1}, always) == [
        ("pi4", Job(0, 0, 0, "gw", "gw", cost=100.0))]  # gw: 600 ms, pi4: 100
    assert s.pending() == 1  # pi4 would still finish the second first (200 vs 600)
    backlog["gw"] = 0.0
    assert s.dispatch({"gw": 1, "pi4": 0}, always) == [
        ("gw", Job(1, 0, 0, "gw", "gw", cost=100.0))]


def test_a_thief_takes_a_tile_it_finishes_before_the_source_is_done_with_its_queue():
    """One source holding a tile and four more queued (10 ms each) and an idle thief whose
    crop and result take 25 ms on the medium: the source would finish any one tile before
    the thief (20 vs 35 ms) but not its whole queue (50 ms), so the thief takes one; a second
    of that frame (45 vs 40 ms) it does not, but one of the next frame, which the source would
    reach only after both frames' queues."""
    clock = Clock()
    pace = Pace({"src": 1.0, "thief": 1.0}, clock,
                transfer=lambda d, j: 0.0 if d == "src" else 25.0)
    s = Stealing(prefetch=1, pace=pace)
    s.add(jobs(0, "src", ["src"] * 5) + jobs(1, "src", ["src"] * 20), ["src", "thief"])
    for queue in s.queues.values():
        for k, job in enumerate(queue):
            queue[k] = Job(job.frame, job.tile, 0, job.source, job.planned, cost=10.0)
    got = s.dispatch({"src": 1, "thief": 2}, always)
    assert got == [("src", Job(0, 0, 0, "src", "src", cost=10.0)),
                   ("thief", Job(0, 1, 0, "src", "src", cost=10.0)),
                   ("thief", Job(1, 0, 0, "src", "src", cost=10.0))]
    # without the queue counted, the same thief took none (the source is 20 ms from any tile)
    pace2 = Pace({"src": 1.0, "thief": 1.0}, Clock(),
                 transfer=lambda d, j: 0.0 if d == "src" else 25.0)
    pace2.handed("src", Job(0, 0, 0, "src", "src", cost=10.0))
    tile = Job(0, 1, 0, "src", "src", cost=10.0)
    assert not pace2.first_to_finish("thief", tile, ["src", "thief"])
    assert pace2.first_to_finish("thief", tile, ["src", "thief"],
                                 ahead=lambda d, j: 30.0 if d == "src" else 0.0)
