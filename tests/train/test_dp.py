"""DP-FedAvg (clipping, noise, fixed denominator, Poisson sampling, Opacus accounting, resume)
and local DP-SGD through Opacus."""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant

from edgeweave.train.backends.sequential import SequentialBackend
from edgeweave.train.backends.vectorized import VectorizedBackend
from edgeweave.train.checkpoint import read_metrics
from edgeweave.train.data import make_task
from edgeweave.train.privacy import (
    ClientPrivacyReport,
    DPFedAvg,
    DPSGDBackend,
    PrivacyLedger,
    epsilon_for,
    noise_for_epsilon,
)
from edgeweave.train.server import Server, ServerConfig, evaluate
from edgeweave.train.strategies import FedAsync, FedAvg, FedAvgM
from edgeweave.train.strategies.norm_bound import clip_to_norm, update_norms
from edgeweave.train.types import ClientInfo, FitConfig, TrainError, Updates

pytestmark = pytest.mark.usefixtures("one_thread")


def _clients(n: int) -> list[ClientInfo]:
    return [ClientInfo(i, 10) for i in range(n)]


def _updates(global_params, deltas: dict[str, torch.Tensor], ids: list[int]) -> Updates:
    n = len(ids)
    return Updates(ids, {k: global_params[k].unsqueeze(0) + d for k, d in deltas.items()},
                   torch.full((n,), 10.0, dtype=torch.float64), torch.zeros(n, dtype=torch.float64))


def _dp(sigma=1.0, clip=1.0, q=0.5, delta=1e-5, inner=None, **kw) -> DPFedAvg:
    return DPFedAvg(inner or FedAvg(), clip=clip, noise_multiplier=sigma, sample_rate=q,
                    delta=delta, **kw)


# -- clipping -------------------------------------------------------------------------------
def test_clipping_bound_holds_jointly_and_leaves_small_updates_untouched():
    g = torch.Generator().manual_seed(0)
    scales = torch.tensor([0.01, 0.2, 1.0, 5.0, 300.0, 0.0])
    deltas = {"a": torch.randn(6, 7, 3, generator=g) * scales.view(-1, 1, 1),
              "b": torch.randn(6, 11, generator=g) * scales.view(-1, 1)}
    c = 1.5
    clipped, norms = clip_to_norm(deltas, c)
    joint = torch.sqrt(sum(v.reshape(6, -1).double().pow(2).sum(1) for v in deltas.values()))
    torch.testing.assert_close(norms, joint)
    after = update_norms(clipped)
    assert bool((after <= c * (1 + 1e-6)).all())
    for i in range(6):
        if norms[i] <= c:  # untouched, bit for bit
            assert all(torch.equal(clipped[k][i], deltas[k][i]) for k in deltas)
        else:  # scaled onto the sphere of radius c, direction kept
            assert float(after[i]) == pytest.approx(c, rel=1e-6)
            for k in deltas:
                torch.testing.assert_close(clipped[k][i], deltas[k][i] * (c / norms[i]).float())
    with pytest.raises(TrainError, match="max_norm must be > 0"):
        clip_to_norm(deltas, 0.0)


def test_dp_fedavg_without_noise_is_clipped_sum_over_expected_count():
    gp = OrderedDict(w=torch.zeros(4), b=torch.ones(2))
    dp = _dp(sigma=0.0, clip=1.0, q=0.5)
    ids, _ = dp.configure_fit(1, _clients(8), np.random.default_rng(0))
    assert ids
    deltas = {"w": torch.full((len(ids), 4), 3.0), "b": torch.full((len(ids), 2), 0.1)}
    deltas["w"][0] = 0.01  # one small update stays as is
    out = dp.aggregate(1, gp, _updates(gp, deltas, ids))
    clipped, _ = clip_to_norm(deltas, 1.0)
    for k in gp:  # fixed denominator q * N = 4, whatever the number sampled
        torch.testing.assert_close(out[k], gp[k] + clipped[k].sum(0) / 4.0)
    m = dp.round_metrics()
    assert m["dp_clipped"] == pytest.approx((len(ids) - 1) / len(ids))
    assert m["dp_epsilon"] == math.inf and m["dp_sampled"] == len(ids)


