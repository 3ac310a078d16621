"""The load generator's parts: arrivals, the open and closed loops against an in-process engine,
and the accounting (every request ends one way; the counts add up to what was sent)."""

import math
import threading
import time

import pytest
import torch
from serve_helpers import Doubler

from edgeweave.errors import ServeError
from edgeweave.serve import Engine, NodeServing, ServingConfig, Shed, resolve
from edgeweave.serve.latency import LatencyModel
from edgeweave.serve.loadgen import (
    KEYS,
    OK,
    REFUSED,
    Arrival,
    Fallback,
    Outcome,
    closed_loop,
    from_trace,
    open_loop,
    poisson,
    summarize,
    table,
)
from edgeweave.serve.pending import REASONS


def test_poisson_arrivals_follow_the_rates_and_the_seed():
    arrivals = poisson({"a": 300.0, "b": 100.0}, duration_s=10.0, clients=1000, seed=3)
    assert len(arrivals) == pytest.approx(4000, rel=0.1)
    share = sum(a.model == "a" for a in arrivals) / len(arrivals)
    assert share == pytest.approx(0.75, abs=0.03)
    assert all(0 <= a.at < 10 for a in arrivals) and len({a.client for a in arrivals}) > 900
    assert arrivals == poisson({"a": 300.0, "b": 100.0}, 10.0, 1000, seed=3)
    with pytest.raises(ServeError, match="positive total rate"):
        poisson({"a": 0.0}, 10.0, 10)


