"""The scheduler's choices on a fixed clock: EDF across models, batches that fit the most
urgent deadline, waiting for a batch to fill, shedding what cannot be served in time."""

import math

import pytest
import torch
from serve_helpers import item, model, scheduler

from edgeweave.serve.latency import LatencyModel
from edgeweave.serve.pending import Pending, Shed
from edgeweave.serve.scheduler import start_after


def test_edf_runs_the_model_whose_most_urgent_request_is_due_first():
    s = scheduler("edf")
    a, b = model("a", s), model("b", s)
    a.push(item("a", deadline=5.0, arrival=0.0))
    b.push(item("b", deadline=1.0, arrival=0.5))  # arrived later, due sooner
    first = s.next([a, b], now=0.6)
    assert first.model is b
    assert s.next([a, b], now=0.6).model is a


def test_fifo_runs_in_arrival_order_across_models():
    s = scheduler("fifo")
    a, b = model("a", s), model("b", s)
    a.push(item("a", deadline=5.0, arrival=0.0))
    b.push(item("b", deadline=1.0, arrival=0.5))
    assert s.next([a, b], now=0.6).model is a


def test_edf_serves_a_models_queue_by_deadline_and_batches_the_most_urgent():
    s = scheduler()
    m = model("m", s, max_batch=2)
    for d in (9.0, 3.0, 7.0, 1.0):
        m.push(item("m", deadline=d))
    got = s.next([m], now=0.0)
    assert [p.deadline for p in got.batch] == [1.0, 3.0]


def test_a_batch_is_cut_to_what_finishes_before_its_most_urgent_deadline():
    s = scheduler()
    m = model("m", s, seconds_per_item=0.1)  # batch of n: n * 100 ms
    for _ in range(8):
        m.push(item("m", deadline=0.35))
    got = s.next([m], now=0.0)
    assert len(got.batch) == 3  # 300 ms fits in 350 ms, 400 ms would not


def test_requests_that_cannot_meet_their_deadline_even_alone_are_dropped_unrun():
    s = scheduler()
    m = model("m", s, seconds_per_item=0.1)
    hopeless, fine = item("m", deadline=0.05), item("m", deadline=1.0)
    m.push(hopeless)
    m.push(fine)
    got = s.next([m], now=0.0)
    assert [p for p, _ in got.dropped] == [hopeless]
    shed = got.dropped[0][1]
    assert shed.reason == "deadline" and shed.stage == "dropped"
    assert got.batch == [fine]


def test_fifo_never_drops_for_deadlines():
    s = scheduler("fifo")
    m = model("m", s, seconds_per_item=0.1)
    m.push(item("m", deadline=0.01))
    got = s.next([m], now=5.0)
    assert not got.dropped and len(got.batch) == 1


def test_a_model_waits_up_to_max_delay_for_its_preferred_batch():
    s = scheduler()
    m = model("m", s, max_batch=8, max_delay_ms=50, preferred_batch=(4,))
    for _ in range(3):
        m.push(item("m", deadline=10.0, arrival=1.0))
    waiting = s.next([m], now=1.01)
    assert waiting.model is None and waiting.wake_at == pytest.approx(1.05)
    assert len(s.next([m], now=1.05).batch) == 3  # delay over: the largest batch possible
    for _ in range(5):
        m.push(item("m", deadline=10.0, arrival=2.0))
    assert len(s.next([m], now=2.0).batch) == 4  # the preferred size, at once


def test_waiting_for_a_batch_never_costs_the_most_urgent_request_its_deadline():
    s = scheduler()
    m = model("m", s, seconds_per_item=0.1, max_delay_ms=1000)
    m.push(item("m", deadline=1.25, arrival=1.0))
    waiting = s.next([m], now=1.0)
    assert waiting.wake_at == pytest.approx(1.05)  # 1.25 minus a batch of two's 200 ms


def test_arrivals_that_cannot_make_it_behind_the_queue_are_rejected():
    s = scheduler()
    m = model("m", s, seconds_per_item=0.1)
    s.check_deadline(m, item("m", deadline=1.0), now=0.0, backlog_s=0.5)
    with pytest.raises(Shed, match="cannot meet its deadline") as e:
        s.check_deadline(m, item("m", deadline=1.0), now=0.0, backlog_s=0.95)
    assert e.value.reason == "deadline" and e.value.stage == "rejected"
    with pytest.raises(Shed, match="passed"):
        s.check_deadline(m, item("m", deadline=1.0), now=2.0, backlog_s=0.0)
    s.check_deadline(m, item("m", deadline=math.inf), now=2.0, backlog_s=99.0)  # no deadline


