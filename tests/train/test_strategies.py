"""Every strategy against aggregates worked out by hand on tiny tensors."""

from collections import OrderedDict

import numpy as np
import pytest
import torch

from edgeweave.train.backends.sequential import SequentialBackend
from edgeweave.train.strategies import (
    FedAdagrad,
    FedAdam,
    FedAsync,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedSGD,
    FedYogi,
    Krum,
    TrimmedMean,
    get_strategy,
    list_strategies,
    weighted_mean,
)
from edgeweave.train.task import FederatedData, Task
from edgeweave.train.types import ClientInfo, FitConfig, TrainError, Updates


def _params(w):
    return OrderedDict(w=torch.tensor(w, dtype=torch.float32))


def _updates(rows, n=None, staleness=None):
    k = len(rows)
    return Updates(
        client_ids=list(range(k)),
        params={"w": torch.tensor(rows, dtype=torch.float32)},
        num_examples=torch.tensor(n or [1] * k, dtype=torch.float64),
        train_loss=torch.zeros(k, dtype=torch.float64),
        staleness=None if staleness is None else torch.tensor(staleness),
    )


ROWS = [[1.0, 2.0], [3.0, 4.0], [5.0, 12.0]]


def test_fedavg_is_sample_weighted():
    # (1*[1,2] + 1*[3,4] + 2*[5,12]) / 4 = [14, 30] / 4
    out = FedAvg().aggregate(1, _params([0.0, 0.0]), _updates(ROWS, [1, 1, 2]))
    assert torch.allclose(out["w"], torch.tensor([3.5, 7.5]))


def test_weighted_mean_refuses_zero_weight():
    with pytest.raises(TrainError, match="total weight is zero"):
        weighted_mean({"w": torch.ones(2, 3)}, torch.zeros(2))


def test_fedsgd_asks_for_one_full_batch_step():
    clients = [ClientInfo(0, 5), ClientInfo(1, 9), ClientInfo(2, 7)]
    ids, cfg = FedSGD(fit=FitConfig(lr=0.3, epochs=5)).configure_fit(
        1, clients, np.random.default_rng(0))
    assert ids == [0, 1, 2]
    assert cfg.local_steps == 1 and cfg.batch_size == 9 and cfg.lr == 0.3


def test_fedsgd_round_equals_one_gradient_step_on_the_union():
    torch.manual_seed(0)
    x, y = torch.randn(12, 3), torch.randint(0, 2, (12,))
    data = FederatedData(x, y, torch.tensor([0, 3, 8, 12]))

    def model_fn():
        return torch.nn.Linear(3, 2)

    task = Task(model_fn, data, x, y)
    strategy = FedSGD(fit=FitConfig(lr=0.5))
    backend = SequentialBackend(task)
    global_params = task.init_params()
    ids, cfg = strategy.configure_fit(1, backend.available_clients(), np.random.default_rng(0))
    new = strategy.aggregate(1, global_params, backend.fit(1, global_params, ids, cfg))
    # by hand: w - lr * grad of the mean loss over all 12 samples
    w = {k: v.clone().requires_grad_(True) for k, v in global_params.items()}
    loss = torch.nn.functional.cross_entropy(x @ w["weight"].T + w["bias"], y)
    loss.backward()
    for k in w:
        assert torch.allclose(new[k], (w[k] - 0.5 * w[k].grad).detach(), atol=1e-6)


def test_fedprox_sends_mu_to_clients_and_averages_like_fedavg():
    s = FedProx(mu=0.25)
    _, cfg = s.configure_fit(1, [ClientInfo(0, 3)], np.random.default_rng(0))
    assert cfg.prox_mu == 0.25
    out = s.aggregate(1, _params([0.0, 0.0]), _updates(ROWS, [1, 1, 2]))
    assert torch.allclose(out["w"], torch.tensor([3.5, 7.5]))


