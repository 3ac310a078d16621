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


def test_the_simulated_lab_varies_each_tiers_compute_as_the_warm_up_measured():
    from sim_helpers import toy_plan

    from edgeweave.sim.validate import compute_cvs, sim_scenario
    from edgeweave.topology import load_fleet

    warm = [{"device_compute": d, "edge_compute": 0.0, "cloud_compute": c}
            for d, c in ((30.0, 100.0), (33.0, 150.0), (27.0, 50.0), (30.0, 100.0))]
    cvs = compute_cvs(warm)
    assert set(cvs) == {"device", "cloud"}  # the edge computed nothing: no figure
    assert cvs["device"] == pytest.approx(np.std([30, 33, 27, 30], ddof=1) / 30.0)
    assert cvs["cloud"] == pytest.approx(np.std([100, 150, 50, 100], ddof=1) / 100.0)
    scn = sim_scenario(CASES["chain"], toy_plan(), load_fleet("pi4-wifi-edge-cloud"), cv=cvs)
    assert scn.populations[0].compute_cv == cvs["device"]
    assert scn.servers["cloud"].service_cv == cvs["cloud"] and scn.servers["edge"].service_cv == 0
    assert scn.applications[0].in_flight == 1  # the lab's client: one request at a time
