"""Big/little (Park et al.) on real digits: escalation rule, extremes, calibration, report."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeweave.adapt import (
    BigLittle,
    biglittle_report,
    calibrate_threshold,
    digits,
    escalation_mask,
    fit,
)
from edgeweave.adapt.biglittle import (
    ALL_ESCALATE,
    MODES,
    NO_ESCALATION,
    BigLittleError,
    surety,
)
from edgeweave.errors import EdgeWeaveError
from edgeweave.graph import load_model


@pytest.fixture(scope="module")
def data():
    return digits(seed=0)


@pytest.fixture(scope="module")
def pair(data):
    """A weak little model (logistic regression on pixels, 2 epochs) and the digits CNN."""
    torch.manual_seed(0)
    little = fit(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), data.x_train, data.y_train,
                 epochs=2, lr=1e-2)
    big = fit(load_model("digits-cnn").module, data.x_train, data.y_train, epochs=6)
    return little, big


def _acc(model, x, y):
    with torch.no_grad():
        return int((model(x).argmax(1) == y).sum()) / len(y)


def test_pair_is_a_real_big_little(pair, data):
    little, big = pair
    assert _acc(big, data.x_test, data.y_test) > _acc(little, data.x_test, data.y_test) + 0.02


@pytest.mark.parametrize("mode", MODES)
def test_escalating_nothing_is_the_little_model_alone(pair, data, mode):
    little, big = pair
    out = BigLittle(little, big, NO_ESCALATION[mode], mode).infer(data.x_test)
    assert not out.escalated.any()
    with torch.no_grad():
        assert torch.equal(out.predictions, little(data.x_test).argmax(1))
    rep = biglittle_report(BigLittle(little, big, NO_ESCALATION[mode], mode), data.x_test,
                           data.y_test)
    assert rep.escalation_rate == 0.0
    assert rep.accuracy == rep.little_accuracy == _acc(little, data.x_test, data.y_test)
    assert rep.escalated_accuracy is None


@pytest.mark.parametrize("mode", MODES)
def test_escalating_everything_is_the_big_models_accuracy(pair, data, mode):
    little, big = pair
    out = BigLittle(little, big, ALL_ESCALATE[mode], mode).infer(data.x_test)
    assert out.escalated.all()
    with torch.no_grad():
        assert torch.equal(out.predictions, big(data.x_test).argmax(1))
    rep = biglittle_report(BigLittle(little, big, ALL_ESCALATE[mode], mode), data.x_test,
                           data.y_test)
    assert rep.escalation_rate == 1.0
    assert rep.accuracy == rep.big_accuracy == _acc(big, data.x_test, data.y_test)
    assert rep.kept_accuracy is None


@pytest.mark.parametrize(("mode", "none", "every"), [
    ("confidence", [-3.0, 0.0], [1.0001, 7.0]),
    ("margin", [-1.0, 0.0], [1.0001, 2.0]),
    ("entropy", [1.0, 4.0], [-0.0001, -2.0]),
])
def test_thresholds_beyond_the_score_range_behave(pair, data, mode, none, every):
    little, _ = pair
    with torch.no_grad():
        logits = little(data.x_val)
    for t in none:
        assert not escalation_mask(logits, t, mode).any()
    for t in every:
        assert escalation_mask(logits, t, mode).all()


def test_escalation_rate_is_monotone_in_the_threshold(pair, data):
    little, big = pair
    rates = [BigLittle(little, big, t).infer(data.x_val).escalated.double().mean().item()
             for t in (0.0, 0.3, 0.5, 0.7, 0.9, 0.99, 2.0)]
    assert rates == sorted(rates) and rates[0] == 0.0 and rates[-1] == 1.0
    ent = [BigLittle(little, big, t, "entropy").infer(data.x_val).escalated.double().mean()
           .item() for t in (1.0, 0.7, 0.5, 0.3, 0.1, -1.0)]
    assert ent == sorted(ent)


def test_big_runs_only_on_escalated_samples(pair, data):
    little, big = pair
    seen = []
    handle = big.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    try:
        out = BigLittle(little, big, 0.8).infer(data.x_test)
    finally:
        handle.remove()
    assert seen == ([int(out.escalated.sum())] if out.escalated.any() else [])


def test_surety_scores(pair, data):
    little, _ = pair
    with torch.no_grad():
        logits = little(data.x_val[:50])
    conf, margin, neg_ent = (surety(logits, m) for m in ("confidence", "margin", "entropy"))
    assert conf.dtype == torch.float64
    assert ((conf > 0) & (conf <= 1)).all() and ((margin >= 0) & (margin <= conf)).all()
    assert ((neg_ent <= 0) & (neg_ent >= -1)).all()
    uniform = surety(torch.zeros(3, 10), "entropy")
    assert uniform.allclose(torch.full((3,), -1.0, dtype=torch.float64))


@pytest.mark.parametrize("mode", MODES)
def test_calibration_for_a_target_accuracy(pair, data, mode):
    little, big = pair
    big_val = _acc(big, data.x_val, data.y_val)
    target = big_val - 0.01
    cal = calibrate_threshold(little, big, data.x_val, data.y_val, target_accuracy=target,
                              mode=mode)
    assert cal.met and cal.accuracy >= target
    assert 0.0 < cal.escalation_rate < 1.0
    # the threshold reproduces the calibration on the validation data exactly
    rep = biglittle_report(BigLittle(little, big, cal.threshold, mode), data.x_val, data.y_val)
    assert rep.accuracy == pytest.approx(cal.accuracy, abs=1e-12)
    assert rep.escalation_rate == pytest.approx(cal.escalation_rate, abs=1e-12)
    # and it is the cheapest such threshold: one escalation fewer misses the target
    with torch.no_grad():
        s = surety(little(data.x_val), mode)
    k = round(cal.escalation_rate * len(data.y_val))
    fewer = float(s.sort().values[k - 1])  # surety of the last escalated sample
    thr = -fewer if mode == "entropy" else fewer  # escalate strictly below it: k - ties
    worse = biglittle_report(BigLittle(little, big, thr, mode), data.x_val, data.y_val)
    assert worse.escalation_rate < cal.escalation_rate
    assert worse.accuracy < target


def test_calibration_extremes_and_budget(pair, data):
    little, big = pair
    zero = calibrate_threshold(little, big, data.x_val, data.y_val, target_accuracy=0.0)
    assert zero.threshold == NO_ESCALATION["confidence"] and zero.escalation_rate == 0.0
    unreachable = calibrate_threshold(little, big, data.x_val, data.y_val, target_accuracy=1.0)
    assert not unreachable.met or unreachable.accuracy == 1.0
    for budget in (0.0, 0.1, 0.3):
        cal = calibrate_threshold(little, big, data.x_val, data.y_val, escalation_budget=budget)
        assert cal.escalation_rate <= budget + 1e-12 and cal.met
    all_in = calibrate_threshold(little, big, data.x_val, data.y_val, escalation_budget=1.0)
    assert all_in.accuracy >= max(all_in.little_accuracy, all_in.big_accuracy)
    both = calibrate_threshold(little, big, data.x_val, data.y_val, target_accuracy=0.99,
                               escalation_budget=0.05)
    assert both.escalation_rate <= 0.05 + 1e-12


def test_report_expected_latency_formula(pair, data):
    little, big = pair
    with torch.no_grad():
        median = float(surety(little(data.x_test)).median())
    pair_ = BigLittle(little, big, median)  # about half escalate
    device = biglittle_report(pair_, data.x_test, data.y_test, little_ms=1.0, big_ms=4.0,
                              little_energy_j=0.002, big_energy_j=0.01)
    r = device.escalation_rate
    assert device.expected_ms == pytest.approx(1.0 + r * 4.0)
    assert device.worst_ms == pytest.approx(5.0)
    assert device.expected_energy_j == pytest.approx(0.002 + r * 0.01)
    edge = biglittle_report(pair_, data.x_test, data.y_test, little_ms=1.0, big_ms=0.2,
                            transfer_ms=6.0)
    assert edge.expected_ms == pytest.approx(1.0 + r * 6.2)
    assert edge.as_dict()["escalation_rate"] == r
    kept, esc = device.kept_accuracy, device.escalated_accuracy
    assert kept is not None and esc is not None
    assert device.accuracy == pytest.approx((1 - r) * kept + r * esc)


def test_malformed_requests_raise_clear_errors(pair, data):
    little, big = pair
    with pytest.raises(BigLittleError, match="mode"):
        BigLittle(little, big, 0.5, "vote")
    with pytest.raises(BigLittleError, match="NaN"):
        BigLittle(little, big, float("nan"))
    with pytest.raises(BigLittleError, match="target_accuracy"):
        calibrate_threshold(little, big, data.x_val, data.y_val)
    with pytest.raises(BigLittleError, match="escalation_budget"):
        calibrate_threshold(little, big, data.x_val, data.y_val, escalation_budget=1.5)
    with pytest.raises(EdgeWeaveError, match="same positive number"):
        biglittle_report(BigLittle(little, big, 0.5), data.x_val, data.y_val[:3])
    with pytest.raises(BigLittleError, match=">= 0"):
        biglittle_report(BigLittle(little, big, 0.5), data.x_val, data.y_val, little_ms=-1,
                         big_ms=1)