def test_fedavgm_momentum_by_hand_and_state_roundtrip():
    g0 = _params([0.0, 0.0])
    s = FedAvgM(server_lr=1.0, momentum=0.5)
    w1 = s.aggregate(1, g0, _updates(ROWS, [1, 1, 2]))
    assert torch.allclose(w1["w"], torch.tensor([3.5, 7.5]))  # v1 = d1, w1 = w0 - v1
    # round 2: the clients return exactly w1, so d2 = 0 and v2 = 0.5 * v1 = [-1.75, -3.75]
    same = _updates([[3.5, 7.5]] * 2)
    restored = FedAvgM(server_lr=1.0, momentum=0.5)
    restored.load_state(s.state())
    w2 = s.aggregate(2, w1, same)
    assert torch.allclose(w2["w"], torch.tensor([5.25, 11.25]))
    assert torch.equal(restored.aggregate(2, w1, same)["w"], w2["w"])


def test_fedavgm_without_momentum_is_fedavg():
    g0 = _params([1.0, -1.0])
    out = FedAvgM(server_lr=1.0, momentum=0.0).aggregate(1, g0, _updates(ROWS, [1, 1, 2]))
    assert torch.allclose(out["w"], FedAvg().aggregate(1, g0, _updates(ROWS, [1, 1, 2]))["w"])


@pytest.mark.parametrize(("cls", "beta2", "v_expected"), [
    (FedAdagrad, 0.5, 9 + 16),           # v = tau^2 + d^2
    (FedAdam, 0.5, 0.5 * 9 + 0.5 * 16),  # v = b2 tau^2 + (1-b2) d^2
    (FedYogi, 0.5, 9 + 0.5 * 16),        # v = tau^2 - (1-b2) d^2 sign(tau^2 - d^2), sign = -1
])
def test_fedopt_first_round_by_hand(cls, beta2, v_expected):
    # global 0, every client at 4: Delta = 4; beta1 = 0.5 -> m = 2; tau = 3, eta = 2
    s = cls(eta=2.0, beta1=0.5, beta2=beta2, tau=3.0)
    out = s.aggregate(1, _params([0.0]), _updates([[4.0], [4.0]]))
    expected = 2.0 * 2.0 / (v_expected ** 0.5 + 3.0)
    assert out["w"].item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("cls", [FedAdam, FedYogi, FedAdagrad])
def test_fedopt_state_roundtrip_continues_identically(cls):
    g = _params([0.0, 1.0])
    ups = [_updates([[1.0, 0.0], [2.0, 3.0]]), _updates([[-1.0, 2.0], [0.5, 0.5]])]
    a = cls(eta=0.1)
    w = a.aggregate(1, g, ups[0])
    b = cls(eta=0.1)
    b.load_state(a.state())
    assert torch.equal(a.aggregate(2, w, ups[1])["w"], b.aggregate(2, w, ups[1])["w"])
    with pytest.raises(TrainError, match="'m' and 'v'"):
        cls().load_state({"m": {}})


def test_fedmedian_odd_and_even():
    g = _params([0.0, 0.0])
    assert torch.equal(FedMedian().aggregate(1, g, _updates(ROWS))["w"], torch.tensor([3.0, 4.0]))
    # even: mean of the two middle values; col0 1,3,5,100 -> 4; col1 -1,2,4,12 -> 3
    four = _updates([*ROWS, [100.0, -1.0]], [1, 1, 1, 1000])  # weights must not matter
    assert torch.equal(FedMedian().aggregate(1, g, four)["w"], torch.tensor([4.0, 3.0]))


def test_trimmed_mean_drops_each_end_per_coordinate():
    g = _params([0.0, 0.0])
    four = _updates([*ROWS, [100.0, -1.0]])
    assert torch.equal(TrimmedMean(beta=0.25).aggregate(1, g, four)["w"],
                       torch.tensor([4.0, 3.0]))
    # beta below 1/n trims nothing: the plain mean
    assert torch.allclose(TrimmedMean(beta=0.2).aggregate(1, g, four)["w"],
                          torch.tensor([109 / 4, 17 / 4]))
    with pytest.raises(TrainError, match="beta"):
        TrimmedMean(beta=0.5)


