"""Byzantine attacks (which clients, what they send) and the norm-bounding defence."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

from edgeweave.train.backends.vectorized import VectorizedBackend
from edgeweave.train.byzantine import ByzantineBackend, choose_attackers
from edgeweave.train.data import make_task
from edgeweave.train.server import Server, ServerConfig
from edgeweave.train.strategies import FedAvg, FedMedian, NormBound, get_strategy
from edgeweave.train.strategies.norm_bound import update_norms
from edgeweave.train.types import FitConfig, TrainError, Updates

pytestmark = pytest.mark.usefixtures("one_thread")

FIT = FitConfig(lr=0.2, batch_size=16, epochs=1)


@pytest.fixture(scope="module")
def task():
    return make_task("digits", "iid", 10, "logreg:64,10")


def _honest_and_attacked(task, attack: str, **kw):
    gp = task.init_params()
    ids = list(range(10))
    honest = VectorizedBackend(task).fit(1, gp, ids, FIT)
    byz = ByzantineBackend(VectorizedBackend(task), attack, fraction=0.3, seed=5, **kw)
    return gp, honest, byz.fit(1, gp, ids, FIT), byz


def test_attackers_are_a_fixed_seeded_fraction():
    a = choose_attackers(list(range(20)), 0.3, seed=1)
    assert len(a) == 6 and a == choose_attackers(list(range(20)), 0.3, seed=1)
    assert a != choose_attackers(list(range(20)), 0.3, seed=2)
    assert choose_attackers(list(range(20)), 0.0, seed=1) == []
    with pytest.raises(TrainError, match="fraction"):
        choose_attackers([1, 2], 1.0, seed=0)


@pytest.mark.parametrize("attack,factor", [("sign_flip", -4.0), ("scaled", 10.0)])
def test_sign_flip_and_scaling_change_only_the_attackers(task, attack, factor):
    gp, honest, bad, byz = _honest_and_attacked(task, attack)
    assert len(byz.attackers) == 3 and bad.metrics["byzantine"] == sorted(byz.attackers)
    for i, cid in enumerate(bad.client_ids):
        for k in gp:
            if cid in byz.attackers:
                want = gp[k] + factor * (honest.params[k][i] - gp[k])
                torch.testing.assert_close(bad.params[k][i], want)
            else:
                assert torch.equal(bad.params[k][i], honest.params[k][i])


def test_noise_attack_is_seeded_gaussian_around_the_global_model(task):
    gp, honest, bad, byz = _honest_and_attacked(task, "noise", noise_std=0.5)
    _, _, again, _ = _honest_and_attacked(task, "noise", noise_std=0.5)
    rows = [i for i, c in enumerate(bad.client_ids) if c in byz.attackers]
    noise = torch.cat([(bad.params[k][rows] - gp[k]).reshape(-1) for k in gp])
    assert float(noise.std()) == pytest.approx(0.5, rel=0.05)  # 1950 draws: ~1.6% sd
    assert all(torch.equal(bad.params[k], again.params[k]) for k in gp)
    honest_rows = [i for i in range(10) if i not in rows]
    assert all(torch.equal(bad.params[k][honest_rows], honest.params[k][honest_rows])
               for k in gp)


def test_bad_attack_settings_are_refused(task):
    with pytest.raises(TrainError, match="unknown attack"):
        ByzantineBackend(VectorizedBackend(task), "backdoor")
    with pytest.raises(TrainError, match="not clients"):
        ByzantineBackend(VectorizedBackend(task), "noise", attackers=[99])


def test_norm_bound_bounds_every_update_and_is_registered():
    gp = OrderedDict(w=torch.zeros(3), b=torch.zeros(1))
    deltas = {"w": torch.tensor([[0.1, 0.0, 0.0], [100.0, 0.0, 0.0], [0.0, -0.2, 0.0]]),
              "b": torch.tensor([[0.0], [0.0], [50.0]])}
    upd = Updates([0, 1, 2], {k: gp[k] + v for k, v in deltas.items()},
                  torch.tensor([1.0, 1000.0, 1.0], dtype=torch.float64), torch.zeros(3))
    nb = get_strategy("norm_bound", max_norm=1.0)
    assert isinstance(nb, NormBound)
    out = nb.aggregate(1, gp, upd)
    # row 0 untouched, row 1 -> (1, 0, 0 | 0), row 2 -> (0, -0.2, 0 | 50) / ||.||
    n2 = (0.2**2 + 50**2) ** 0.5
    want_w = (torch.tensor([0.1, 0.0, 0.0]) + torch.tensor([1.0, 0, 0])
              + torch.tensor([0.0, -0.2 / n2, 0.0])) / 3
    torch.testing.assert_close(out["w"], want_w)
    torch.testing.assert_close(out["b"], torch.tensor([50 / n2 / 3]))
    assert float(update_norms({k: (out[k] - gp[k]).unsqueeze(0) for k in gp})) <= 1.0
    assert nb.round_metrics()["norm_bound_clipped"] == pytest.approx(2 / 3)
    # the weighted variant follows the (claimed) example counts, still within the bound
    w = NormBound(max_norm=1.0, weighted=True).aggregate(1, gp, upd)
    assert float(w["w"][0]) == pytest.approx((0.1 + 1000.0) / 1002)
    with pytest.raises(TrainError, match="max_norm"):
        NormBound(max_norm=0.0)


def test_median_beats_fedavg_under_30_percent_sign_flip(task):
    def final_acc(strategy) -> float:
        backend = ByzantineBackend(VectorizedBackend(task), "sign_flip", fraction=0.3, seed=0)
        return Server(task, strategy, backend, ServerConfig(rounds=8)).run()[-1].test_acc

    fedavg = final_acc(FedAvg(fit=FIT))
    median = final_acc(FedMedian(fit=FIT))
    clean = Server(task, FedAvg(fit=FIT), VectorizedBackend(task),
                   ServerConfig(rounds=8)).run()[-1].test_acc
    assert median > 0.8 and median > clean - 0.1
    assert fedavg < median - 0.3
