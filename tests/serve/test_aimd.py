"""Clipper's adaptive batch size: additive increase on full batches within the objective,
multiplicative decrease (10%) on a batch over it, within [1, max batch]."""

import pytest

from edgeweave.serve.aimd import AIMDBatchSize


def test_full_batches_within_the_objective_raise_the_limit_by_the_step():
    aimd = AIMDBatchSize(slo_s=0.1, max_batch=8, start=1, step=1)
    limits = [aimd.observe(aimd.limit, 0.05) for _ in range(10)]
    assert limits == [2, 3, 4, 5, 6, 7, 8, 8, 8, 8]


def test_a_batch_smaller_than_the_limit_says_nothing_about_raising_it():
    aimd = AIMDBatchSize(slo_s=0.1, max_batch=8, start=4)
    assert aimd.observe(2, 0.01) == 4


def test_a_batch_over_the_objective_cuts_the_limit_by_ten_percent():
    aimd = AIMDBatchSize(slo_s=0.1, max_batch=32, start=20)
    assert aimd.observe(20, 0.2) == 18  # 20 * 0.9
    assert aimd.observe(18, 0.2) == 16  # 18 * 0.9 = 16.2
    for _ in range(50):
        aimd.observe(aimd.limit, 0.5)
    assert aimd.limit == 1


def test_it_settles_where_the_latency_crosses_the_objective():
    """A model taking 10 ms per request with a 55 ms objective: the limit climbs to 5 (50 ms)
    and oscillates around the crossing, never far above it."""
    aimd = AIMDBatchSize(slo_s=0.055, max_batch=64)
    seen = []
    for _ in range(60):
        size = aimd.limit
        seen.append(aimd.observe(size, 0.010 * size))
    assert max(seen[20:]) <= 6 and min(seen[20:]) >= 4


def test_it_needs_an_objective():
    with pytest.raises(ValueError):
        AIMDBatchSize(slo_s=0, max_batch=4)
