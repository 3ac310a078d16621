"""In-process shaping: token-bucket timing, sharing, rate changes, propagation delay, replay."""

from __future__ import annotations

import threading
import time

import pytest

from edgeweave.runtime.shaper import LinkShaper, TokenBucket, sleep_until
from edgeweave.topology import BandwidthTrace


def _timed(fn, *args) -> float:
    start = time.monotonic()
    fn(*args)
    return time.monotonic() - start


def _took(elapsed: float, expected: float, rel: float = 0.15) -> bool:
    """True if a real-clock wait took ``expected`` seconds: never noticeably early, and late by
    at most ``rel`` of it or 40 ms, whichever is more (a loaded CI host stalls a process for
    several milliseconds; a shaper that ignored its rate would be off by far more)."""
    return expected * (1 - min(rel, 0.05)) <= elapsed <= expected + max(expected * rel, 0.04)


def _wait_for(predicate, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def test_token_bucket_rate_200kb_at_16mbit():
    bucket = TokenBucket(16)
    elapsed = _timed(bucket.consume, 200_000)  # 200 KB at 2 MB/s
    assert _took(elapsed, 0.1)


def test_token_bucket_1mb_at_8mbit_takes_one_second():
    bucket = TokenBucket(8)
    elapsed = _timed(bucket.consume, 1_000_000)
    # 5%: on a host loaded to 8 (2 cores) the last of its 61 chunks woke 44 ms late;
    # a bucket that ignored its rate or its burst would be off by far more
    assert _took(elapsed, 1.0, rel=0.05)


def test_token_bucket_burst_passes_at_once_then_refills_only_to_burst():
    bucket = TokenBucket(8, burst_bytes=50_000)
    assert _timed(bucket.consume, 50_000) < 0.03
    time.sleep(0.1)  # 100 KB worth of idle time, but the bucket holds only 50 KB
    assert _timed(bucket.consume, 50_000) < 0.03
    assert _took(_timed(bucket.consume, 50_000), 0.05, rel=0.25)


def test_token_bucket_concurrent_senders_share_the_rate():
    bucket = TokenBucket(8)  # 1 MB/s
    times: dict[int, float] = {}
    barrier = threading.Barrier(2)

    def send(i: int) -> None:
        barrier.wait(timeout=2)
        times[i] = _timed(bucket.consume, 100_000)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=3)
    total = time.monotonic() - start
    assert total == pytest.approx(0.2, rel=0.15)  # sum of the two solo times
    # Chunks interleave like packets: neither sender gets the link to itself.
    assert min(times.values()) > 0.13


def test_token_bucket_set_rate_mid_transfer_applies_to_waiters():
    bucket = TokenBucket(8)  # 300 KB alone would take 0.3 s
    timer = threading.Timer(0.1, bucket.set_rate, args=(80,))
    timer.start()
    try:
        elapsed = _timed(bucket.consume, 300_000)
    finally:
        timer.cancel()
    # ~100 KB in the first 0.1 s at 1 MB/s, the remaining ~200 KB at 10 MB/s: ~0.12 s.
    assert 0.1 < elapsed < 0.16
    assert bucket.mbps == pytest.approx(80)


def test_token_bucket_rejects_bad_values():
    with pytest.raises(ValueError, match="Mbit/s"):
        TokenBucket(0)
    with pytest.raises(ValueError, match="Mbit/s"):
        TokenBucket(float("nan"))
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(8, burst_bytes=0)
    bucket = TokenBucket(8)
    with pytest.raises(ValueError, match="nbytes"):
        bucket.consume(-1)
    with pytest.raises(ValueError, match="Mbit/s"):
        bucket.set_rate(-3)
    assert bucket.consume(0) < 0.01


