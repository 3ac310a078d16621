"""Aggregation strategies, one per file, behind one registry: ``get_strategy("fedavg", ...)``."""

from __future__ import annotations

import inspect
from dataclasses import fields
from typing import Any

from edgeweave.train.strategies.base import Strategy, weighted_mean
from edgeweave.train.strategies.fedasync import FedAsync
from edgeweave.train.strategies.fedavg import FedAvg
from edgeweave.train.strategies.fedavgm import FedAvgM
from edgeweave.train.strategies.fedmedian import FedMedian
from edgeweave.train.strategies.fedopt import FedAdagrad, FedAdam, FedOpt, FedYogi
from edgeweave.train.strategies.fedprox import FedProx
from edgeweave.train.strategies.fedsgd import FedSGD
from edgeweave.train.strategies.krum import Krum
from edgeweave.train.strategies.norm_bound import NormBound
from edgeweave.train.strategies.trimmed_mean import TrimmedMean
from edgeweave.train.types import FitConfig, TrainError

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (FedAvg, FedSGD, FedProx, FedAvgM, FedAdam, FedYogi, FedAdagrad, FedAsync,
                FedMedian, TrimmedMean, Krum, NormBound)
}


def list_strategies() -> list[str]:
    return sorted(STRATEGIES)


def get_strategy(name: str, **kwargs: Any) -> Strategy:
    """Build the strategy called ``name``; ``fit`` may be a FitConfig or a dict of its fields."""
    key = name.strip().lower().replace("-", "_")
    cls = STRATEGIES.get(key)
    if cls is None:
        raise TrainError(f"strategy {name!r} is unknown; known: {', '.join(list_strategies())}")
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    bad = sorted(set(kwargs) - set(accepted))
    if bad:
        raise TrainError(f"strategy {key}: unknown parameter(s) {', '.join(bad)}; "
                         f"accepted: {', '.join(accepted)}")
    fit = kwargs.get("fit")
    if isinstance(fit, dict):
        known = {f.name for f in fields(FitConfig)}
        extra = sorted(set(fit) - known)
        if extra:
            raise TrainError(f"strategy {key}: unknown fit field(s) {', '.join(extra)}; "
                             f"accepted: {', '.join(sorted(known))}")
        kwargs["fit"] = FitConfig(**fit)
    try:
        return cls(**kwargs)
    except TypeError as e:  # e.g. a string where a number belongs
        raise TrainError(f"strategy {key}: bad parameters {kwargs}: {e}") from None


__all__ = [
    "STRATEGIES", "FedAdagrad", "FedAdam", "FedAsync", "FedAvg", "FedAvgM", "FedMedian", "FedOpt",
    "FedProx", "FedSGD", "FedYogi", "Krum", "NormBound", "Strategy", "TrimmedMean", "get_strategy",
    "list_strategies", "weighted_mean",
]
