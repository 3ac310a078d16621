"""Client-side throttling: nothing is kept back while the edge accepts, the excess over k x its
acceptances is once it refuses, the window forgets, and a throttled request is accounted for
(answered by its device, counted, never lost)."""

import pytest

from edgeweave.runtime.throttle import Throttle
from edgeweave.serve.loadgen import THROTTLED, Fallback, Outcome, open_loop, poisson, summarize


def test_an_edge_that_accepts_everything_is_never_throttled_even_before_it_answers():
    t = Throttle(k=1.25, window_s=2.0)
    assert all(t.admit(i * 0.0001) for i in range(100))  # sent, no answer yet: still sent
    for i in range(2000):
        now = 0.01 + i * 0.001
        assert t.admit(now)
        t.accepted(now)
    assert t.reject_probability(2.0) == 0.0


def test_refusals_throttle_the_excess_over_k_times_the_acceptances_then_the_window_forgets():
    t = Throttle(k=1.25, window_s=2.0, seed=1)
    sent = accepted = 0
    queue, served = 0.0, 0.0
    for i in range(8000):  # 2000 requests/s tried for 4 s; the edge serves 500/s at most,
        now = i * 0.0005   # with room for 10 waiting: it refuses the rest
        queue = max(0.0, queue - (now - served) * 500.0)
        served = now
        if t.admit(now):
            sent += 1
            if queue < 10:
                queue, accepted = queue + 1, accepted + 1
                t.accepted(now)
            else:
                t.refused(now)
    # what reaches the edge tends to k x what it accepts: 625/s of the 2000/s tried
    assert accepted == pytest.approx(2000, rel=0.05)
    assert sent == pytest.approx(1.25 * accepted, rel=0.15)
    p = t.reject_probability(2.0)
    assert 0.3 < p < 0.8
    assert t.reject_probability(10.0) == 0.0  # two windows later nothing is remembered
    off = Throttle(k=0.0)
    assert all(off.admit(i * 0.001) for i in range(100))  # k = 0: off
    with pytest.raises(ValueError, match="at least 1"):
        Throttle(k=0.5)


class _Throttling:
    """A target whose device throttles every other request and the edge answers the rest."""

    def __init__(self):
        self.n = 0

    def send(self, model, client, deadline_s, priority, done):
        self.n += 1
        done(Outcome(THROTTLED, "THROTTLED") if self.n % 2 else Outcome("ok"))


def test_a_throttled_request_is_answered_by_its_device_and_counted_not_lost():
    arrivals = poisson({"m": 400.0}, 0.25, 10, seed=1)
    run = open_loop(_Throttling(), arrivals, {"m": 0.1}, Fallback({"m": 0.05}), drain_s=5,
                    duration_s=0.25)
    (row,) = summarize(run, "t", 1.0)
    assert row.adds_up and row.lost == 0 and row.sent == len(arrivals)
    assert row.throttled == row.fallback == (len(arrivals) + 1) // 2
    assert row.rejected == 0 and row.as_json()["throttled"] == row.throttled
    run = open_loop(_Throttling(), arrivals, {"m": 0.1}, Fallback(enabled=False), drain_s=5,
                    duration_s=0.25)
    (row,) = summarize(run, "t", 1.0)
    assert row.adds_up and row.refused == row.throttled > 0 and row.fallback == 0
