"""The base of strategy wrappers: a control policy (FedCS, adaptive frequency) that changes WHO
trains or HOW MUCH, around any aggregation strategy that still decides how results combine."""

from __future__ import annotations

from typing import Any

from edgeweave.train.strategies.base import Strategy
from edgeweave.train.types import Params, TrainError, Updates


class StrategyWrapper(Strategy):
    """Delegates aggregation and checkpoint state to ``inner``; subclasses override
    :meth:`configure_fit` and add their own state under ``"control"``."""

    def __init__(self, inner: Strategy) -> None:
        if not isinstance(inner, Strategy):
            raise TrainError(f"{self.name}: wraps a Strategy, got {type(inner).__name__}")
        super().__init__(inner.fraction, inner.min_clients, inner.fit_config)
        self.inner = inner
        self.name = f"{self.name}+{inner.name}"
        self.asynchronous = inner.asynchronous

    def aggregate(self, round_num: int, global_params: Params, updates: Updates) -> Params:
        return self.inner.aggregate(round_num, global_params, updates)

    def round_metrics(self) -> dict[str, Any]:
        return self.inner.round_metrics()

    def control_state(self) -> dict[str, Any]:
        return {}

    def load_control_state(self, state: dict[str, Any]) -> None:
        return None

    def state(self) -> dict[str, Any]:
        return {"inner": self.inner.state(), "control": self.control_state()}

    def load_state(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.inner.load_state(state.get("inner", {}))
        self.load_control_state(state.get("control", {}))