def test_krum_and_multikrum_by_hand():
    g = _params([0.0])
    # n=5, f=1 -> each score sums the 2 nearest squared distances:
    # 0: 1+6.25  1: 1+2.25  2.5: 0.25+2.25  3: 0.25+4  100: 97^2+97.5^2
    ups = _updates([[0.0], [1.0], [2.5], [3.0], [100.0]])
    assert Krum(f=1).aggregate(1, g, ups)["w"].item() == 2.5
    assert Krum(f=1, m=3).aggregate(1, g, ups)["w"].item() == pytest.approx((2.5 + 1 + 3) / 3)


def test_krum_survives_fewer_updates_than_its_guarantee_needs():
    s = Krum(f=3)
    out = s.aggregate(1, _params([0.0]), _updates([[0.0], [1.0], [50.0]]))
    assert s.effective_f == 0 and out["w"].item() in (0.0, 1.0)


@pytest.mark.parametrize(("fn", "kw", "stale", "expected"), [
    ("constant", {}, 7, 0.5 * 4),                              # a = alpha
    ("polynomial", {"a": 1.0}, 1, 0.25 * 4),                   # a = alpha * (1+1)^-1
    ("hinge", {"a": 1.0, "b": 1}, 3, 4 / 6),                   # a = alpha / (1*(3-1)+1)
    ("hinge", {"a": 1.0, "b": 4}, 3, 0.5 * 4),                 # within b: no discount
])
def test_fedasync_mixing_by_staleness(fn, kw, stale, expected):
    s = FedAsync(alpha=0.5, staleness_fn=fn, **kw)
    out = s.aggregate(1, _params([0.0]), _updates([[4.0]], staleness=[stale]))
    assert out["w"].item() == pytest.approx(expected)


def test_fedasync_applies_several_arrivals_in_order():
    # constant alpha 0.5: 0 -> 0.5*0 + 0.5*4 = 2 -> 0.5*2 + 0.5*8 = 5 (not the mean, 6)
    s = FedAsync(alpha=0.5, staleness_fn="constant")
    out = s.aggregate(1, _params([0.0]), _updates([[4.0], [8.0]], staleness=[0, 0]))
    assert out["w"].item() == pytest.approx(5.0)
    assert s.asynchronous


def test_registry_builds_by_name_and_names_bad_input():
    assert {"fedavg", "fedsgd", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad",
            "fedasync", "fedmedian", "trimmed_mean", "krum"} <= set(list_strategies())
    s = get_strategy("FedProx", mu=0.5, fraction=0.2, fit={"lr": 0.05})
    assert isinstance(s, FedProx) and s.fit_config.prox_mu == 0.5 and s.fit_config.lr == 0.05
    assert isinstance(get_strategy("trimmed-mean", beta=0.1), TrimmedMean)
    with pytest.raises(TrainError, match=r"unknown; known: .*fedavg"):
        get_strategy("fedbogus")
    with pytest.raises(TrainError, match=r"unknown parameter.*momentumm.*accepted.*momentum"):
        get_strategy("fedavgm", momentumm=0.9)
    with pytest.raises(TrainError, match=r"unknown fit field.*learning_rate"):
        get_strategy("fedavg", fit={"learning_rate": 0.1})
    with pytest.raises(TrainError, match="eta > 0"):
        get_strategy("fedadam", eta=-1)
    with pytest.raises(TrainError, match="staleness_fn"):
        get_strategy("fedasync", staleness_fn="linear")


def test_every_strategy_refuses_an_empty_round():
    empty = Updates([], {"w": torch.zeros(0, 2)}, torch.zeros(0), torch.zeros(0))
    for name in list_strategies():
        with pytest.raises(TrainError, match="no client updates"):
            get_strategy(name).aggregate(3, _params([0.0, 0.0]), empty)
