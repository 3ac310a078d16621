"""Links as FIFO queues: one transfer takes bytes/bandwidth + rtt/2; queued transfers wait for
the link; a trace's rate changes mid-transfer are integrated exactly; an M/M/1 link's mean
sojourn time matches the closed form."""

from __future__ import annotations

import numpy as np
import pytest

from edgeweave.sim.links import LinkQueue
from edgeweave.topology import BandwidthTrace, Link, transfer_ms


def link(mbps: float = 8.0, rtt_ms: float = 20.0, trace: BandwidthTrace | None = None) -> Link:
    data = {"from": "a", "to": "b", "mbps": mbps, "rtt_ms": rtt_ms}
    if trace is not None:
        data["trace"] = trace
    return Link.model_validate(data)


def test_one_transfer_is_serialisation_plus_propagation():
    q = LinkQueue(link(8.0, 20.0), "a-b")
    arrive, wait = q.send(now=1.0, nbytes=100_000)
    # 100 kB at 8 Mbit/s = 0.1 s, plus half of the 20 ms RTT: the planner's transfer_ms
    assert wait == 0.0
    assert arrive - 1.0 == pytest.approx(0.1 + 0.010)
    assert (arrive - 1.0) * 1000 == pytest.approx(transfer_ms(100_000, 8.0, 20.0))


def test_transfers_queue_first_come_first_served():
    q = LinkQueue(link(8.0, 0.0), "a-b")
    a1, w1 = q.send(0.0, 100_000)
    a2, w2 = q.send(0.05, 100_000)  # enters while the first is still on the wire
    assert (a1, w1) == pytest.approx((0.1, 0.0))
    assert w2 == pytest.approx(0.05)
    assert a2 == pytest.approx(0.2)
    assert q.backlog_s(0.1) == pytest.approx(0.1)


def test_per_device_links_do_not_queue_behind_each_other():
    q = LinkQueue(link(8.0, 0.0), "cell", per_device=True)
    assert q.send(0.0, 100_000, device=1)[0] == pytest.approx(0.1)
    assert q.send(0.0, 100_000, device=2)[0] == pytest.approx(0.1)
    assert q.send(0.0, 100_000, device=1)[0] == pytest.approx(0.2)


def test_a_full_buffer_drops_the_transfer():
    q = LinkQueue(link(8.0, 0.0), "a-b", buffer_s=0.15)
    q.send(0.0, 100_000)
    q.send(0.0, 100_000)  # waits 0.1 s: within the buffer
    assert q.send(0.0, 100_000) is None  # would wait 0.2 s


def test_a_trace_step_mid_transfer_is_integrated():
    # 8 Mbit/s for the first second, then 2 Mbit/s. 1.5 Mbit from t=0.5 leaves before the
    # step; 12 Mbit from t=0.5 sends 4 Mbit at 8, then the other 8 Mbit at 2 (4 s more)
    trace = BandwidthTrace(t_s=[0.0, 1.0, 100.0], mbps=[8.0, 2.0, 2.0])
    q = LinkQueue(link(trace=trace, rtt_ms=0.0), "a-b")
    assert q.send(0.5, 1.5e6 / 8 / 8)[0] == pytest.approx(0.5 + 0.1875 / 8)
    q2 = LinkQueue(link(trace=trace, rtt_ms=0.0), "a-b")
    assert q2.send(0.5, 1.5e6)[0] == pytest.approx(1.0 + 4.0)


def test_trace_segments_loop_like_mbps_at():
    trace = BandwidthTrace(t_s=[0.0, 1.0, 2.0], mbps=[5.0, 1.0, 3.0])  # period 3 s
    for t in (0.0, 0.5, 1.0, 2.5, 3.2, 7.9):
        mbps, until = trace.segment_at(t)
        assert mbps == trace.mbps_at(t)
        assert until > t and trace.mbps_at(until - 1e-9) == mbps
    assert trace.segment_at(4.5) == (1.0, 5.0)


def test_mm1_link_mean_sojourn_matches_closed_form():
    """Poisson arrivals, exponential sizes: E[T] = 1 / (mu - lambda) + rtt/2 (M/M/1)."""
    rng = np.random.default_rng(0)
    mbps, mean_bytes, lam = 8.0, 50_000, 12.0  # mu = 20 transfers/s, rho = 0.6
    mu = mbps * 1e6 / 8 / mean_bytes
    q = LinkQueue(link(mbps, 10.0), "a-b")
    t = np.cumsum(rng.exponential(1 / lam, 60_000))
    sizes = rng.exponential(mean_bytes, len(t))
    sojourn = [q.send(ti, b)[0] - ti for ti, b in zip(t, sizes, strict=True)]
    assert np.mean(sojourn) == pytest.approx(1 / (mu - lam) + 0.005, rel=0.05)
