"""Krum and multi-Krum (Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine
Tolerant Gradient Descent").

Each client's score is the sum of squared distances to its n - f - 2 nearest other clients;
Krum keeps the client with the lowest score (an update surrounded by many close neighbours
cannot be an outlier planted by at most f attackers), multi-Krum averages the ``m`` lowest.
The guarantee needs n > 2f + 2. When dropouts leave fewer updates than that, the round still
aggregates (training must survive dropouts) with f lowered to the largest value n allows, and
``effective_f`` says which was used. All pairwise distances come from one ``torch.cdist`` over
the flattened, stacked updates.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from edgeweave.train.strategies.base import Strategy
from edgeweave.train.types import FitConfig, Params, TrainError, Updates


def krum_scores(flat: torch.Tensor, f: int) -> torch.Tensor:
    """Score of each row of ``flat`` (n, D): sum of squared distances to its n-f-2 nearest."""
    n = flat.shape[0]
    x = flat.to(torch.float64)
    d2 = torch.cdist(x, x).pow(2)
    d2.fill_diagonal_(float("inf"))  # a client is not its own neighbour
    k = min(max(n - f - 2, 1), n - 1)
    nearest = d2.topk(k, dim=1, largest=False).values
    return nearest.sum(dim=1)


class Krum(Strategy):
    name = "krum"

    def __init__(self, f: int = 1, m: int = 1, fraction: float = 1.0, min_clients: int = 1,
                 fit: FitConfig | None = None) -> None:
        if f < 0 or m < 1:
            raise TrainError(f"{self.name}: need f >= 0 Byzantine clients and m >= 1 to keep, "
                             f"got f={f}, m={m}")
        super().__init__(fraction, min_clients, fit)
        self.f, self.m = int(f), int(m)
        self.effective_f = self.f

    def aggregate(self, round_num: int, global_params: Params, updates: Updates) -> Params:
        n = len(updates)
        if n == 0:
            raise TrainError(f"{self.name}: round {round_num} has no client updates to aggregate")
        if n == 1:
            return OrderedDict((k, updates.params[k][0].clone()) for k in global_params)
        self.effective_f = min(self.f, max(0, (n - 3) // 2))
        flat = torch.cat([updates.params[k].reshape(n, -1) for k in global_params], dim=1)
        keep = krum_scores(flat, self.effective_f).argsort(stable=True)[: min(self.m, n)]
        return OrderedDict(
            (k, updates.params[k].index_select(0, keep).mean(dim=0)) for k in global_params
        )
