"""The simulator against the real runtime (`runtime.lab` processes, same Plan, same link shaping
and dilation, same arrival times): median latency per request within a tolerance.

The issue's target is 10% (the benchmark reports the measured error per configuration); this
test guards the comparison with a wider tolerance, because a CI box shared with other jobs
slows the real servers by tens of percent in bursts the simulator cannot know about."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgeweave.sim.validate import CASES, arrivals, validate

TOLERANCE = 0.25


@pytest.mark.slow  # profiles alexnet and starts edge and cloud servers per case
@pytest.mark.parametrize("name", ["chain", "shared-edge"])
def test_simulated_median_latency_matches_the_real_runtime(name):
    case = dataclasses.replace(CASES[name], duration_s=10.0)
    f = validate(case, model="alexnet", repeats=5)
    assert len(f.sim_ms) == len(f.real_ms) == f.requests > 5
    assert np.isfinite(f.real_ms).all()
    row = f.row()
    assert abs(row["err_p50"]) < TOLERANCE, row


def test_both_sides_replay_the_same_arrivals():
    t, d = arrivals(CASES["shared-edge"], seed=3)
    assert (np.diff(t) >= 0).all() and set(d.tolist()) == {0, 1, 2, 3}
    t2, d2 = arrivals(CASES["shared-edge"], seed=3)
    assert (t == t2).all() and (d == d2).all()
