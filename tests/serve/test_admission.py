"""Admission under steady overload, on the engine's own clock (no threads, no real timing):
the node admits what the batches its scheduler will form can serve in time, so a deep enough
queue builds for full batches, and it never admits a request those batches would serve late."""

from collections import Counter
from collections.abc import Callable

import pytest
import torch
from serve_helpers import Doubler

from edgeweave.serve import Engine, NodeServing, ServingConfig, Shed, resolve
from edgeweave.serve.latency import LatencyModel


def digits_like() -> LatencyModel:
    """Batches of 1 take 20 ms, of 8 40 ms (a small model: most of a batch's time is fixed),
    each with a 25% mean deviation, so a batch's high bound is 1.5x its mean."""
    lat = LatencyModel()
    lat.seed(1, 0.020, 0.005)
    lat.seed(8, 0.040, 0.010)
    return lat


def overload(lat: LatencyModel, slo_s: float | Callable[[int], float], rate: float,
             duration_s: float = 4.0, max_queue: int = 32) -> dict:
    """Requests every 1/`rate` s, each due `slo_s` after it arrives (or `slo_s(k)` for the
    k-th), on one worker whose batches take exactly their estimate; what became of them
    (`on_time_by_slo`: answered in time, by SLO)."""
    slo_of = slo_s if callable(slo_s) else lambda k: slo_s
    now = [0.0]
    node = NodeServing(workers=1, max_batch=8, max_queue=max_queue)
    e = Engine(node, clock=lambda: now[0])
    m = e.add("m", "m", Doubler(), resolve(ServingConfig(max_batch=8), node), lat)
    arrivals = [k / rate for k in range(int(duration_s * rate))]
    out: dict = {"sent": len(arrivals), "on_time": 0, "late": 0, "rejected": 0, "dropped": 0,
                 "sizes": [], "on_time_by_slo": Counter()}
    running: tuple[float, list] | None = None
    wake = None
    k = 0
    x = (torch.zeros(1, 1),)
    while k < len(arrivals) or running is not None or e.queued:
        now[0] = min(t for t in (arrivals[k] if k < len(arrivals) else None,
                                 running[0] if running else None, wake) if t is not None)
        if running is not None and running[0] <= now[0]:
            end, batch = running
            for p in batch:
                out["on_time" if end <= p.deadline else "late"] += 1
                if end <= p.deadline:
                    out["on_time_by_slo"][round(p.deadline - p.arrival, 6)] += 1
            e.finished(0, m, batch)
            running = None
        while k < len(arrivals) and arrivals[k] <= now[0]:
            try:
                e.submit("m", x, deadline=arrivals[k] + slo_of(k))
            except Shed:
                out["rejected"] += 1
            k += 1
        if running is None:
            d = e.dispatch(0, now[0])
            out["dropped"] += len(d.dropped)
            wake = d.wake_at
            if d.model is not None:
                running = (now[0] + lat.estimate(len(d.batch)), d.batch)
                out["sizes"].append(len(d.batch))
                wake = None
    assert out["on_time"] + out["late"] + out["rejected"] + out["dropped"] == out["sent"]
    return out


@pytest.mark.parametrize("slo_s", [0.1, 0.123])
def test_under_steady_overload_the_node_runs_full_batches_and_admits_only_what_it_serves(slo_s):
    """Twice the capacity (batches of 8: 200 requests a second; sent: 400). Admission that
    counted the queue in the batches the newcomer's slack allowed (twice a batch's high bound
    within it: batches of 3 at 100 ms) kept the queue shallow, and the node ran batches of 1 to
    3 cut to their head's deadline, about 60% of its capacity, dropping hundreds it had
    admitted. Admitting what the scheduler's own batches serve in time, uncut, it runs mostly
    full batches near its capacity, and every request it admits is answered in time."""
    got = overload(digits_like(), slo_s, rate=400.0, duration_s=4.0)
    capacity = 4.0 * 8 / 0.040
    assert got["on_time"] >= 0.9 * capacity
    assert got["late"] == 0 and got["dropped"] == 0  # admitted means answered in time
    assert sum(n for n in got["sizes"] if n >= 5) >= 0.8 * got["on_time"]


def test_at_light_load_nothing_is_refused():
    """A quarter of the capacity: every request is admitted and answered in time."""
    got = overload(digits_like(), 0.1, rate=50.0, duration_s=2.0)
    assert got["on_time"] == got["sent"]



