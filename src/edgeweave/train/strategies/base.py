"""The one base class every aggregation strategy derives from (one strategy per file).

A strategy decides who trains in a round and with what local configuration
(:meth:`Strategy.configure_fit`), and turns the stacked client results into the next global model
(:meth:`Strategy.aggregate`). It knows nothing of transport or of how clients are executed: the
server loop hands it :class:`~edgeweave.train.types.Updates` whichever backend produced them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch

from edgeweave.train.types import ClientInfo, FitConfig, Params, TrainError, Updates


class Strategy(ABC):
    """Base of all strategies. ``fraction`` of the available clients (at least ``min_clients``)
    is sampled uniformly each round unless a subclass overrides :meth:`configure_fit`."""

    name: str = "strategy"
    #: asynchronous strategies (FedAsync) get updates one at a time with their staleness
    asynchronous: bool = False
    #: called with an EMPTY Updates when no result arrives in a round (DP-FedAvg must still
    #: release a noisy model then: skipping would reveal that nobody was sampled)
    aggregates_empty: bool = False

    def __init__(self, fraction: float = 1.0, min_clients: int = 1,
                 fit: FitConfig | None = None) -> None:
        if not 0 < fraction <= 1:
            raise TrainError(f"{self.name}: fraction must be in (0, 1], got {fraction}")
        if min_clients < 1:
            raise TrainError(f"{self.name}: min_clients must be >= 1, got {min_clients}")
        self.fraction = fraction
        self.min_clients = min_clients
        self.fit_config = fit or FitConfig()

    def configure_fit(self, round_num: int, clients: list[ClientInfo],
                      rng: np.random.Generator) -> tuple[list[int], FitConfig]:
        """Client ids to train this round and their local configuration."""
        n = len(clients)
        if n == 0:
            raise TrainError(f"{self.name}: no clients available in round {round_num}")
        k = min(n, max(self.min_clients, round(self.fraction * n)))
        chosen = rng.choice(n, size=k, replace=False)
        return sorted(clients[int(i)].client_id for i in chosen), self.fit_config

    @abstractmethod
    def aggregate(self, round_num: int, global_params: Params, updates: Updates) -> Params:
        """The next global model from this round's client results."""

    def round_metrics(self) -> dict[str, Any]:
        """Figures about the last :meth:`aggregate` (e.g. privacy spent, clients clipped) that the
        server adds to that round's metrics line; JSON-serialisable values only."""
        return {}

    def state(self) -> dict[str, Any]:
        """Server-side optimiser state to checkpoint (momentum buffers, ...)."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        if state:
            raise TrainError(f"{self.name}: unexpected strategy state keys {sorted(state)}")


def weighted_mean(stacked: dict[str, torch.Tensor],
                  weights: torch.Tensor) -> dict[str, torch.Tensor]:
    """Sum_i w_i x_i / sum_i w_i over axis 0, in float64 for the sum and cast back."""
    w = weights.to(torch.float64)
    total = w.sum()
    if total <= 0:
        raise TrainError("aggregate: total weight is zero (no examples in any update)")
    out = {}
    for k, v in stacked.items():
        # one (n,) @ (n, D) product: no (n, D) temporary for the weighted rows, about 3x faster
        # than multiply-then-sum at 10,000 clients
        flat = v.reshape(v.shape[0], -1).to(torch.float64)
        out[k] = ((w @ flat) / total).reshape(v.shape[1:]).to(v.dtype)
    return out
