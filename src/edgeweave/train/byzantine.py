"""Byzantine clients for robustness experiments: a backend wrapper that corrupts the updates of a
fixed set of attacker clients after the inner backend trained them honestly.

Attacks, on the attacker's honest update d = w_i - w_global:

* ``sign_flip``: send w_global - scale * d (default scale 4). The pure flip (scale 1) only slows
  FedAvg down while attackers are a minority; the boosted flip, common in the robust-aggregation
  literature (e.g. Fang et al. 2020, Karimireddy et al. 2021), makes the attackers' weight count
  against the honest majority's.
* ``scaled``: send w_global + scale * d (default scale 10): the boosting / model-replacement step
  of Bagdasaryan et al. 2020 without a backdoor, which norm bounding was designed against.
* ``noise``: send w_global + N(0, noise_std^2) per coordinate (a broken or random client).

The attackers are ``round(fraction * n)`` client ids drawn once from ``seed`` (or given), so
they are the same clients every round and in every aggregator's run: the comparison between
aggregators is paired. Noise draws are seeded by (seed, round, client). Reported example
counts are left honest, so weighted FedAvg is not attacked through its weights.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from edgeweave.train.backends.base import Backend
from edgeweave.train.types import ClientInfo, FitConfig, Params, TrainError, Updates

ATTACKS = ("none", "sign_flip", "scaled", "noise")
DEFAULT_SCALE = {"sign_flip": 4.0, "scaled": 10.0}


def choose_attackers(client_ids: Sequence[int], fraction: float, seed: int) -> list[int]:
    """``round(fraction * len(client_ids))`` of the ids, drawn from ``seed``."""
    if not 0 <= fraction < 1:
        raise TrainError(f"byzantine: fraction must be in [0, 1), got {fraction}")
    k = round(fraction * len(client_ids))
    rng = np.random.default_rng([seed, 0xB12])
    pick = rng.choice(len(client_ids), size=k, replace=False).tolist() if k else []
    return sorted(int(client_ids[int(i)]) for i in pick)


class ByzantineBackend(Backend):
    """Wraps ``inner``; the clients in :attr:`attackers` send ``attack``-corrupted updates."""

    def __init__(self, inner: Backend, attack: str, fraction: float = 0.0,
                 attackers: Sequence[int] | None = None, scale: float | None = None,
                 noise_std: float = 1.0, seed: int = 0) -> None:
        if attack not in ATTACKS:
            raise TrainError(f"byzantine: unknown attack {attack!r}; expected one of "
                             f"{', '.join(ATTACKS)}")
        if not noise_std > 0:
            raise TrainError(f"byzantine: noise_std must be > 0, got {noise_std}")
        if scale is not None and not scale > 0:
            raise TrainError(f"byzantine: scale must be > 0, got {scale}")
        self.inner = inner
        self.name = f"byzantine({attack})+{inner.name}"
        self.attack = attack
        self.scale = float(scale if scale is not None else DEFAULT_SCALE.get(attack, 1.0))
        self.noise_std = float(noise_std)
        self.seed = seed
        known = [c.client_id for c in inner.available_clients()]
        if attackers is None:
            chosen = choose_attackers(known, fraction, seed)
        else:
            unknown = sorted(set(attackers) - set(known))
            if unknown:
                raise TrainError(f"byzantine: attacker ids {unknown[:5]} are not clients of "
                                 f"backend {inner.name!r}")
            chosen = sorted(int(a) for a in attackers)
        self.attackers = frozenset(chosen if attack != "none" else [])

    def available_clients(self) -> list[ClientInfo]:
        return self.inner.available_clients()

    def state(self) -> dict[str, Any]:
        return self.inner.state()

    def load_state(self, state: dict[str, Any]) -> None:
        self.inner.load_state(state)

    def fit(self, round_num: int, global_params: Params, client_ids: list[int],
            config: FitConfig) -> Updates:
        updates = self.inner.fit(round_num, global_params, client_ids, config)
        rows = [i for i, c in enumerate(updates.client_ids) if c in self.attackers]
        if rows:
            updates.params = {k: self._corrupt(round_num, updates, k, v, global_params[k], rows)
                              for k, v in updates.params.items()}
        updates.metrics["byzantine"] = [updates.client_ids[i] for i in rows]
        return updates

    def _corrupt(self, round_num: int, updates: Updates, name: str, stacked: torch.Tensor,
                 anchor: torch.Tensor, rows: list[int]) -> torch.Tensor:
        out = stacked.clone()
        if not out.is_floating_point():
            return out
        for i in rows:
            delta = stacked[i] - anchor
            if self.attack == "sign_flip":
                out[i] = anchor - self.scale * delta
            elif self.attack == "scaled":
                out[i] = anchor + self.scale * delta
            else:  # noise: one generator per (round, client, parameter), independent of order
                cid = updates.client_ids[i]
                key = zlib.crc32(name.encode())
                s = np.random.SeedSequence([self.seed, round_num, cid, key]).generate_state(1)[0]
                g = torch.Generator().manual_seed(int(s))
                noise = torch.randn(anchor.shape, generator=g, dtype=torch.float64)
                out[i] = anchor + (self.noise_std * noise).to(anchor.dtype)
        return out

    def close(self) -> None:
        self.inner.close()
