"""Admission under steady overload, on the engine's own clock (no threads, no real timing):
the node admits what the batches its scheduler will form can serve in time, so a deep enough
queue builds for full batches, and it never admits a request those batches would serve late."""

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


def overload(lat: LatencyModel, slo_s: float, rate: float, duration_s: float = 4.0,
             max_queue: int = 32) -> dict:
    """Requests every 1/`rate` s, each due `slo_s` after it arrives, on one worker whose
    batches take exactly their estimate; what became of them."""
    now = [0.0]
    node = NodeServing(workers=1, max_batch=8, max_queue=max_queue)
    e = Engine(node, clock=lambda: now[0])
    m = e.add("m", "m", Doubler(), resolve(ServingConfig(max_batch=8), node), lat)
    arrivals = [k / rate for k in range(int(duration_s * rate))]
    out = {"sent": len(arrivals), "on_time": 0, "late": 0, "rejected": 0, "dropped": 0,
           "sizes": []}
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
            e.finished(0, m, batch)
            running = None
        while k < len(arrivals) and arrivals[k] <= now[0]:
            try:
                e.submit("m", x, deadline=arrivals[k] + slo_s)
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

