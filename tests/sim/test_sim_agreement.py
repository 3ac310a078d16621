"""How far a fidelity row can be trusted (`sim.agreement`): paired block-bootstrap intervals on
its percentiles and errors, and the edge's batch-size distribution."""

from __future__ import annotations

import numpy as np
import pytest

from edgeweave.sim.agreement import (
    batch_sizes,
    block_indices,
    intervals,
    mean_batch,
    timed_drift,
)
from edgeweave.sim.lab_run import RealRun


def test_block_resamples_keep_runs_of_consecutive_requests():
    idx = block_indices(125, 50, np.random.default_rng(0))
    assert idx.shape == (50, 125) and idx.min() >= 0 and idx.max() < 125
    blocks = idx[:, :125 // 5 * 5].reshape(50, -1, 5)  # block length 125 ** (1/3) = 5
    assert (np.diff(blocks, axis=2) == 1).all()


def test_the_error_interval_is_paired_and_the_p95_one_narrows_with_more_requests():
    """Each request's simulated latency 10% above its real one: every resample has the same
    error, so its interval is a point, however wide the real p95's own interval is. A p95
    from 100 requests rests on 5 of them; from 2,000 its interval is several times narrower."""
    rng = np.random.default_rng(1)
    widths = {}
    for n in (100, 2000):
        real = rng.lognormal(np.log(100.0), 0.4, n)
        got = intervals(1.1 * real, real)
        assert got["err_p95_ci"] == pytest.approx([0.1, 0.1])
        assert got["err_p50_ci"] == pytest.approx([0.1, 0.1])
        lo, hi = got["real_p95_ci_ms"]
        assert lo < np.percentile(real, 95) < hi
        widths[n] = hi - lo
        assert got["tail_requests"] == n // 20
    assert widths[2000] < widths[100] / 2


def test_an_unrelated_simulation_gets_a_wide_error_interval():
    rng = np.random.default_rng(2)
    real, sim = rng.lognormal(np.log(100.0), 0.4, (2, 100))
    lo, hi = intervals(sim, real)["err_p95_ci"]
    assert lo < 0 < hi and hi - lo > 0.2
    with pytest.raises(ValueError, match="as many simulated as real"):
        intervals(sim[:50], real)


def test_batch_sizes_count_requests_per_batch_size():
    sizes = batch_sizes([1, 3, 3, 3, 0, 1, 2, 2])
    assert sizes == {1: 2, 2: 2, 3: 3} and list(sizes) == [1, 2, 3]
    assert mean_batch(sizes) == pytest.approx((2 + 4 + 9) / 7)
    assert mean_batch(batch_sizes([0, 0])) is None


def test_timed_drift_compares_the_run_with_its_calibration_leaving_batches_out():
    """The host slowed by half during the timed run: its median and p95 show it; a request
    that ran in a batch of two (its compute is the batch's) is not counted."""
    warm = [{"edge_compute": 100.0 + k, "total_ms": 150.0} for k in range(21)]
    timed = [{"edge_compute": 150.0 + 1.5 * k} for k in range(21)] + [{"edge_compute": 900.0}]
    real = RealRun([1.0] * 22, 0, 0.0, warm[:10], timed, warm[10:], [1] * 21 + [2])
    got = timed_drift(real)
    assert got["edge"] == pytest.approx({"p50": 0.5, "p95": 0.5})


def test_a_measured_jitter_replays_its_samples_in_order_and_cycles():
    from edgeweave.sim.jitter import Jitter

    jit = Jitter(0.0, np.random.default_rng(0), [1.0, 3.0, 2.0])
    jit()  # a random draw first; in_order starts again from the first sample
    jit.in_order()
    assert [jit() for _ in range(5)] == pytest.approx([0.5, 1.5, 1.0, 0.5, 1.5])
    with pytest.raises(ValueError, match="only measured times"):
        Jitter(0.3, np.random.default_rng(0)).in_order()


def test_a_jitter_scale_slows_a_device_as_its_measured_load_says():
    """`Population.speed` 0.8 (a device measured 25% slower than its profile): its factors
    average 1.25, fixed or varying; at the profiled speed with no spread there is no jitter."""
    from edgeweave.sim.jitter import jitter

    fixed = jitter(0.0, np.random.default_rng(0), 1.25)
    assert fixed is not None and [fixed() for _ in range(3)] == pytest.approx([1.25] * 3)
    varying = jitter(0.3, np.random.default_rng(0), 1.25)
    assert np.mean([varying() for _ in range(20000)]) == pytest.approx(1.25, rel=0.02)
    measured = jitter([10.0, 30.0], np.random.default_rng(0), 1.25)
    assert sorted({measured() for _ in range(50)}) == pytest.approx([0.625, 1.875])
    assert jitter(0.0, np.random.default_rng(0)) is None
