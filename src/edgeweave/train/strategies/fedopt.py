"""FedOpt (Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2): the server treats
the averaged client change as a gradient and applies an adaptive optimiser to it.

With Delta_t = sum_i n_i (w_i - w_t) / sum_i n_i (the sample-weighted mean client change):

    m_t = beta1 * m_{t-1} + (1 - beta1) * Delta_t                 (m_{-1} = 0)
    FedAdagrad: v_t = v_{t-1} + Delta_t^2
    FedAdam:    v_t = beta2 * v_{t-1} + (1 - beta2) * Delta_t^2
    FedYogi:    v_t = v_{t-1} - (1 - beta2) * Delta_t^2 * sign(v_{t-1} - Delta_t^2)
    w_{t+1} = w_t + eta * m_t / (sqrt(v_t) + tau)

As in the paper there is no bias correction, and v starts at tau^2 (the paper's v_{-1} >= tau^2):
tau is the adaptivity knob (large tau -> plain server SGD with step eta/tau), and starting v at
tau^2 keeps the first rounds' steps bounded by about eta instead of eta * |Delta| / tau.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch

from edgeweave.train.strategies.base import Strategy, weighted_mean
from edgeweave.train.types import FitConfig, Params, TrainError, Updates


class FedOpt(Strategy):
    """Shared state and update of the three adaptive server optimisers; subclasses give v_t."""

    name = "fedopt"

    def __init__(self, eta: float = 0.01, beta1: float = 0.9, beta2: float = 0.99,
                 tau: float = 1e-3, fraction: float = 1.0, min_clients: int = 1,
                 fit: FitConfig | None = None) -> None:
        if eta <= 0 or tau <= 0 or not 0 <= beta1 < 1 or not 0 <= beta2 < 1:
            raise TrainError(
                f"{self.name}: need eta > 0, tau > 0, 0 <= beta1 < 1, 0 <= beta2 < 1; got "
                f"eta={eta}, tau={tau}, beta1={beta1}, beta2={beta2}"
            )
        super().__init__(fraction, min_clients, fit)
        self.eta, self.beta1, self.beta2, self.tau = float(eta), float(beta1), float(beta2), \
            float(tau)
        self.m: dict[str, torch.Tensor] | None = None
        self.v: dict[str, torch.Tensor] | None = None

    def second_moment(self, v: torch.Tensor, delta_sq: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def aggregate(self, round_num: int, global_params: Params, updates: Updates) -> Params:
        if len(updates) == 0:
            raise TrainError(f"{self.name}: round {round_num} has no client updates to aggregate")
        mean = weighted_mean(updates.params, updates.num_examples)
        delta = {k: mean[k] - global_params[k] for k in global_params}
        if self.m is None or self.v is None:
            self.m = {k: torch.zeros_like(d) for k, d in delta.items()}
            self.v = {k: torch.full_like(d, self.tau ** 2) for k, d in delta.items()}
        self.m = {k: self.beta1 * self.m[k] + (1 - self.beta1) * delta[k] for k in delta}
        self.v = {k: self.second_moment(self.v[k], delta[k] ** 2) for k in delta}
        return OrderedDict(
            (k, global_params[k] + self.eta * self.m[k] / (self.v[k].sqrt() + self.tau))
            for k in global_params
        )

    def state(self) -> dict[str, Any]:
        if self.m is None or self.v is None:
            return {}
        return {"m": {k: t.clone() for k, t in self.m.items()},
                "v": {k: t.clone() for k, t in self.v.items()}}

    def load_state(self, state: dict[str, Any]) -> None:
        unknown = set(state) - {"m", "v"}
        if unknown or (state and set(state) != {"m", "v"}):
            raise TrainError(
                f"{self.name}: strategy state must hold 'm' and 'v', got {sorted(state)}"
            )
        self.m = {k: t.clone() for k, t in state["m"].items()} if state else None
        self.v = {k: t.clone() for k, t in state["v"].items()} if state else None


class FedAdagrad(FedOpt):
    name = "fedadagrad"

    def second_moment(self, v: torch.Tensor, delta_sq: torch.Tensor) -> torch.Tensor:
        return v + delta_sq


class FedAdam(FedOpt):
    name = "fedadam"

    def second_moment(self, v: torch.Tensor, delta_sq: torch.Tensor) -> torch.Tensor:
        return self.beta2 * v + (1 - self.beta2) * delta_sq


class FedYogi(FedOpt):
    name = "fedyogi"

    def second_moment(self, v: torch.Tensor, delta_sq: torch.Tensor) -> torch.Tensor:
        # Yogi (Zaheer et al. 2018): v moves towards Delta^2 by an additive step, so a sudden
        # large gradient cannot blow v up multiplicatively as in Adam.
        return v - (1 - self.beta2) * delta_sq * torch.sign(v - delta_sq)
