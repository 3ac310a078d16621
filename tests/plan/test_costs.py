"""The cost model on hand-checked examples: every term of the foundation issue's formula."""

import pytest

from edgeweave.errors import PlanError
from edgeweave.plan.costs import CostModel
from helpers import make_profile

MB = 1_000_000


def diamond():
    # n0 (input) -> n1 -> {n2, n3} -> n4 ; n1's tensor feeds two consumers
    return make_profile(
        latencies=[(0, 0, 0), (10, 2, 1), (20, 4, 1), (30, 6, 1), (5, 1, 1)],
        out_bytes=[MB, 2 * MB, 100, 100, 4000],
        edges=[(0, 1), (1, 2), (1, 3), (2, 4), (3, 4)],
        links=[(8.0, 10.0), (80.0, 40.0)],
    )


def test_all_on_device_costs_only_compute():
    cm = CostModel(diamond())
    bd = cm.evaluate([0, 0, 0, 0, 0])
    assert bd.total_ms == pytest.approx(65.0)
    assert bd.transfer_ms == 0.0
    assert bd.energy_j == pytest.approx(65.0 * 4.0 / 1000)


def test_tensor_with_two_consumers_above_the_cut_is_charged_once():
    cm = CostModel(diamond())
    bd = cm.evaluate([0, 0, 1, 1, 1])
    # up: n1's 2 MB once: 5 ms + 2e6*8/(8*1000) = 2000 ms; down: n4's 4000 B: 5 + 4 ms
    assert bd.up_bytes == [2 * MB, 0]
    assert bd.hop_up_ms[0] == pytest.approx(5 + 2000)
    assert bd.hop_down_ms[0] == pytest.approx(5 + 4)
    assert bd.compute_ms == pytest.approx(10 + 4 + 6 + 1)
    assert bd.total_ms == pytest.approx(21 + 2005 + 9)


def test_input_counts_when_its_consumer_is_above_and_output_returns_down_each_hop():
    cm = CostModel(diamond())
    bd = cm.evaluate([0, 2, 2, 2, 2])
    assert bd.up_bytes == [MB, MB]
    assert bd.down_bytes == [4000, 4000]
    up = (5 + MB * 8 / 8000) + (20 + MB * 8 / 80000)
    down = (5 + 4000 * 8 / 8000) + (20 + 4000 * 8 / 80000)
    assert bd.transfer_ms == pytest.approx(up + down)
    assert bd.total_ms == pytest.approx(4 + up + down)


def test_device_energy_charges_radio_on_first_hop_and_idle_while_waiting():
    cm = CostModel(diamond())
    bd = cm.evaluate([0, 0, 1, 1, 2])
    p = cm.power
    expected = (
        bd.tier_compute_ms[0] * p.compute_w
        + (bd.tier_compute_ms[1] + bd.tier_compute_ms[2]) * p.idle_w
        + bd.hop_up_ms[0] * p.tx_w
        + bd.hop_down_ms[0] * p.rx_w
        + (bd.hop_up_ms[1] + bd.hop_down_ms[1]) * p.idle_w
    ) / 1000
    assert bd.energy_j == pytest.approx(expected)


def test_throughput_bottleneck_is_the_slowest_stage_without_rtt():
    cm = CostModel(diamond())
    bd = cm.evaluate([0, 0, 1, 1, 1])
    assert bd.bottleneck == "device-edge uplink"
    assert bd.bottleneck_ms == pytest.approx(2 * MB * 8 / 8000)
    assert bd.throughput_fps == pytest.approx(1000 / bd.bottleneck_ms)


def test_linear_weights_reproduce_the_evaluator():
    """The min-cut optimises Weights; they must price every placement as evaluate() does."""
    cm = CostModel(diamond())
    from edgeweave.plan.bruteforce import monotone_placements

    for objective in ("latency", "energy"):
        w = cm.weights(objective)
        for labels in monotone_placements(cm):
            bd = cm.evaluate(labels)
            linear = sum(w.unary[u, labels[u]] for u in range(cm.n))
            linear += sum(
                w.fixed_up[k] + bd.up_bytes[k] * w.per_byte_up[k]
                for k in range(2) if (labels > k).any()
            )
            linear += sum(
                w.fixed_down[k] + bd.down_bytes[k] * w.per_byte_down[k]
                for k in range(2) if labels[cm.outputs[0]] > k
            )
            assert linear == pytest.approx(bd.value(objective))


def test_cycle_in_profile_is_rejected():
    prof = diamond()
    prof = prof.model_copy(update={"edges": [*prof.edges, ("n4", "n1")]})
    with pytest.raises(PlanError, match="cycle"):
        CostModel(prof)
