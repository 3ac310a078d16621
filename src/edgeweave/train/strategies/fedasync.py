"""FedAsync (Xie et al. 2019, "Asynchronous Federated Optimization"): the server mixes in each
client model as it arrives, weighted down by how stale it is:

    w <- (1 - a) * w + a * w_client,   a = alpha * s(staleness)

with s(k) one of the paper's functions of staleness k = (server version now) - (version the
client started from):

    constant    s(k) = 1
    polynomial  s(k) = (k + 1)^(-a)
    hinge       s(k) = 1 if k <= b else 1 / (a * (k - b) + 1)

The server loop runs asynchronous strategies one arrival at a time. When it hands over several
arrivals at once they are applied in row order, in closed form rather than a Python loop:
after applying rows 1..n, w = prod_j (1 - a_j) * w + sum_i a_i * prod_{j>i} (1 - a_j) * w_i.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from edgeweave.train.strategies.base import Strategy
from edgeweave.train.types import FitConfig, Params, TrainError, Updates

STALENESS_FUNCTIONS = ("constant", "polynomial", "hinge")


class FedAsync(Strategy):
    name = "fedasync"
    asynchronous = True

    def __init__(self, alpha: float = 0.6, staleness_fn: str = "polynomial", a: float = 0.5,
                 b: int = 4, fraction: float = 0.1, min_clients: int = 1,
                 fit: FitConfig | None = None) -> None:
        if not 0 < alpha <= 1:
            raise TrainError(f"{self.name}: alpha must be in (0, 1], got {alpha}")
        if staleness_fn not in STALENESS_FUNCTIONS:
            raise TrainError(f"{self.name}: staleness_fn {staleness_fn!r} is not one of "
                             f"{', '.join(STALENESS_FUNCTIONS)}")
        if a < 0 or b < 0:
            raise TrainError(f"{self.name}: need a >= 0 and b >= 0, got a={a}, b={b}")
        # fraction here sets the concurrency: how many clients train at the same time.
        super().__init__(fraction, min_clients, fit)
        self.alpha, self.staleness_fn, self.a, self.b = float(alpha), staleness_fn, float(a), \
            int(b)

    def staleness_weight(self, staleness: torch.Tensor) -> torch.Tensor:
        k = staleness.to(torch.float64).clamp(min=0)
        if self.staleness_fn == "constant":
            return torch.ones_like(k)
        if self.staleness_fn == "polynomial":
            return (k + 1).pow(-self.a)
        return torch.where(k <= self.b, torch.ones_like(k), 1 / (self.a * (k - self.b) + 1))

    def aggregate(self, round_num: int, global_params: Params, updates: Updates) -> Params:
        if len(updates) == 0:
            raise TrainError(f"{self.name}: round {round_num} has no client updates to aggregate")
        assert updates.staleness is not None
        mix = self.alpha * self.staleness_weight(updates.staleness)  # a_i, float64
        keep = 1 - mix
        # later[i] = prod_{j>i} (1 - a_j): reverse exclusive cumulative product
        later = torch.cat([keep.flip(0).cumprod(0).flip(0)[1:], keep.new_ones(1)])
        coef = mix * later
        out = OrderedDict()
        for k, w in global_params.items():
            v = updates.params[k].to(torch.float64)
            shape = (-1,) + (1,) * (v.dim() - 1)
            mixed = keep.prod() * w.to(torch.float64) + (coef.view(shape) * v).sum(0)
            out[k] = mixed.to(w.dtype)
        return out