def test_noise_std_matches_sigma_clip_over_expected_clients():
    # 40 clients at q = 0.25: q N = 10; sigma = 2, clip = 0.5 -> std 0.1 per coordinate
    d = 50_000
    gp = OrderedDict(w=torch.zeros(d))
    dp = _dp(sigma=2.0, clip=0.5, q=0.25)
    ids, _ = dp.configure_fit(3, _clients(40), np.random.default_rng(3))
    out = dp.aggregate(3, gp, _updates(gp, {"w": torch.zeros(len(ids), d)}, ids))
    noise = out["w"].double()
    # std of a sample std over 50k draws is ~0.3%: 2% is a wide, still failing-capable margin
    assert float(noise.std()) == pytest.approx(0.1, rel=0.02)
    assert abs(float(noise.mean())) < 4 * 0.1 / math.sqrt(d)
    assert dp.round_metrics()["dp_noise_std"] == pytest.approx(0.1)
    # seeded: the same round draws the same noise, another round other noise
    dp2 = _dp(sigma=2.0, clip=0.5, q=0.25)
    dp2.configure_fit(3, _clients(40), np.random.default_rng(3))
    assert torch.equal(dp2.aggregate(3, gp, _updates(gp, {"w": torch.zeros(len(ids), d)}, ids))
                       ["w"], out["w"])
    ids4, _ = dp2.configure_fit(4, _clients(40), np.random.default_rng(4))
    again = dp2.aggregate(4, gp, _updates(gp, {"w": torch.zeros(len(ids4), d)}, ids4))
    assert not torch.equal(again["w"], out["w"])


def test_poisson_sampling_rate_and_variable_round_size():
    dp = _dp(q=0.1)
    sizes = [len(dp.configure_fit(r, _clients(500), np.random.default_rng([7, r]))[0])
             for r in range(1, 201)]
    # mean of 200 Binomial(500, 0.1) counts: sd 6.7 / sqrt(200) = 0.47; 4 sd margin
    assert np.mean(sizes) == pytest.approx(50, abs=2.0)
    assert np.std(sizes) == pytest.approx(math.sqrt(500 * 0.1 * 0.9), rel=0.2)
    assert len(set(sizes)) > 5  # Poisson, not a fixed-size sample


def test_epsilon_equals_opacus_accountant_and_grows():
    sigma, q, delta = 1.1, 0.05, 1e-5
    dp = _dp(sigma=sigma, q=q, delta=delta)
    reference = RDPAccountant()
    eps = []
    for r in range(1, 13):
        dp.configure_fit(r, _clients(100), np.random.default_rng(r))
        reference.step(noise_multiplier=sigma, sample_rate=q)
        eps.append(dp.round_metrics()["dp_epsilon"])
        assert eps[-1] == reference.get_epsilon(delta=delta)
    assert eps[-1] == epsilon_for(sigma, q, 12, delta)
    assert all(b > a for a, b in itertools.pairwise(eps))


def test_noise_for_epsilon_hits_the_target():
    for target in (1.0, 8.0):
        sigma = noise_for_epsilon(target, 1e-3, 0.1, 40)
        eps = epsilon_for(sigma, 0.1, 40, 1e-3)
        assert target - 0.02 <= eps <= target
    assert noise_for_epsilon(math.inf, 1e-3, 0.1, 40) == 0.0
    assert epsilon_for(0.0, 0.1, 40, 1e-3) == math.inf


def test_ledger_state_round_trip_and_bad_inputs():
    led = PrivacyLedger(1e-5)
    led.step(1.0, 0.1, 5)
    led.step(2.0, 0.1, 3)
    back = PrivacyLedger(1e-5)
    back.load_state(led.state())
    assert back.history == led.history == [(1.0, 0.1, 5), (2.0, 0.1, 3)]
    assert back.epsilon() == led.epsilon()
    with pytest.raises(TrainError, match="delta"):
        PrivacyLedger(1e-3).load_state(led.state())
    with pytest.raises(TrainError, match="sample rate q"):
        _dp(q=0.0)
    with pytest.raises(TrainError, match="delta must be in"):
        _dp(delta=1.0)
    with pytest.raises(TrainError, match="clip must be > 0"):
        _dp(clip=-1.0)
    with pytest.raises(TrainError, match="noise_multiplier"):
        _dp(sigma=-0.5)
    with pytest.raises(TrainError, match="asynchronous"):
        _dp(inner=FedAsync())


def test_over_selected_clients_are_refused():
    gp = OrderedDict(w=torch.zeros(3))
    dp = _dp(q=0.5)
    ids, _ = dp.configure_fit(1, _clients(10), np.random.default_rng(1))
    stranger = next(i for i in range(10) if i not in ids)
    with pytest.raises(TrainError, match="did not pick"):
        dp.aggregate(1, gp, _updates(gp, {"w": torch.zeros(1, 3)}, [stranger]))


def test_inner_strategy_is_the_server_optimiser():
    gp = OrderedDict(w=torch.zeros(3))
    dp = _dp(sigma=0.0, q=1.0, inner=FedAvgM(server_lr=1.0, momentum=0.5))
    for r in (1, 2):
        ids, _ = dp.configure_fit(r, _clients(2), np.random.default_rng(r))
        gp = dp.aggregate(r, gp, _updates(gp, {"w": torch.full((2, 3), 0.1)}, ids))
    # the mean update 0.1 applied with momentum 0.5: 0.1, then 0.1 + 0.15
    torch.testing.assert_close(gp["w"], torch.full((3,), 0.25))


