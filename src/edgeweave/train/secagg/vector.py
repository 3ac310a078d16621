"""A client's FedAvg contribution as one ring vector, and the securely summed vector back.

FedAvg needs sum_i n_i (w_i - w) and sum_i n_i; the server loop also reports the
example-weighted train loss. A client therefore submits, in Z_{2^k},
``[n_i * q(delta_i) ..., n_i, n_i * q_loss(loss_i)]``: the weight multiplies the already
quantised integers, so the weighted sum is exact integer arithmetic (no second rounding), and
the server divides only after unmasking the total. ``frac_bits`` is chosen from the total
weight the server announces, so no sum of clipped, weighted values can wrap the ring.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from edgeweave.train.secagg.quantize import FixedPoint, frac_bits_for
from edgeweave.train.types import Params, TrainError

LOSS_CLIP = 64.0  # train losses above this are reported as this (the aggregate stays exact)


@dataclass(frozen=True)
class UpdateVector:
    """How a model delta maps to ring elements, for one round."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    delta: FixedPoint
    loss: FixedPoint
    max_weight: int  # the largest total weight (sum of n_i) the sum may carry

    @staticmethod
    def for_model(params: Params, total_weight: int, clip: float = 1.0,
                  ring_bits: int = 32) -> UpdateVector:
        return UpdateVector(
            tuple(params), tuple(tuple(v.shape) for v in params.values()),
            FixedPoint(ring_bits, frac_bits_for(total_weight, clip, ring_bits), clip),
            FixedPoint(ring_bits, frac_bits_for(total_weight, LOSS_CLIP, ring_bits), LOSS_CLIP),
            int(total_weight))

    @property
    def length(self) -> int:
        return sum(int(np.prod(s)) for s in self.shapes) + 2

    def quantised(self, delta: Params) -> np.ndarray:
        """The signed fixed-point integers of a delta (before weighting), flattened."""
        if tuple(delta) != self.names:
            raise TrainError(f"secagg: update names {list(delta)} differ from {list(self.names)}")
        return self.delta.to_int(np.concatenate(
            [v.detach().to(torch.float64).reshape(-1).numpy() for v in delta.values()]))

    def encode(self, delta: Params, weight: int, loss: float) -> np.ndarray:
        if not 1 <= weight <= self.max_weight:
            raise TrainError(f"secagg: weight {weight} must be in [1, {self.max_weight}] (the "
                             "total weight the round's fixed point was sized for)")
        q = self.quantised(delta) * weight
        loss_q = int(self.loss.to_int(np.array([max(loss, 0.0)]))[0]) * weight
        return self.delta.to_ring(np.concatenate([q, [weight, loss_q]]))

    def decode(self, total: np.ndarray) -> tuple[Params, int, float]:
        """(weighted mean delta, total weight, weighted mean loss) from the ring sum."""
        signed = self.delta.from_ring(total)
        weight = int(signed[-2])
        if weight < 1:
            raise TrainError(f"secagg: the summed weight is {weight}; nothing to average")
        mean = signed[:-2].astype(np.float64) * self.delta.step / weight
        out: Params = OrderedDict()
        at = 0
        for name, shape in zip(self.names, self.shapes, strict=True):
            size = int(np.prod(shape))
            out[name] = torch.from_numpy(mean[at:at + size].reshape(shape).copy())
            at += size
        loss = float(signed[-1]) * self.loss.step / weight
        return out, weight, loss
