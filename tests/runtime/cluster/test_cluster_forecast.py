"""A fused-tile run forecast by the runtime's own scheduler on a simulated clock
(runtime.cluster.forecast): the prediction `edgeweave distribute` holds a run from several
sources, or pipelined, against."""

from __future__ import annotations

import pytest
from cluster_helpers import cluster_fleet, digits

from edgeweave.plan.medium_codecs import ratios
from edgeweave.runtime.cluster.forecast import forecast
from edgeweave.runtime.cluster.stages import GatewayStages

RATES = {"a": 10.0, "b": 30.0, "c": 10.0}


def _forecast(plan, scheduler="static", sources=("a",), frames=1, rates=None, rest=None,
              **options):
    part = plan.partition
    rates = rates or RATES
    stages = GatewayStages(digits(), part, *ratios(digits(), part.input_codec,
                                                   part.result_codec), rates)
    rest_ms = rest or dict.fromkeys(rates, float(part.predicted["rest_ms"]))
    return forecast(stages, part, scheduler=scheduler, sources=list(sources), in_flight=1,
                    frames=frames, rates=rates, workers=list(part.devices), rest_ms=rest_ms,
                    **options)


@pytest.fixture(scope="module")
def plan():
    """Digits-cnn in a 2x2 grid on a 1 Gbit/s medium, two tiles sent to ``c``: their
    transfers take their turns."""
    from edgeweave.plan import plan_cluster
    from edgeweave.profile import analytic_profile

    fleet = cluster_fleet(mbps=1000.0)
    return plan_cluster(digits(), analytic_profile(digits(), fleet), fleet,
                        methods=("fused-tiles",), grid=(2, 2), max_blocks=1,
                        devices=list(fleet.cluster().devices))


def test_one_frame_on_the_static_assignment_is_the_plans_price(plan):
    """The forecast's medium, devices and rest are the plan's model: one frame from the
    gateway on the plan's assignment takes what the plan priced."""
    part = plan.partition
    assert len({t.device for t in part.all_tiles()}) > 1  # the medium is used
    one = _forecast(plan)
    assert one.latency_ms == pytest.approx(part.predicted["latency_ms"], rel=1e-6)
    assert sum(one.tasks_per_frame.values()) == len(part.all_tiles())
    assert one.tasks_per_frame == {d: float(sum(t.device == d for t in part.all_tiles()))
                                   for d in one.tasks_per_frame}


def test_sources_that_start_together_wait_for_each_others_frames(plan):
    """Two sources each waiting for their answer: their frames share the devices, the medium
    and the rest, so each takes longer than a frame alone, and every frame is answered."""
    alone = _forecast(plan).latency_ms
    two = _forecast(plan, sources=("a", "c"), frames=6)
    assert two.frames == 6 and two.latency_ms > 1.2 * alone
    assert sum(two.tasks_per_frame.values()) == pytest.approx(len(plan.partition.all_tiles()))
    assert two.fps == pytest.approx(1000.0 * 2 / two.latency_ms, rel=0.35)


def test_stealing_gives_a_device_no_tile_that_the_others_finish_sooner(plan):
    """The scheduler's own first-to-finish test runs in the forecast: a device 100x slower
    than the others gets no tile; as fast as them, it gets its share."""
    slow = _forecast(plan, "stealing", ("a", "c"), 4, rates={"a": 10.0, "b": 1000.0,
                                                            "c": 10.0})
    assert "b" not in slow.tasks_per_frame
    even = _forecast(plan, "stealing", ("a", "c"), 4, rates=dict.fromkeys("abc", 10.0))
    assert even.tasks_per_frame.get("b", 0) > 0
    assert sum(even.tasks_per_frame.values()) == pytest.approx(len(plan.partition.all_tiles()))


def test_a_frame_gathered_at_its_source_runs_its_rest_there(plan):
    """Work stealing with frames gathered at their source: each rest runs on its source, so a
    source whose rest is slow makes its frames slow, and the gateway's rest does not."""
    rest = float(plan.partition.predicted["rest_ms"]) + 1.0
    quick = dict.fromkeys("abc", rest)
    kw = {"scheduler": "stealing", "sources": ("c",), "frames": 2}
    at_gateway = _forecast(plan, rest=quick | {"a": 200 * rest}, **kw).latency_ms
    at_source = _forecast(plan, rest=quick | {"a": 200 * rest}, at_source=True,
                          rest_remote=False, **kw).latency_ms
    assert at_gateway > at_source + 150 * rest
    slow_source = _forecast(plan, rest=quick | {"c": 200 * rest}, at_source=True,
                            rest_remote=False, **kw).latency_ms
    assert slow_source > at_source + 150 * rest