def test_a_trace_gives_the_arrival_times_and_names_a_bad_row(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text("time_s,model\n0.5,b\n0.1,a\n# a comment\n0.2\n")
    arrivals = from_trace(path, ["a", "b"], clients=5)
    assert [(a.at, a.model) for a in arrivals] == [(0.1, "a"), (0.2, "a"), (0.5, "b")]
    path.write_text("0.1,a\nsoon,a\n")
    with pytest.raises(ServeError, match="line 2: expected a time"):
        from_trace(path, ["a"], 5)
    path.write_text("0.1,zebra\n")
    with pytest.raises(ServeError, match="model 'zebra' is not one of"):
        from_trace(path, ["a"], 5)


class EngineTarget:
    """An engine in this process as the load generator's target."""

    def __init__(self, engine):
        self.engine = engine

    def send(self, model, client, deadline_s, priority, done):
        def go():
            try:
                self.engine.wait(self.engine.submit(model, (torch.ones(1, 2),),
                                                    time.monotonic() + deadline_s, priority))
                done(Outcome(OK))
            except Shed as s:
                done(Outcome(REFUSED, s.reason, s.message))
        threading.Thread(target=go).start()


@pytest.fixture
def overloaded():
    """A model that takes 10 ms per request on one worker: 100 requests/s at most."""
    latency = LatencyModel()
    latency.seed(1, 0.01)
    e = Engine(NodeServing(workers=1, max_batch=1, max_queue=8)).start()
    e.add("m", "m", Doubler(per_item=0.01), resolve(ServingConfig(), e.node), latency)
    yield e
    e.stop()


def test_under_overload_every_request_ends_one_way_and_the_counts_add_up(overloaded):
    arrivals = poisson({"m": 300.0}, duration_s=1.0, clients=100, seed=1)
    run = open_loop(EngineTarget(overloaded), arrivals, {"m": 0.05},
                    Fallback({"m": 0.2}), drain_s=10, duration_s=1.0)
    (row,) = summarize(run, "engine", 3.0)
    assert row.sent == len(arrivals) and row.adds_up and row.lost == 0
    assert row.answered > 0 and row.fallback > 0 and row.rejected == row.fallback
    assert row.throughput_rps < 150 and row.goodput_rps <= row.throughput_rps
    # the engine refuses what it cannot serve in time (deadlines themselves are checked on the
    # model's clock in test_engine: here a busy host's thread wake-ups would add to them)
    assert 0 < row.slo_attainment < 1 and row.goodput_rps > 0
    assert list(row.as_json()) == [*KEYS, "throttled", "refusals"]
    assert "engine" in table([row])
    # each refusal is booked with the engine's reason and details, and they count the same
    assert sum(e["n"] for e in row.refusals.values()) == row.rejected
    refused = [r for r in run.records if r.end == "fallback"]
    assert refused and all(r.detail and r.status in REASONS for r in refused)


def test_refusals_are_booked_with_their_status_and_details_and_counted_by_rule():
    """A target that refuses every third request for a full queue, every third for a
    deadline (its details say how much time was left), answers the rest and fails none: the
    records keep each refusal's status and details, and the row counts them by status and by
    the rule the details name (figures aside), with an example as said."""
    class Refuser:
        def send(self, model, client, deadline_s, priority, done):
            k = client % 3
            if k == 0:
                done(Outcome(REFUSED, "RESOURCE_EXHAUSTED", f"queue holds {30 + client} (max)"))
            elif k == 1:
                done(Outcome(REFUSED, "DEADLINE_EXCEEDED",
                             f"cannot meet its deadline: {client}.5 ms left"))
            else:
                done(Outcome(OK))

    arrivals = [Arrival(0.001 * k, "m", k) for k in range(9)]
    run = open_loop(Refuser(), arrivals, {"m": 1.0}, Fallback(), drain_s=5, duration_s=0.01)
    by_client = {r.client: r for r in run.records}
    assert by_client[4].status == "DEADLINE_EXCEEDED"
    assert by_client[4].detail == "cannot meet its deadline: 4.5 ms left"
    assert by_client[2].detail == "" and by_client[2].end == "answered"
    (row,) = summarize(run, "refuser", 1.0)
    assert row.rejected == 6 and row.adds_up
    assert row.refusals == {
        "RESOURCE_EXHAUSTED": {"n": 3, "why": {"queue holds N (max)": 3},
                               "example": {"queue holds N (max)": "queue holds 30 (max)"}},
        "DEADLINE_EXCEEDED": {"n": 3, "why": {"cannot meet its deadline: N ms left": 3},
                              "example": {"cannot meet its deadline: N ms left":
                                          "cannot meet its deadline: 1.5 ms left"}}}
    assert row.as_json()["refusals"] == row.refusals


def test_without_a_fallback_a_refused_request_stays_refused(overloaded):
    run = open_loop(EngineTarget(overloaded), poisson({"m": 400.0}, 0.5, 10, seed=2),
                    {"m": 0.03}, Fallback(enabled=False), drain_s=10, duration_s=0.5)
    (row,) = summarize(run, "engine")
    assert row.fallback == 0 and row.refused == row.rejected > 0 and row.adds_up


def test_a_closed_loop_keeps_one_request_per_device_in_flight(overloaded):
    run = closed_loop(EngineTarget(overloaded), clients=3, models=["m"], duration_s=0.5,
                      slo_s={"m": 1.0}, drain_s=10)
    (row,) = summarize(run, "engine")
    assert row.sent > 10 and row.adds_up and row.answered == row.sent
    by_client = {}
    for r in sorted(run.records, key=lambda r: r.sent):
        prev = by_client.get(r.client)
        assert prev is None or r.sent >= prev.sent + prev.latency_s - 1e-3  # one at a time
        by_client[r.client] = r
    assert math.isclose(run.duration_s, 0.5)


@pytest.mark.slow
def test_sender_processes_share_one_schedule_each_device_in_one_and_the_counts_add_up():
    """Two sender processes play one Poisson schedule: every request is in the merged run once,
    on one time line, each device sent by one process only, and both processes sent. (Slow:
    each spawned process imports torch, 3-9 s on a busy 2-core host.)"""
    import os

    from serve_helpers import PidTarget

    from edgeweave.serve.loadgen import SenderPool

    arrivals = poisson({"m": 400.0}, 0.5, 50, seed=4)
    with SenderPool(PidTarget, processes=2) as pool:
        run = pool.open_loop(arrivals, {"m": 0.1}, Fallback({"m": 0.01}), drain_s=5,
                             duration_s=0.5)
    (row,) = summarize(run, "senders", 1.0)
    assert row.sent == len(arrivals) and row.adds_up and row.lost == 0
    assert row.fallback == row.rejected == len(arrivals)
    by_client = {}
    for r in run.records:
        by_client.setdefault(r.client, set()).add(r.status)
    assert all(len(pids) == 1 for pids in by_client.values())
    pids = set().union(*by_client.values())
    assert len(pids) == 2 and str(os.getpid()) not in pids
    sent = [r.sent for r in run.records]
    assert sent == sorted(sent) and sent[0] >= 0.0 and sent[-1] < 0.5 + run.lag_s + 0.1
