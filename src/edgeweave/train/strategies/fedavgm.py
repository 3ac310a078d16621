"""FedAvgM (Hsu et al. 2019, "Measuring the Effects of Non-Identical Data Distribution for
Federated Visual Classification"): server-side momentum on the FedAvg pseudo-gradient.

With d_t = w_t - FedAvg(clients) (the direction the clients moved the model, negated):

    v_t = beta * v_{t-1} + d_t          (v_0 = 0)
    w_{t+1} = w_t - server_lr * v_t

beta = 0 and server_lr = 1 is exactly FedAvg. Momentum smooths the oscillation that non-IID
client sampling causes from round to round.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch

from edgeweave.train.strategies.base import Strategy, weighted_mean
from edgeweave.train.types import FitConfig, Params, TrainError, Updates


class FedAvgM(Strategy):
    name = "fedavgm"

    def __init__(self, server_lr: float = 1.0, momentum: float = 0.9, fraction: float = 1.0,
                 min_clients: int = 1, fit: FitConfig | None = None) -> None:
        if server_lr <= 0 or not 0 <= momentum < 1:
            raise TrainError(
                f"{self.name}: need server_lr > 0 and 0 <= momentum < 1, got {server_lr}, "
                f"{momentum}"
            )
        super().__init__(fraction, min_clients, fit)
        self.server_lr = float(server_lr)
        self.momentum = float(momentum)
        self.velocity: dict[str, torch.Tensor] | None = None

    def aggregate(self, round_num: int, global_params: Params, updates: Updates) -> Params:
        if len(updates) == 0:
            raise TrainError(f"{self.name}: round {round_num} has no client updates to aggregate")
        mean = weighted_mean(updates.params, updates.num_examples)
        pseudo_grad = {k: global_params[k] - mean[k] for k in global_params}
        if self.velocity is None:
            self.velocity = pseudo_grad
        else:
            self.velocity = {k: self.momentum * self.velocity[k] + pseudo_grad[k]
                             for k in global_params}
        return OrderedDict(
            (k, global_params[k] - self.server_lr * self.velocity[k]) for k in global_params
        )

    def state(self) -> dict[str, Any]:
        if self.velocity is None:
            return {}
        return {"velocity": {k: v.clone() for k, v in self.velocity.items()}}

    def load_state(self, state: dict[str, Any]) -> None:
        unknown = set(state) - {"velocity"}
        if unknown:
            raise TrainError(f"{self.name}: unexpected strategy state keys {sorted(unknown)}")
        vel = state.get("velocity")
        self.velocity = None if vel is None else {k: v.clone() for k, v in vel.items()}
