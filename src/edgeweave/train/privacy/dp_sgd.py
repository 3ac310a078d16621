"""Local DP-SGD (Abadi et al. 2016, "Deep Learning with Differential Privacy") on every client,
through Opacus's ``PrivacyEngine``: per-sample gradients, each clipped to ``max_grad_norm``,
Gaussian noise sigma * max_grad_norm on their sum, Poisson-sampled batches.

This protects each client's individual EXAMPLES against whoever sees the client's update (the
server included), where DP-FedAvg protects whole USERS against whoever sees the global model.
Each client's privacy loss composes over every round it takes part in: a per-client
:class:`PrivacyLedger` accumulates the (sigma, q, steps) history of every Opacus run on that
client, and the round's results carry each client's epsilon so far in
``Updates.metrics["dp_epsilon"]`` (:class:`~edgeweave.train.privacy.report.ClientPrivacyReport`
puts the largest one in the metrics line).

The backend mirrors :class:`~edgeweave.train.backends.sequential.SequentialBackend` (one client
after another) and honours the FitConfig: lr, momentum and weight decay go to the SGD optimiser
Opacus wraps, ``batch_size`` is the EXPECTED Poisson batch size (sample rate batch_size / n), an
epoch is n / batch_size steps, and ``local_steps`` caps the steps. FedProx's proximal term is
refused: the per-sample clipping would have to include it. Opacus needs per-sample gradients,
which it has for Linear and Conv layers (mlp:, logreg:, cnn:, digits-cnn); BatchNorm mixes
samples and is refused by Opacus's validator.

Batch sampling and noise come from generators seeded by (config.seed, round, client), so runs
are reproducible; a deployment would use Opacus's ``secure_mode``. The per-client ledgers live
in the backend (the server does not checkpoint backends): :meth:`state` / :meth:`load_state`
let a caller carry them across a restart.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.validators import ModuleValidator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from edgeweave.train.backends.sequential import ClientFailed, SequentialBackend
from edgeweave.train.privacy.accountant import PrivacyLedger
from edgeweave.train.task import Task, client_seed
from edgeweave.train.types import FitConfig, Params, TrainError, Updates


class DPSGDBackend(SequentialBackend):
    """Trains each selected client with Opacus DP-SGD; reports each client's epsilon."""

    name = "dp_sgd"

    def __init__(self, task: Task, noise_multiplier: float, max_grad_norm: float,
                 delta: float, drop_prob: float = 0.0, seed: int = 0) -> None:
        if task.data is None:
            raise TrainError(f"dp_sgd backend: task {task.name!r} has no client data")
        if not max_grad_norm > 0:
            raise TrainError(f"dp_sgd backend: max_grad_norm must be > 0, got {max_grad_norm}")
        if not 0 <= drop_prob < 1:
            raise TrainError(f"dp_sgd backend: drop_prob must be in [0, 1), got {drop_prob}")
        PrivacyLedger(delta).step(noise_multiplier, 1.0, 0)  # validates delta and sigma
        errors = ModuleValidator.validate(task.model_fn(), strict=False)
        if errors:
            raise TrainError(f"dp_sgd backend: model of task {task.name!r} cannot be trained "
                             f"with per-sample gradients: {errors[0]}")
        super().__init__(task, drop_prob=drop_prob, seed=seed)
        self.noise_multiplier = float(noise_multiplier)
        self.max_grad_norm = float(max_grad_norm)
        self.delta = float(delta)
        self.ledgers: dict[int, PrivacyLedger] = {}

    def fit(self, round_num: int, global_params: Params, client_ids: list[int],
            config: FitConfig) -> Updates:
        if config.prox_mu > 0:
            raise TrainError(f"privacy.local_dp: FedProx's proximal term (strategy mu "
                             f"{config.prox_mu:g}) is not clipped per sample, so DP-SGD cannot "
                             "train with it; use strategy fedavg (or mu: 0) with local_dp")
        updates = super().fit(round_num, global_params, client_ids, config)
        if len(updates):
            updates.metrics["dp_epsilon"] = {c: self.epsilon(c) for c in updates.client_ids}
        return updates

    def _train_one(self, cid: int, global_params: Params, x: torch.Tensor, y: torch.Tensor,
                   config: FitConfig, round_num: int) -> tuple[Params, float]:
        if len(y) == 0:
            raise ClientFailed("no local data")
        return self._train(cid, global_params, x, y, config, round_num)

    def _train(self, cid: int, global_params: Params, x: torch.Tensor, y: torch.Tensor,
               config: FitConfig, round_num: int) -> tuple[Params, float]:
        model = self.task.model_fn()
        model.load_state_dict(global_params, strict=False)
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                              weight_decay=config.weight_decay)
        base = client_seed(config.seed, round_num, cid)
        seeds = np.random.SeedSequence([self.seed, base]).generate_state(2)
        loader = DataLoader(TensorDataset(x, y), batch_size=min(config.batch_size, len(y)),
                            generator=torch.Generator().manual_seed(int(seeds[0])))
        with warnings.catch_warnings():
            # "secure RNG turned off" (seeded on purpose, see module doc) and torch's note that
            # the inputs need no grad (Opacus's hooks fire on the first layer all the same)
            warnings.simplefilter("ignore")
            engine = PrivacyEngine(accountant="rdp")
            private, opt, loader = engine.make_private(
                module=model, optimizer=opt, data_loader=loader,
                noise_multiplier=self.noise_multiplier, max_grad_norm=self.max_grad_norm,
                noise_generator=torch.Generator().manual_seed(int(seeds[1])))
            losses = self._loop(private, opt, loader, config)
        ledger = self.ledgers.setdefault(cid, PrivacyLedger(self.delta))
        ledger.extend(engine.accountant.history)
        inner = private._module
        new = OrderedDict((k, v.detach().clone()) for k, v in inner.state_dict().items()
                          if k in global_params)
        return new, float(np.mean(losses)) if losses else 0.0

    @staticmethod
    def _loop(model: nn.Module, opt: torch.optim.Optimizer, loader: DataLoader,
              config: FitConfig) -> list[float]:
        steps_per_epoch = len(loader)
        total = config.local_steps or config.epochs * steps_per_epoch
        losses: list[float] = []
        done = 0
        while done < total:
            for xb, yb in loader:
                opt.zero_grad()
                out = model(xb)
                # an empty Poisson batch still takes a (pure noise) step: the accountant
                # counts it, so skipping it would spend privacy for nothing
                loss = nn.functional.cross_entropy(out, yb) if len(yb) else out.sum() * 0.0
                loss.backward()
                opt.step()
                if len(yb):
                    losses.append(float(loss.detach()))
                done += 1
                if done == total:
                    break
        return losses

    def epsilon(self, client_id: int) -> float:
        """Epsilon client ``client_id`` has spent so far at ``delta`` (0 if it never trained)."""
        ledger = self.ledgers.get(client_id)
        return 0.0 if ledger is None else ledger.epsilon()

    def max_epsilon(self) -> float:
        return max((lg.epsilon() for lg in self.ledgers.values()), default=0.0)

    def state(self) -> dict[str, Any]:
        return {"ledgers": {c: lg.state() for c, lg in self.ledgers.items()}}

    def load_state(self, state: dict[str, Any]) -> None:
        self.ledgers = {}
        for c, st in state.get("ledgers", {}).items():
            lg = PrivacyLedger(self.delta)
            lg.load_state(st)
            self.ledgers[int(c)] = lg
