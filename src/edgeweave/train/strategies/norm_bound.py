"""Norm bounding (Sun et al. 2019, "Can You Really Backdoor Federated Learning?"): clip each
client's update w_i - w_global to L2 norm ``max_norm`` (over all parameters jointly), then
average the clipped updates.

An attacker's influence on the average is then at most ``max_norm`` times its weight, however
large an update it sends: the boosted (model-replacement) and scaled attacks lose their
multiplier, and random-noise updates lose their size. Unlike the median or Krum it keeps every
honest client's contribution, so it costs little accuracy when ``max_norm`` sits above the
honest update norms. It does not stop small, well-aimed updates (a sign flip of an honest-sized
update passes the bound), which is why it is measured beside the others in
``benchmarks/robustness.py``.

The clipping itself (:func:`clip_to_norm`) is the one implementation shared with DP-FedAvg's
per-client clipping (``edgeweave.train.privacy``), where the bound is the sensitivity.

Averaging is unweighted by default: a Byzantine client could claim a huge ``num_examples`` and
buy back the weight the bound took away (``weighted=True`` gives the paper's n_k / n weights).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import torch

from edgeweave.train.strategies.base import Strategy, weighted_mean
from edgeweave.train.types import FitConfig, Params, TrainError, Updates


def update_norms(deltas: dict[str, torch.Tensor]) -> torch.Tensor:
    """The L2 norm of each client's update over ALL parameters jointly, shape (n,), float64."""
    sq = None
    for v in deltas.values():
        s = v.reshape(v.shape[0], math.prod(v.shape[1:])).to(torch.float64).pow(2).sum(dim=1)
        sq = s if sq is None else sq + s
    if sq is None:
        raise TrainError("clip: no parameters in the updates")
    return sq.sqrt()


def clip_to_norm(deltas: dict[str, torch.Tensor], max_norm: float
                 ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(each row scaled by min(1, max_norm / ||row||), the norms before clipping).

    Rows already within the bound are returned bit-for-bit unchanged (factor exactly 1), so
    clipping never perturbs an honest update it did not need to touch.
    """
    if not max_norm > 0:
        raise TrainError(f"clip: max_norm must be > 0, got {max_norm}")
    norms = update_norms(deltas)
    factor = torch.where(norms > max_norm, max_norm / norms.clamp_min(1e-300),
                         torch.ones_like(norms))
    clipped = {}
    for k, v in deltas.items():
        f = factor.to(v.dtype).reshape(-1, *([1] * (v.dim() - 1)))
        clipped[k] = torch.where(norms.reshape(f.shape) > max_norm, v * f, v)
    return clipped, norms


class NormBound(Strategy):
    name = "norm_bound"

    def __init__(self, max_norm: float = 1.0, weighted: bool = False, fraction: float = 1.0,
                 min_clients: int = 1, fit: FitConfig | None = None) -> None:
        if not max_norm > 0:
            raise TrainError(f"{self.name}: max_norm must be > 0, got {max_norm}")
        super().__init__(fraction, min_clients, fit)
        self.max_norm = float(max_norm)
        self.weighted = bool(weighted)
        self._clipped = float("nan")

    def aggregate(self, round_num: int, global_params: Params, updates: Updates) -> Params:
        n = len(updates)
        if n == 0:
            raise TrainError(f"{self.name}: round {round_num} has no client updates to aggregate")
        deltas = {k: updates.params[k] - global_params[k].unsqueeze(0) for k in global_params}
        clipped, norms = clip_to_norm(deltas, self.max_norm)
        self._clipped = float((norms > self.max_norm).double().mean())
        weights = updates.num_examples if self.weighted else torch.ones(n, dtype=torch.float64)
        mean = weighted_mean(clipped, weights)
        return OrderedDict((k, global_params[k] + mean[k]) for k in global_params)

    def round_metrics(self) -> dict[str, Any]:
        return {"norm_bound_clipped": self._clipped}