# -- end to end through the server ------------------------------------------------------------
def _task():
    return make_task("digits", "iid", 60, "logreg:64,10")


def _strategy():
    return _dp(sigma=0.8, clip=0.5, q=0.2, delta=1e-3,
               inner=FedAvg(fit=FitConfig(lr=0.2, batch_size=10, epochs=1)))


def test_epsilon_survives_checkpoint_resume(tmp_path):
    task = _task()
    full = Server(task, _strategy(), VectorizedBackend(task),
                  ServerConfig(rounds=5, out_dir=tmp_path / "full")).run()
    Server(task, _strategy(), VectorizedBackend(task),
           ServerConfig(rounds=3, out_dir=tmp_path / "cut")).run()
    resumed_srv = Server(task, _strategy(), VectorizedBackend(task),
                         ServerConfig(rounds=5, out_dir=tmp_path / "cut"))
    resumed = resumed_srv.run()
    eps_full = [r.extra["dp_epsilon"] for r in full]
    eps_res = [r.extra["dp_epsilon"] for r in resumed]
    assert eps_res == eps_full
    assert eps_full[-1] == epsilon_for(0.8, 0.2, 5, 1e-3)
    assert [r.test_acc for r in resumed] == [r.test_acc for r in full]
    lines = read_metrics(tmp_path / "cut" / "metrics.jsonl")
    assert [ln["dp_epsilon"] for ln in lines] == pytest.approx(eps_full)
    assert all(0 <= ln["dp_clipped"] <= 1 for ln in lines)


# -- local DP-SGD through Opacus --------------------------------------------------------------
def test_dp_sgd_backend_trains_and_reports_each_clients_epsilon():
    task = make_task("digits", "iid", 4, "logreg:64,10")
    sigma, c, delta = 0.8, 1.0, 1e-3
    backend = DPSGDBackend(task, noise_multiplier=sigma, max_grad_norm=c, delta=delta)
    fit = FitConfig(lr=0.5, batch_size=32, epochs=1)
    strategy = ClientPrivacyReport(FedAvg(fit=fit), delta)
    recs = Server(task, strategy, backend, ServerConfig(rounds=3)).run()
    init_acc = evaluate(task.model_fn(), task.init_params(), task.test_x, task.test_y)[1]
    assert recs[-1].test_acc > max(0.6, init_acc + 0.3)
    # each client took 3 rounds x ceil(n / 32) steps at Opacus's rate 1 / ceil(n / 32)
    for cid, n in enumerate(task.data.sizes().tolist()):
        batches = -(-n // 32)
        assert backend.epsilon(cid) == epsilon_for(sigma, 1 / batches, 3 * batches, delta)
    assert recs[-1].extra["client_dp_epsilon_max"] == backend.max_epsilon() > 0
    restored = DPSGDBackend(task, noise_multiplier=sigma, max_grad_norm=c, delta=delta)
    restored.load_state(backend.state())
    assert restored.epsilon(2) == backend.epsilon(2)


def test_dp_sgd_clips_per_sample_gradients():
    task = make_task("digits", "iid", 2, "logreg:64,10")
    gp = task.init_params()
    fit = FitConfig(lr=1.0, batch_size=50, epochs=1)
    c = 1e-5
    tiny = DPSGDBackend(task, noise_multiplier=0.0, max_grad_norm=c, delta=1e-3).fit(
        1, gp, [0], fit)
    plain = SequentialBackend(task).fit(1, gp, [0], fit)
    n = int(task.data.sizes()[0])
    steps = -(-n // 50)
    # each step moves at most lr * c * |batch| / expected batch, and |batch| <= n
    bound = fit.lr * c * steps * n / 50
    moved = float(update_norms(tiny.deltas(gp)))
    assert 0 < moved <= bound
    assert float(update_norms(plain.deltas(gp))) > 50 * bound
    with pytest.raises(TrainError, match="proximal term"):
        DPSGDBackend(task, 1.0, 1.0, 1e-3).fit(1, gp, [0], FitConfig(prox_mu=0.1))


def test_a_round_without_clients_still_releases_noise():
    """Nobody sampled: the server still calls aggregate, and the model moves by pure noise."""
    from edgeweave.train.privacy import DPFedAvg
    from edgeweave.train.server import Server, ServerConfig
    from edgeweave.train.strategies import FedAvg

    task = make_task("digits", "iid", 5, "logreg:64,10")
    dp = DPFedAvg(FedAvg(), clip=1.0, noise_multiplier=1.0, sample_rate=1e-6, delta=1e-5)
    server = Server(task, dp, SequentialBackend(task), ServerConfig(rounds=2))
    recs = server.run()
    start = task.init_params()
    assert [r.clients for r in recs] == [0, 0] and recs[-1].extra["dp_epsilon"] > 0
    assert all(not torch.equal(server.params[k], start[k]) for k in start)
