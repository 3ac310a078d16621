"""FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous Networks"): FedAvg's
aggregation, with a proximal term mu/2 * ||w - w_global||^2 added to every client's local loss.

The proximal term keeps a client with skewed data or many local steps from drifting far from
the global model, which is what makes FedAvg diverge under strong non-IID data; mu = 0 is FedAvg.
The term itself is applied by the client (``FitConfig.prox_mu``), so every backend honours it.
"""

from __future__ import annotations

from dataclasses import replace

from edgeweave.train.strategies.fedavg import FedAvg
from edgeweave.train.types import FitConfig, TrainError


class FedProx(FedAvg):
    name = "fedprox"

    def __init__(self, mu: float = 0.01, fraction: float = 1.0, min_clients: int = 1,
                 fit: FitConfig | None = None) -> None:
        if mu < 0:
            raise TrainError(f"{self.name}: mu must be >= 0, got {mu}")
        super().__init__(fraction, min_clients, fit)
        self.mu = float(mu)
        self.fit_config = replace(self.fit_config, prox_mu=self.mu)