def test_a_long_slo_request_left_out_of_a_cut_batch_waits_for_a_later_one():
    """Batches of 1 take 100 ms, of 8 480 ms. Seven requests due at 0.45 s fill a batch cut
    to 7 (a batch of 8 would end after 0.45 s). A request due at 2 s is ordered after them
    and left out of that batch: it can let it run and still make a batch of its own, so it is
    admitted (it was refused, as one whose batch is cut). One due at 0.6 s, within a full
    batch's bound of the cut batch's deadline, is refused as before."""
    lat = LatencyModel()
    lat.seed(1, 0.1)
    lat.seed(8, 0.48)
    node = NodeServing(workers=1, max_batch=8, max_queue=64)
    e = Engine(node, clock=lambda: 0.0)  # not started: nothing runs, the queue stays
    m = e.add("m", "m", Doubler(), resolve(ServingConfig(max_batch=8), node), lat)
    x = (torch.zeros(1, 1),)
    for _ in range(7):
        e.submit("m", x, deadline=0.45)
    with pytest.raises(Shed, match="cannot meet its deadline"):
        e.submit("m", x, deadline=0.6)
    late = e.submit("m", x, deadline=2.0)
    assert e.queued == 8
    first = e.dispatch(0, 0.0)
    assert len(first.batch) == 7 and late not in first.batch
    e.finished(0, m, first.batch)
    assert e.dispatch(0, lat.estimate(7)).batch == [late]


def test_under_overload_long_slo_requests_are_not_refused_behind_short_ones():
    """Twice the capacity, every other request due 50 ms after it arrives, the rest 300 ms:
    the short ones' batches are cut to their deadlines, and the long ones queued behind them
    were refused as if in those batches (5 of 400 served; all the node served were short
    ones, in batches of 1). Waiting for later batches, the long ones are served, in full
    batches, near the node's capacity."""
    got = overload(digits_like(), lambda k: (0.05, 0.3)[k % 2], rate=400.0, duration_s=2.0)
    capacity = 2.0 * 8 / 0.040
    assert got["on_time_by_slo"][0.3] >= 0.95 * got["sent"] / 2
    assert got["on_time"] >= 0.9 * capacity
    assert got["late"] == 0 and got["dropped"] == 0


def test_at_light_load_a_request_behind_a_cut_batch_is_judged_by_the_batch_it_runs_in():
    """ResNet-18's shape of latencies (58 ms alone, 400 ms for 8) and a 220 ms SLO, about one
    request a second. A batch overruns its estimate (a stall of the shared host) while two
    requests arrive; a third arrives 40 ms after the first: the three do not fit one batch by
    the first's deadline, so the first two run together and the third after them, alone, in
    time. It was refused as a newcomer left out of a cut batch and due soon after it, a rule
    for overload (there, admitted, it keeps the node in small batches); at this load it costs
    nobody anything (measured: ResNet-18 at half its capacity refused such requests)."""
    lat = LatencyModel()
    lat.seed(1, 0.058, 0.008)
    lat.seed(8, 0.40, 0.04)
    now = [0.0]
    node = NodeServing(workers=1, max_batch=8, max_queue=32)
    e = Engine(node, clock=lambda: now[0])
    m = e.add("m", "m", Doubler(), resolve(ServingConfig(max_batch=8), node), lat)
    x = (torch.zeros(1, 1),)
    for t in range(6):  # one a second, each served at once
        now[0] = float(t)
        e.submit("m", x, deadline=now[0] + 0.22)
        d = e.dispatch(0, now[0])
        assert len(d.batch) == 1
        if t < 5:
            e.finished(0, m, d.batch)
    running = d.batch  # the one at 5 s is estimated to end at 5.058 s, and overruns
    queued = []
    for t in (5.09, 5.095, 5.13):
        now[0] = t
        queued.append(e.submit("m", x, deadline=t + 0.22))  # the third was refused
    now[0] = 5.14  # the overrun batch ends
    e.finished(0, m, running)
    first = e.dispatch(0, now[0])
    assert first.batch == queued[:2]
    e.finished(0, m, first.batch)
    now[0] += lat.estimate(2)
    second = e.dispatch(0, now[0])
    assert second.batch == queued[2:]
    assert now[0] + lat.estimate(1) <= queued[2].deadline  # it makes its deadline alone


def test_a_node_whose_queue_fills_is_not_light_whatever_its_compute_estimate():
    """Requests that arrive slowly and compute fast by the estimate (one every 2 s, 100 ms
    alone) but pile up (here nobody serves them; live, a per-request cost the estimate does
    not count, as the dilated digits tenants' RPCs): with a batch's worth queued, a newcomer
    left out of a batch cut for more urgent ones and due soon after it is refused as under
    overload. By the rates and estimates alone the node counted as light and admitted it."""
    lat = LatencyModel()
    lat.seed(1, 0.1)
    lat.seed(8, 0.48)
    now = [0.0]
    node = NodeServing(workers=1, max_batch=8, max_queue=64)
    e = Engine(node, clock=lambda: now[0])
    e.add("m", "m", Doubler(), resolve(ServingConfig(max_batch=8), node), lat)
    x = (torch.zeros(1, 1),)
    for t in range(7):  # a batch cut to 7 at 18 s: 8 would end after 18.45 s
        now[0] = 2.0 * t
        e.submit("m", x, deadline=18.45)
    now[0] = 14.0
    e.submit("m", x, deadline=100.0)
    now[0] = 18.0
    with pytest.raises(Shed, match="cut to its deadline"):
        e.submit("m", x, deadline=18.6)
