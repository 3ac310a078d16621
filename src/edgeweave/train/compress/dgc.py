"""``"dgc:DENSITY[,MOMENTUM[,CLIP[,WARMUP]]]"``: Deep Gradient Compression (Lin et al. 2018)
adapted to federated rounds.

The four techniques of the paper, per sender and per tensor, where the "gradient" g is the
sender's update for the round (in FL the client's model delta: the accumulated pseudo-gradient
of its local SGD steps):

- momentum correction and local gradient accumulation: accumulate the velocity, not the raw
  gradient: u = m u + g, v = v + u, send top-k(v). Sparsifying g and applying momentum
  afterwards would lose the momentum of the coordinates that wait; accumulating u keeps it, so a
  coordinate that waits receives what momentum SGD would have applied to it (the paper's
  equation 6; no (1 - m) dampening, as in the paper and its reference code).
- local gradient clipping: before accumulating, the sender clips its update to the global norm
  threshold CLIP scaled by N^-1/2 (N = senders in the round), as the paper does so that the sum
  of N clipped updates respects CLIP (0 = no clipping).
- momentum factor masking: where v was sent, zero both v and u, so a stale momentum does not keep
  pushing coordinates that were just applied.
- warm-up of the sparsity: the density ramps down exponentially over the first WARMUP rounds,
  25%, 6.25%, 1.5625%, 0.39% ... (sparsity 75%, 93.75%, 98.4375%, 99.6%, as in the paper), then
  stays at DENSITY.

The dense limit is FedAvg: with DENSITY = 1 and no clipping every coordinate is sent every round,
masking clears u and v each time, and what goes out is exactly g (tests check this). An earlier
version dampened the momentum, u = m u + (1 - m) g, which with masking sent (1 - m) g: a tenth
of FedAvg's step at m = 0.9, and a CNN that stayed at chance. In the sparse regime a coordinate
that waits T rounds goes out as sum_t u_t, up to 1/(1 - m) times its FedAvg step for large T:
the server momentum that momentum correction is meant to preserve.

Where it operates: on each round's update, not on every local step. The backends train clients
with plain local SGD and return models (and the vectorized backend trains all clients at once),
so a per-step hook would have to live inside every backend; per round is also where the bytes
are spent in FL, since nothing is communicated between local steps. The momentum therefore runs
across rounds (across a client's participations), not across SGD steps, and it is stale for a
client that is rarely selected: DGC suits cohorts that take part in most rounds.

Bytes are those of the ``topk`` codec's payload (values + compact indices) for each tensor.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch

from edgeweave.codec import CodecError
from edgeweave.codec.update import parse_numbers
from edgeweave.train.compress.base import (
    UpdateCompressor,
    codec_named,
    load_residuals,
    residual_state,
)
from edgeweave.train.types import Params, TrainError

USAGE = "dgc:DENSITY[,MOMENTUM[,CLIP[,WARMUP]]] with 0 < DENSITY <= 1, 0 <= MOMENTUM < 1, " \
        "CLIP >= 0 (0 = off), WARMUP >= 0 rounds (e.g. dgc:0.001,0.9,5,4)"


def warmup_density(round_index: int, density: float, warmup: int) -> float:
    """Density in the 0-based ``round_index``: 0.25 ** (i + 1) during warm-up, floored at
    ``density`` (Lin et al.: sparsity 75%, 93.75%, 98.4375%, 99.6%, then the target)."""
    if round_index < warmup:
        return max(density, 0.25 ** (round_index + 1))
    return density


class DGC(UpdateCompressor):
    """Momentum-corrected, clipped, masked top-k with a sparsity warm-up; state per sender."""

    def __init__(self, density: float = 0.001, momentum: float = 0.9, clip: float = 0.0,
                 warmup: int = 4, name: str | None = None) -> None:
        if not (0 < density <= 1 and 0 <= momentum < 1 and clip >= 0 and warmup >= 0
                and float(warmup).is_integer()):
            raise TrainError(f"dgc: got density={density}, momentum={momentum}, clip={clip}, "
                             f"warmup={warmup}; expected {USAGE}")
        self.density, self.momentum, self.clip, self.warmup = density, momentum, clip, int(warmup)
        self.name = name or f"dgc:{density:g},{momentum:g},{clip:g},{self.warmup}"
        self.rounds = 0  # rounds begun so far
        self.senders = 1
        self.u: dict[int, dict[str, torch.Tensor]] = {}
        self.v: dict[int, dict[str, torch.Tensor]] = {}

    def begin_round(self, n_senders: int) -> None:
        self.rounds += 1
        self.senders = max(1, n_senders)

    def current_density(self) -> float:
        return warmup_density(max(self.rounds - 1, 0), self.density, self.warmup)

    def _clip_scale(self, update: Mapping[str, torch.Tensor]) -> float:
        if self.clip == 0:
            return 1.0
        norm = math.sqrt(sum(float(t.double().pow(2).sum()) for t in update.values()
                             if t.is_floating_point()))
        limit = self.clip / math.sqrt(self.senders)
        return 1.0 if norm <= limit else limit / norm

    def compress(self, key: int, update: Mapping[str, torch.Tensor]) -> tuple[Params, int]:
        codec = codec_named(f"topk:{self.current_density():.10g}", self.name)
        scale = self._clip_scale(update)
        u, v = self.u.setdefault(key, {}), self.v.setdefault(key, {})
        out, total = OrderedDict(), 0
        m = self.momentum
        for name, t in update.items():
            if not t.is_floating_point():
                enc = codec.encode(t)
                total += enc.nbytes
                out[name] = codec.decode(enc)
                continue
            g = t.detach().to(torch.float64) * scale
            un = u.get(name, torch.zeros_like(g)).mul(m).add_(g)
            vn = v.get(name, torch.zeros_like(g)).add_(un)
            enc = codec.encode(vn.to(t.dtype))
            total += enc.nbytes
            dec = codec.decode(enc)
            sent = dec != 0
            vn -= dec.to(torch.float64)  # what is left to send (exactly 0 where sent ...
            vn[sent] = 0.0               # ... up to the cast to the tensor's dtype)
            un[sent] = 0.0               # momentum factor masking
            u[name], v[name] = un, vn
            out[name] = dec
        return out, total

    def state(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "senders": self.senders, "u": residual_state(self.u),
                "v": residual_state(self.v)}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.rounds = int(state.get("rounds", 0))
        self.senders = int(state.get("senders", 1))
        self.u = load_residuals(state.get("u", {}), self.name)
        self.v = load_residuals(state.get("v", {}), self.name)


def dgc_from_spec(spec: str) -> DGC:
    args = spec.partition(":")[2]
    try:
        density, momentum, clip, warmup = parse_numbers("dgc", USAGE, args, [0.001, 0.9, 0.0, 4.0])
    except CodecError as e:
        raise TrainError(str(e)) from None
    return DGC(density, momentum, clip, int(warmup) if warmup.is_integer() else -1, name=spec)