def test_an_arrival_finishing_within_its_senders_grace_is_admitted():
    """An answer finished within the sender's grace past its deadline is still sent, so a
    request the estimate finishes there is admitted; one past the grace is refused."""
    s = scheduler()
    m = model("m", s, seconds_per_item=0.1)
    graced = Pending("m", (torch.zeros(1, 1),), 1.0, 0, 0.0, grace=0.1)
    s.check_deadline(m, graced, now=0.0, backlog_s=0.95)  # ends at 1.05: within the grace
    with pytest.raises(Shed, match=r"\+100 ms grace"):
        s.check_deadline(m, graced, now=0.0, backlog_s=1.05)


def test_a_full_queue_gives_up_its_lowest_priority_request_due_last():
    s = scheduler()
    m = model("m", s)
    low_late, low_soon, high = (item("m", 9.0, priority=0), item("m", 1.0, priority=0),
                                item("m", 5.0, priority=5))
    for p in (low_late, low_soon, high):
        m.push(p)
    assert s.victim([m], priority=3) is low_late
    assert s.victim([m], priority=0) is None  # nobody below priority 0


def test_a_batch_is_cut_to_what_finishes_in_time_even_when_it_runs_slow():
    """Batches of one model have taken 100 ms +- 50 ms per item: a batch must fit its most
    urgent deadline at the bound (mean + 2 deviations), not just on average."""
    s = scheduler()
    m = model("m", s, seconds_per_item=0.1)
    for n in (1, 8):
        m.latency.seed(n, 0.1 * n, spread=0.05 * n)
    assert m.latency.bound(3) == pytest.approx(0.3 + 2 * 0.15)
    for _ in range(8):
        m.push(item("m", deadline=0.55))
    got = s.next([m], now=0.0)
    assert len(got.batch) == 2  # 200 + 200 ms fits in 550 ms; on average 500 ms would too
    assert not got.dropped


def test_latency_bound_learns_the_spread_and_scales_it_to_unseen_sizes():
    lat = LatencyModel()
    lat.observe(4, 0.4)
    assert lat.bound(4) == lat.estimate(4) == pytest.approx(0.4)  # one sample: no spread
    for seconds in (0.6, 0.2, 0.6, 0.2):
        lat.observe(4, seconds)
    assert lat.bound(4) > lat.estimate(4)
    relative = (lat.bound(4) - lat.estimate(4)) / lat.estimate(4)
    assert (lat.bound(2) - lat.estimate(2)) / lat.estimate(2) == pytest.approx(relative)


def test_latency_estimates_of_unseen_sizes_follow_every_new_measurement():
    """Estimates are kept between measurements (admission asks for them on every request);
    each measurement of any size renews them."""
    lat = LatencyModel(alpha=1.0)
    lat.observe(1, 0.1)
    assert lat.estimate(4) == pytest.approx(0.4)  # one size seen: no batching gain assumed
    lat.observe(8, 0.45)
    assert lat.estimate(4) == pytest.approx(0.25) and lat.bound(4) == pytest.approx(0.25)
    lat.observe(8, 0.8)  # alpha 1: the new measurement replaces the mean
    assert lat.estimate(4) == pytest.approx(0.4)
    assert lat.bound(6) > lat.estimate(6)  # and its spread reaches the sizes nearest to 8


def test_one_stall_does_not_make_a_batch_size_look_slower_than_a_larger_one():
    """A stall of the shared host at one size (here 5x, measured up to 30x) must not price
    that size above a larger one: admission would count the queue in smaller batches and
    refuse requests that would have made it, and the scheduler, avoiding the size, would never
    measure it again."""
    s = scheduler()
    m = model("m", s, seconds_per_item=0.001, overhead=0.02)  # batch time nearly flat
    for n in range(1, 9):
        m.latency.observe(n, 0.02 + 0.001 * n)
    m.latency.observe(4, 0.1)  # one stall
    assert m.latency.estimate(4) <= m.latency.estimate(8)
    assert m.latency.bound(4) <= m.latency.bound(8)


def test_under_overload_the_requests_a_full_batch_cannot_serve_make_room_for_one():
    """Ten queued, a full batch of 8 takes 800 ms: the two due before 0.8 s are dropped
    (counted, with a deadline reason) and the eight behind them run as one batch."""
    s = scheduler()
    m = model("m", s, seconds_per_item=0.1)
    urgent = [item("m", deadline=0.5), item("m", deadline=0.7)]
    later = [item("m", deadline=1.0 + k / 10) for k in range(8)]
    for p in (*urgent, *later):
        m.push(p)
    got = s.next([m], now=0.0)
    assert [p for p, _ in got.dropped] == urgent
    assert all(shed.reason == "deadline" and shed.stage == "dropped" for _, shed in got.dropped)
    assert got.batch == later


