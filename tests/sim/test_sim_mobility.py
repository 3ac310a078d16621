"""Nomadic mobility and Poisson active/idle requests, drawn for all devices at once: dwell times
have the places' means, a move always changes place, first places follow attractiveness, and
request counts follow the active fraction and interval."""

from __future__ import annotations

import numpy as np
import pytest

from edgeweave.sim.mobility import Timeline, nomadic
from edgeweave.sim.workload import on_off_periods


def _dwell_times(d, t, p, duration):
    """Completed stays (place, length) from itineraries, ignoring each device's last one."""
    order = np.lexsort((t, d))
    d, t, p = d[order], t[order], p[order]
    same = d[1:] == d[:-1]
    return p[:-1][same], (t[1:] - t[:-1])[same], p[1:][same]


def test_dwell_times_have_each_places_mean_and_moves_change_place():
    rng = np.random.default_rng(0)
    dwell = [30.0, 120.0, 60.0]
    d, t, p = nomadic(np.arange(3000), [0, 1, 2], [1.0, 2.0, 1.0], dwell, 3600.0, rng)
    place, length, nxt = _dwell_times(d, t, p, 3600.0)
    assert (place != nxt).all()
    for k, mean in enumerate(dwell):
        # stays cut short by the end of the run are excluded, so these are exponential
        assert length[place == k].mean() == pytest.approx(mean, rel=0.05)


def test_first_places_and_next_places_follow_attractiveness():
    rng = np.random.default_rng(1)
    d, t, p = nomadic(np.arange(20_000), [0, 1, 2], [1.0, 3.0, 1.0], [50.0] * 3, 200.0, rng)
    first = p[t == 0]
    assert np.bincount(first, minlength=3) / len(first) == pytest.approx([0.2, 0.6, 0.2],
                                                                          abs=0.02)
    place, _, nxt = _dwell_times(d, t, p, 200.0)
    # leaving place 0, the others are chosen 3:1
    assert (nxt[place == 0] == 1).mean() == pytest.approx(0.75, abs=0.02)


def test_a_single_place_means_no_moves():
    _d, t, p = nomadic(np.arange(5), [2], [1.0, 1.0, 1.0], [10.0] * 3, 1000.0,
                      np.random.default_rng(0))
    assert (t == 0).all() and (p == 2).all()


def test_timeline_lookup_for_one_device_and_for_many_at_once():
    tl = Timeline.build(np.array([0, 0, 1, 0]), np.array([0.0, 5.0, 0.0, 9.5]),
                        np.array([3, 4, 7, 5]), n_devices=2)
    assert [tl.at_one(0, x) for x in (0.0, 4.999, 5.0, 9.0, 9.5, 100.0)] == [3, 3, 4, 4, 5, 5]
    assert tl.at_one(1, 50.0) == 7
    got = tl.at(np.array([0, 1, 0, 0]), np.array([1.0, 3.0, 6.0, 10.0]))
    assert got.tolist() == [3, 7, 4, 5]
    assert tl.changes_between(0, 1.0, 6.0) and not tl.changes_between(0, 5.0, 9.0)


def test_on_off_requests_follow_the_active_fraction_and_interval():
    rng = np.random.default_rng(2)
    n, active, idle, duration, interval = 2000, 40.0, 20.0, 600.0, 5.0
    _dev, start, end = on_off_periods(n, active, idle, duration, rng)
    assert (start < end).all() and (end <= duration).all()
    on_time = (end - start).sum() / (n * duration)
    assert on_time == pytest.approx(active / (active + idle), rel=0.03)
    counts = rng.poisson((end - start) / interval)
    assert counts.sum() == pytest.approx(n * duration * on_time / interval, rel=0.02)


def test_always_active_devices_have_one_period():
    dev, start, end = on_off_periods(3, 10.0, 0.0, 100.0, np.random.default_rng(0))
    assert dev.tolist() == [0, 1, 2] and (start == 0).all() and (end == 100).all()