def test_sleep_until_is_precise(monkeypatch):
    """On a fake clock whose sleeps overshoot by 50 µs, sleep_until ends within one fine step
    past the deadline, never before it, and sleeps coarsely only while far from it (the real
    clock is not asserted on: a loaded CI host can stall any process for milliseconds)."""
    now = [100.0]
    sleeps: list[float] = []

    def fake_sleep(s: float) -> None:
        assert s > 0
        sleeps.append(s)
        now[0] += s + 50e-6

    monkeypatch.setattr(time, "sleep", fake_sleep)
    deadline = now[0] + 0.05
    sleep_until(deadline, clock=lambda: now[0])
    assert 0 <= now[0] - deadline < 0.0002
    assert sleeps[0] > 0.045 and all(s <= 0.0001 for s in sleeps[1:])
    assert len(sleeps) < 20
    sleeps.clear()
    sleep_until(now[0] - 1, clock=lambda: now[0])  # a deadline already past: no sleep at all
    assert sleeps == []


def test_link_shaper_adds_half_the_rtt():
    link = LinkShaper(80, rtt_ms=100)  # 100 KB at 10 MB/s = 10 ms, plus 50 ms propagation
    assert _took(link.transmit(100_000), 0.06)
    assert _took(link.transmit(0), 0.05, rel=0.1)
    assert link.rtt_ms == 100 and link.mbps == pytest.approx(80)


def test_link_shaper_propagation_overlaps_between_senders():
    link = LinkShaper(1000, rtt_ms=200)
    threads = [threading.Thread(target=link.transmit, args=(1000,)) for _ in range(4)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=2)
    assert time.monotonic() - start < 0.15  # four overlapping 100 ms one-way delays


def test_link_shaper_set_mbps_and_bad_rtt():
    link = LinkShaper(8, rtt_ms=0)
    link.set_mbps(16)
    assert _took(link.transmit(200_000), 0.1)
    with pytest.raises(ValueError, match="rtt_ms"):
        LinkShaper(8, rtt_ms=-1)


def test_link_shaper_replays_a_bandwidth_trace():
    trace = BandwidthTrace(t_s=[0, 0.2], mbps=[8, 80])  # loops every 0.4 s
    link = LinkShaper(1, rtt_ms=0)
    handle = link.replay(trace)
    try:
        assert link.mbps == pytest.approx(8)  # first sample applied before replay() returns
        # 300 KB: 200 KB in the first 0.2 s at 1 MB/s, then 100 KB at 10 MB/s -> ~0.21 s.
        elapsed = link.transmit(300_000)
        assert 0.19 < elapsed < 0.26
        assert link.mbps == pytest.approx(80)
        assert _wait_for(lambda: link.mbps == pytest.approx(8), timeout=0.5)  # looped at 0.4 s
        changes = [t for t, _ in handle.applied]
        assert changes[1] == pytest.approx(0.2, abs=0.02)
        assert handle.error is None
    finally:
        link.stop()
    assert not handle.running


def test_replay_follows_the_injected_clock_and_duration():
    class Trace:  # anything with t_s, mbps and mbps_at will do
        def __init__(self) -> None:
            self.t_s = [10.0, 11.0]
            self.mbps = [5.0, 50.0]

        def mbps_at(self, t: float) -> float:
            return self.mbps[0] if (t - 10.0) % 2.0 < 1.0 else self.mbps[1]

    now = [0.0]
    link = LinkShaper(1, rtt_ms=0)
    handle = link.replay(Trace(), clock=lambda: now[0], duration_s=1.5)
    try:
        assert link.mbps == pytest.approx(5)
        now[0] = 1.2  # fake time jumps past the second sample
        assert _wait_for(lambda: link.mbps == pytest.approx(50), timeout=1.5)
        now[0] = 1.6  # past duration_s: the replay ends by itself
        assert _wait_for(lambda: not handle.running, timeout=1.5)
    finally:
        handle.stop()


def test_replay_of_a_constant_trace_applies_once_and_ends():
    link = LinkShaper(1, rtt_ms=0)
    handle = link.replay(BandwidthTrace(t_s=[0], mbps=[42]))
    assert link.mbps == pytest.approx(42)
    assert _wait_for(lambda: not handle.running, timeout=1.0)
    link.stop()
