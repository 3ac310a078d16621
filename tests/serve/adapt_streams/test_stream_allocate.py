"""Stream configuration adaptation: the allocators respect capacity, the exact one is optimal,
VideoStorm's greedy is close, the fixed baseline sheds, and bad input is one clear error."""

from __future__ import annotations

import itertools
import math

import pytest

from edgeweave.serve.adapt_streams import Space, Stream, StreamConfig, allocate, fixed
from edgeweave.serve.stems import TenancyError

CONFIGS = (
    StreamConfig(8, "fp32", 0.95, 0.040),
    StreamConfig(8, "pruned", 0.93, 0.020),
    StreamConfig(6, "fp32", 0.88, 0.025),
    StreamConfig(4, "distilled", 0.70, 0.006),
)
RATES = (30.0, 15.0, 7.5)


def _space(metric="event"):
    return Space(CONFIGS, RATES, 30.0, metric)


def _streams(n):
    return [Stream(f"cam{i}", event_s=(0.05, 0.1, 0.3)[i % 3]) for i in range(n)]


def _brute_force(streams, space, capacity):
    best = -1.0
    for combo in itertools.product(*(space.options(s) for s in streams)):
        if sum(k.cost for k in combo) <= capacity * (1 + 1e-9):
            best = max(best, sum(k.quality for k in combo))
    return best


@pytest.mark.parametrize("metric", ["event", "frames"])
def test_exact_equals_brute_force_and_greedy_stays_within_capacity(metric):
    space = _space(metric)
    streams = _streams(3)
    for capacity in (0.6, 1.0, 1.8, 2.5, 4.0):
        exact = allocate(streams, space, capacity)
        greedy = allocate(streams, space, capacity, "greedy")
        assert exact.value == pytest.approx(_brute_force(streams, space, capacity), abs=1e-9)
        for a in (exact, greedy):
            assert a.cost <= capacity * (1 + 1e-9)
            assert set(a.knobs) == {s.name for s in streams}
        assert greedy.value <= exact.value + 1e-12
        assert greedy.value >= 0.8 * exact.value


def test_more_load_means_cheaper_knobs_and_the_fixed_config_sheds_frames():
    space = _space()
    top = CONFIGS[0]
    capacity = 2 * 30 * top.ms_per_frame  # two streams at the best config, full rate
    light, heavy = allocate(_streams(2), space, capacity), allocate(_streams(8), space, capacity)
    assert {k.config.name for k in light.knobs.values()} == {"8px-fp32"}
    assert max(k.cost for k in heavy.knobs.values()) < min(k.cost for k in light.knobs.values())
    shed = fixed(_streams(8), space, capacity, top, 30.0)
    assert shed.cost == pytest.approx(capacity)  # it serves what fits: a quarter of the frames
    assert {k.fps for k in shed.knobs.values()} == {7.5}
    assert heavy.value > shed.value
    unloaded = fixed(_streams(1), space, capacity, top, 30.0)
    assert unloaded.knobs["cam0"].fps == 30.0


@pytest.mark.parametrize("capacity", [0, -1.0, math.nan, math.inf])
def test_capacity_must_be_positive(capacity):
    with pytest.raises(TenancyError, match="capacity: expected a positive number"):
        allocate(_streams(2), _space(), capacity)


def test_bad_inputs_name_the_field():
    space = _space()
    with pytest.raises(TenancyError, match="cannot serve 40 streams even at their cheapest"):
        allocate(_streams(40), space, 1.0)
    with pytest.raises(TenancyError, match="method: expected one of exact, greedy"):
        allocate(_streams(2), space, 1.0, "random")
    with pytest.raises(TenancyError, match="names must be unique"):
        allocate([Stream("a"), Stream("a")], space, 1.0)
    with pytest.raises(TenancyError, match="streams: expected at least one"):
        allocate([], space, 1.0)
    with pytest.raises(TenancyError, match="configs: expected at least one"):
        Space((), RATES, 30.0)
    with pytest.raises(TenancyError, match="rates: 60 fps is above the stream's own 30 fps"):
        Space(CONFIGS, (60.0, 30.0), 30.0)
    assert Space(CONFIGS, (30.0, 20.0, 12.0), 30.0).rates == (30.0, 20.0, 12.0)  # no nesting
    with pytest.raises(TenancyError, match="event_s"):
        Stream("a", event_s=-1)
