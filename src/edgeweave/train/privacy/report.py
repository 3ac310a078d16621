"""Puts the clients' own privacy spending (local DP-SGD) into the round's metrics line.

The server merges only the strategy's :meth:`round_metrics` into a round's line, while the
per-client epsilons of local DP-SGD are known to the backend and travel with the results in
``Updates.metrics["dp_epsilon"]``. This wrapper reads them during aggregation (aggregating
with ``inner`` unchanged) so the line says what the most exposed client has spent.
"""

from __future__ import annotations

from typing import Any

from edgeweave.train.control.wrapper import StrategyWrapper
from edgeweave.train.strategies.base import Strategy
from edgeweave.train.types import Params, Updates


class ClientPrivacyReport(StrategyWrapper):
    name = "client_dp_report"

    def __init__(self, inner: Strategy, delta: float) -> None:
        super().__init__(inner)
        self.delta = float(delta)
        self._eps: dict[int, float] = {}

    def aggregate(self, round_num: int, global_params: Params, updates: Updates) -> Params:
        for cid, eps in updates.metrics.get("dp_epsilon", {}).items():
            self._eps[int(cid)] = float(eps)
        return self.inner.aggregate(round_num, global_params, updates)

    def round_metrics(self) -> dict[str, Any]:
        out = dict(self.inner.round_metrics())
        vals = list(self._eps.values())
        out.update({"client_dp_epsilon_max": max(vals, default=0.0),
                    "client_dp_epsilon_mean": sum(vals) / len(vals) if vals else 0.0,
                    "client_dp_delta": self.delta})
        return out
