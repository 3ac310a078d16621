"""Servers as queues: processor sharing over cores matches closed forms (M/D/1-PS response time
is S / (1 - rho), insensitive to the service distribution), admission refuses beyond slots +
queue, batches run together."""

from __future__ import annotations

import numpy as np
import pytest
import simpy

from edgeweave.sim.jitter import jitter
from edgeweave.sim.servers import BatchServer, PSServer


def _feed(env, server, arrivals, work_ms):
    def source():
        for t, w in zip(arrivals, work_ms, strict=True):
            yield env.timeout(t - env.now)
            server.submit(env.now, w, (t,))
    env.process(source())


def test_mdl_processor_sharing_mean_response_matches_closed_form():
    env = simpy.Environment()
    done: list[float] = []
    server = PSServer(env, "edge", cores=1, slots=10**6, queue=0,
                      on_done=lambda job, now: done.append(now - job[0]))
    rng = np.random.default_rng(1)
    s_ms, rho = 10.0, 0.7
    arrivals = np.cumsum(rng.exponential(s_ms / 1000 / rho, 40_000))
    _feed(env, server, arrivals, [s_ms] * len(arrivals))
    env.run()
    assert len(done) == len(arrivals)
    assert np.mean(done) * 1000 == pytest.approx(s_ms / (1 - rho), rel=0.05)


def test_jobs_within_the_cores_run_at_full_speed_and_share_beyond():
    env = simpy.Environment()
    done: dict[str, float] = {}
    server = PSServer(env, "edge", cores=2, slots=8, queue=0,
                      on_done=lambda job, now: done.__setitem__(job, now))
    server.submit(0.0, 100.0, "a")
    server.submit(0.0, 100.0, "b")
    env.run()
    assert done == pytest.approx({"a": 0.1, "b": 0.1})
    env = simpy.Environment()
    done.clear()
    server = PSServer(env, "edge", cores=2, slots=8, queue=0,
                      on_done=lambda job, now: done.__setitem__(job, now))
    for name in "abc":
        server.submit(0.0, 100.0, name)  # 3 jobs on 2 cores: 2/3 speed each
    env.run()
    assert done == pytest.approx({"a": 0.15, "b": 0.15, "c": 0.15})


def test_a_short_job_overtakes_under_processor_sharing():
    env = simpy.Environment()
    done: dict[str, float] = {}
    server = PSServer(env, "edge", cores=1, slots=8, queue=0,
                      on_done=lambda job, now: done.__setitem__(job, now))
    server.submit(0.0, 100.0, "long")

    def later():
        yield env.timeout(0.05)
        server.submit(env.now, 10.0, "short")
    env.process(later())
    env.run()
    # at 50 ms the long job has 50 ms left; both share: short done after 20 ms, long 20 ms
    # later than it would have been
    assert done["short"] == pytest.approx(0.07)
    assert done["long"] == pytest.approx(0.11)


def test_admission_refuses_beyond_slots_and_queue_and_serves_the_queue_in_order():
    env = simpy.Environment()
    order: list[str] = []
    server = PSServer(env, "edge", cores=1, slots=1, queue=2,
                      on_done=lambda job, now: order.append(job))
    assert [server.submit(0.0, 10.0, j) for j in "abcd"] == [True, True, True, False]
    assert server.refused == 1 and server.in_system == 3
    env.run()
    assert order == ["a", "b", "c"]
    assert env.now == pytest.approx(0.03)


def test_load_factor_learns_the_slowdown():
    env = simpy.Environment()
    server = PSServer(env, "edge", cores=1, slots=8, queue=0, on_done=lambda job, now: None)
    for _ in range(4):
        server.submit(0.0, 10.0, None)  # four at once: each takes 4x its work
    env.run()
    # an EWMA (alpha 0.3) from 1.0 over four samples of 4x: 4 - 3 * 0.7^4
    assert server.load_factor == pytest.approx(4 - 3 * 0.7**4)


def test_a_full_batch_runs_at_once_and_a_lone_request_waits_the_delay():
    env = simpy.Environment()
    done: dict[str, float] = {}
    server = BatchServer(env, "edge", cores=1, queue=16, max_batch=4, max_delay_s=0.005,
                         marginal=0.25, on_done=lambda job, now: done.__setitem__(job, now))
    for j in "abcd":
        server.submit(0.0, 20.0, j)
    env.run()
    assert done == pytest.approx(dict.fromkeys("abcd", 0.020 * (1 + 0.25 * 3)))
    assert server.batches == 1
    done.clear()
    server.submit(env.now, 20.0, "e")
    t0 = env.now
    env.run()
    assert done["e"] - t0 == pytest.approx(0.005 + 0.020)


def test_a_held_slot_is_free_only_after_release():
    env = simpy.Environment()
    done: dict[str, float] = {}
    server = PSServer(env, "edge", cores=1, slots=1, queue=4,
                      on_done=lambda job, now: done.__setitem__(job, now))
    server.submit(0.0, 10.0, "forwarded", hold=True)
    server.submit(0.0, 10.0, "next")
    env.run()
    # the first computed for 10 ms but keeps its slot (its reply is still upstream)
    assert done == pytest.approx({"forwarded": 0.01}) and server.in_system == 2

    def reply_back():
        yield env.timeout(0.5 - env.now)
        server.release(env.now)
    env.process(reply_back())
    env.run()
    assert done["next"] == pytest.approx(0.51) and server.in_system == 0


def test_service_jitter_keeps_the_mean_and_lengthens_the_queueing_tail():
    """Gamma factors of mean 1 on each request's work: single requests spread, and a FIFO
    server (one slot) 70% busy waits as Pollaczek-Khinchine says, rho S (1 + cv^2) /
    (2 (1 - rho)): twice as long with exponential work (cv 1) as with fixed work."""
    rho, work = 0.7, 12.0
    arrivals = np.cumsum(np.random.default_rng(3).exponential(work / 1000.0 / rho, 20000))

    def response_ms(cv):
        env = simpy.Environment()
        done = {}
        server = PSServer(env, "edge", cores=1, slots=1, queue=10**6,
                          on_done=lambda job, now: done.__setitem__(job[0], now),
                          jitter=jitter(cv, np.random.default_rng(7)))
        _feed(env, server, arrivals, [work] * len(arrivals))
        env.run()
        return np.array([done[t] - t for t in arrivals]) * 1000.0

    fixed, varied = response_ms(0.0), response_ms(1.0)
    assert fixed.min() == pytest.approx(work)
    assert varied.min() < work / 10
    for got, cv in ((fixed, 0.0), (varied, 1.0)):
        assert got.mean() - work == pytest.approx(rho * work * (1 + cv**2) / (2 * (1 - rho)),
                                                  rel=0.15)
    assert np.percentile(varied, 95) > 1.5 * np.percentile(fixed, 95)
    j = jitter(0.5, np.random.default_rng(2))
    factors = np.array([j() for _ in range(20000)])
    assert factors.mean() == pytest.approx(1.0, abs=0.02)
    assert factors.std() == pytest.approx(0.5, abs=0.02)
    assert jitter(0.0, np.random.default_rng(2)) is None