@pytest.mark.parametrize("queued", [8, 9])
def test_no_early_drop_without_a_full_batch_behind_that_makes_it(queued):
    """Eight queued (no full batch behind the urgent one), or nine whose full batch would
    not make it either: the urgent one runs in a batch cut to fit it."""
    s = scheduler()
    m = model("m", s, seconds_per_item=0.1)
    m.push(item("m", deadline=0.35))
    for _ in range(queued - 1):
        m.push(item("m", deadline=0.75 if queued == 9 else 5.0))
    got = s.next([m], now=0.0)
    assert not got.dropped and got.batch[0].deadline == 0.35 and len(got.batch) == 3


def test_admission_refuses_exactly_the_requests_its_estimate_says_are_late():
    """Never a request whose estimate (queued work ahead + a batch of one, on average) fits
    its deadline; always one whose estimate does not."""
    import random

    rng = random.Random(3)
    s = scheduler()
    m = model("m", s, seconds_per_item=0.1)
    for _ in range(200):
        now, backlog, left = rng.uniform(0, 10), rng.uniform(0, 1), rng.uniform(0.01, 1.5)
        fits = backlog + m.latency.estimate(1) <= left
        try:
            s.check_deadline(m, item("m", deadline=now + left), now=now, backlog_s=backlog)
            refused = False
        except Shed:
            refused = True
        assert refused is not fits


@pytest.mark.parametrize("free, work, wait", [
    ([0.01, 0.15], 0.0, 0.01),  # the worker about to finish takes it, not the mean of both
    ([0.01, 0.15], 0.1, 0.11),  # queued work fills that worker first
    ([0.01, 0.15], 0.5, 0.33),  # enough to reach both: spread evenly
    ([0.0, 0.0], 0.2, 0.1),
    ([0.3], 0.1, 0.4),
])
def test_a_new_request_waits_for_the_first_worker_free_after_the_work_ahead(free, work, wait):
    assert start_after(free, work) == pytest.approx(wait)


def test_a_request_alone_on_the_node_runs_even_when_the_estimate_says_late():
    """The estimate (1 s a request) says it cannot make 100 ms; alone on the node it runs
    anyway (the estimate is corrected only by running), unless its deadline has passed;
    with another one queued, the estimate decides."""
    s = scheduler()
    m = model("m", s, seconds_per_item=1.0)
    lone = item("m", deadline=0.1)
    m.push(lone)
    assert s.next([m], now=0.0).batch == [lone]
    s.check_deadline(m, item("m", deadline=0.1), now=0.0, backlog_s=0.0, idle_node=True)
    with pytest.raises(Shed, match="cannot meet"):
        s.check_deadline(m, item("m", deadline=0.1), now=0.0, backlog_s=0.0)
    with pytest.raises(Shed, match="passed"):
        s.check_deadline(m, item("m", deadline=0.1), now=0.2, backlog_s=0.0, idle_node=True)
    past = item("m", deadline=0.1)
    m.push(past)
    got = s.next([m], now=0.2)
    assert [p for p, _ in got.dropped] == [past] and not got.batch
    a, b = item("m", deadline=0.1), item("m", deadline=5.0)
    m.push(a)
    m.push(b)
    got = s.next([m], now=0.0)
    assert [p for p, _ in got.dropped] == [a] and got.batch == [b]


def test_admission_places_a_request_as_the_scheduler_will_serve_it():
    """`place` plays the queue out as `next` serves it: a request the early drop would shed
    (a full batch is queued behind it and a full batch cannot serve it) is not served, one
    due later joins the full batch that runs, and `next` does what `place` said."""
    s = scheduler()
    m = model("m", s, seconds_per_item=0.01, overhead=0.05)  # batch of n: 50 + 10n ms
    for _ in range(4):
        m.push(item("m", deadline=0.1))
    for _ in range(8):
        m.push(item("m", deadline=1.0))
    urgent, later = item("m", deadline=0.1), item("m", deadline=1.0)
    assert s.place(m, s.order(urgent), [0.0]) == (0.0, 8, False)
    start, size, served = s.place(m, s.order(later), [0.0])
    assert (start, size, served) == (pytest.approx(0.13), 1, True)  # after the full batch
    got = s.next([m], now=0.0)
    assert len(got.dropped) == 4 and len(got.batch) == 8
    assert all(p.deadline == 1.0 for p in got.batch)


def test_a_size_not_measured_is_estimated_no_faster_than_a_smaller_measured_one():
    """Calibrated at 1, 2 and 8 (a large model: `calibrate`'s budget), a line fitted through
    a batch of one's faster path dips below size 2 at size 3; a batch is never estimated
    faster than a smaller one measured (nor slower than a larger one)."""
    m = LatencyModel()
    for size, seconds in {1: 0.01, 2: 0.05, 8: 0.11}.items():
        m.seed(size, seconds)
    estimates = [m.estimate(s) for s in range(1, 9)]
    assert estimates == sorted(estimates)
    assert m.estimate(3) >= 0.05 and m.estimate(7) <= 0.11
