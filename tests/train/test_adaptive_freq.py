import numpy as np
import pytest

from edgeweave.train.backends.sequential import SequentialBackend
from edgeweave.train.control import AdaptiveFrequency, best_tau
from edgeweave.train.data import make_task
from edgeweave.train.server import Server, ServerConfig
from edgeweave.train.strategies import FedAvg
from edgeweave.train.types import ClientInfo, FitConfig, TrainError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_best_tau_grows_with_aggregation_cost_and_shrinks_with_divergence():
    by_cost = [best_tau(10.0, 0.3, 0.4, 0.05, 1.0, b, 400, 1000) for b in (0.1, 1, 10, 100)]
    assert by_cost == sorted(by_cost) and by_cost[-1] > by_cost[0]
    by_div = [best_tau(10.0, d, 0.4, 0.05, 1.0, 10, 400, 1000) for d in (0.01, 0.1, 1, 10)]
    assert by_div == sorted(by_div, reverse=True) and by_div[0] > by_div[-1]
    assert best_tau(10.0, 0.3, 0.4, 0.05, 1.0, 100, 400, tau_max=3) <= 3
    # identical clients never drift: tau only stops at the search range
    assert best_tau(10.0, 0.0, 0.4, 0.05, 1.0, 10, 400, 50) == 50


def test_budget_is_never_exceeded_and_training_stops_when_spent():
    clients = [ClientInfo(i, 10) for i in range(4)]
    # each round costs 3 tau + 2: tau=2 twice (16), then the 5 left buy one last round of tau=1
    s = AdaptiveFrequency(FedAvg(), budget=21, step_cost=3, agg_cost=2, tau_init=2)
    rng = np.random.default_rng(0)
    rounds = []
    for r in range(1, 6):
        ids, fit = s.configure_fit(r, clients, rng)
        rounds.append((ids, fit.local_steps))
    assert [t for ids, t in rounds if ids] == [2, 2, 1]
    assert s.spent == 21
    assert rounds[-1][0] == [] and s.exhausted


def small_task(n_clients):
    return make_task("synthetic:1,1", "natural", n_clients, "mlp:60,16,10", seed=0,
                     size_mu=2.0, size_sigma=0.5, min_samples=20, max_samples=40, test_size=200)


def run(task, agg_cost, rounds=4, budget=150):
    strategy = AdaptiveFrequency(FedAvg(fit=FitConfig(lr=0.05, batch_size=32)), budget=budget,
                                 step_cost=1.0, agg_cost=agg_cost, tau_max=200)
    Server(task, strategy, SequentialBackend(task), ServerConfig(rounds=rounds,
                                                                 eval_every=rounds)).run()
    return strategy


def test_tau_adapts_to_cost_ratio_in_the_server_loop():
    task = small_task(8)
    cheap, dear = run(task, agg_cost=0.1), run(task, agg_cost=10.0)
    for s in (cheap, dear):
        spent = sum(s.c * h.tau + s.b for h in s.history)
        assert spent == pytest.approx(s.spent) and s.spent <= s.budget + 1e-9
        assert s.history[0].tau == 1 and s.history[1].beta is not None
        assert all(h.delta is not None and h.delta > 0 for h in s.history)
    # the first two rounds see identical estimates; the chosen tau then follows b / c
    assert dear.history[2].tau > cheap.history[2].tau


def test_checkpoint_state_roundtrip_and_errors():
    task = small_task(4)
    s = run(task, agg_cost=1.0, rounds=3, budget=50)
    fresh = AdaptiveFrequency(FedAvg(), budget=50, step_cost=1.0, agg_cost=1.0)
    fresh.load_state(s.state())
    assert fresh.tau == s.tau and fresh.spent == s.spent and len(fresh.history) == 3
    with pytest.raises(TrainError, match="budget > 0"):
        AdaptiveFrequency(FedAvg(), budget=0, step_cost=1, agg_cost=1)
