"""DP-FedAvg (McMahan, Ramage, Talwar, Zhang 2018, "Learning Differentially Private Recurrent
Language Models"): user-level differential privacy for federated averaging.

Per round:

1. **Poisson sampling**: every available client joins independently with probability ``q``
   (drawn from the generator the server seeds with (seed, round), so resumed runs sample the
   same clients). Poisson, not fixed-size, sampling is what the subsampled-Gaussian RDP analysis
   behind Opacus's accountant assumes; the inner strategy's ``fraction`` is therefore ignored.
2. **Clipping**: each client's update w_i - w_global is scaled to L2 norm at most ``clip`` over
   ALL parameters jointly (one user's whole contribution has sensitivity ``clip``).
3. **Noise**: N(0, (sigma * clip)^2) is added to every coordinate of the SUM of clipped updates.
4. **Fixed denominator**: the noisy sum is divided by the EXPECTED number of clients q * N, not
   the number that arrived. This is the paper's unbiased estimator f~_f with w_k = 1: dividing by
   the realised count would make the sensitivity depend on the sample size (and leak it), while
   q * N is public. The per-coordinate noise std on the average is sigma * clip / (q * N), so
   user-level DP needs many clients (large q * N) to leave a usable signal.
5. The privatised mean update, times ``server_lr``, is handed to the INNER strategy as a single
   update, so the inner strategy acts as the server optimiser: FedAvg applies it as is, FedAvgM
   adds the server momentum the paper uses (DP-FedAvg with momentum); anything the inner strategy
   does after the noise is post-processing and costs no privacy.

Accounting: each round is one subsampled Gaussian step (sigma, q) recorded in configure_fit,
whether or not the round's results arrive (dropouts can only lower the true cost). A round in
which nobody was sampled (or nobody's result arrived) still releases the current model plus
noise (``aggregates_empty``): keeping it unchanged would tell that nobody took part.
Epsilon at ``delta`` comes from Opacus's ``RDPAccountant`` and is reported every round in the
metrics line; the accountant history is checkpointed with the strategy state.

Assumptions the analysis needs and this class checks: no over-selection (every aggregated client
must be one Poisson-sampled this round; dropouts only remove terms and are fine). Noise is drawn
from a generator seeded by (``seed``, round, a draw from the server's round generator), so a run
is reproducible and resumable; that is a simulation choice: a deployment would use a
cryptographically secure source (Opacus's ``secure_mode``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from edgeweave.train.control.wrapper import StrategyWrapper
from edgeweave.train.privacy.accountant import PrivacyLedger
from edgeweave.train.strategies.base import Strategy
from edgeweave.train.strategies.norm_bound import clip_to_norm
from edgeweave.train.types import ClientInfo, FitConfig, Params, TrainError, Updates


def gaussian_like(t: torch.Tensor, std: float, gen: torch.Generator) -> torch.Tensor:
    """N(0, std^2) noise shaped like ``t`` from ``gen`` (float64 draw: no float32 tails lost)."""
    return (torch.randn(t.shape, generator=gen, dtype=torch.float64) * std).to(t.dtype)


class DPFedAvg(StrategyWrapper):
    """User-level DP aggregation around ``inner`` (see module doc)."""

    name = "dp"

    def __init__(self, inner: Strategy, clip: float, noise_multiplier: float,
                 sample_rate: float, delta: float, server_lr: float = 1.0,
                 seed: int = 0) -> None:
        if not clip > 0:
            raise TrainError(f"dp: clip must be > 0, got {clip}")
        if not server_lr > 0:
            raise TrainError(f"dp: server_lr must be > 0, got {server_lr}")
        if isinstance(inner, Strategy) and inner.asynchronous:
            raise TrainError(f"dp: asynchronous inner strategy {inner.name!r} is not supported "
                             "(the accounting assumes synchronous Poisson-sampled rounds)")
        super().__init__(inner)
        self.ledger = PrivacyLedger(delta)  # validates delta
        self.ledger.step(noise_multiplier, sample_rate, 0)  # validates sigma and q
        self.clip = float(clip)
        self.noise_multiplier = float(noise_multiplier)
        self.sample_rate = float(sample_rate)
        self.delta = float(delta)
        self.server_lr = float(server_lr)
        self.seed = int(seed)
        self._round: dict[str, Any] = {}

    # -- selection --------------------------------------------------------------------------
    def configure_fit(self, round_num: int, clients: list[ClientInfo],
                      rng: np.random.Generator) -> tuple[list[int], FitConfig]:
        n = len(clients)
        if n == 0:
            raise TrainError(f"{self.name}: no clients available in round {round_num}")
        joins = rng.random(n) < self.sample_rate
        chosen = sorted(clients[i].client_id for i in np.flatnonzero(joins))
        self._round = {"round": round_num, "expected": self.sample_rate * n,
                       "sampled": set(chosen),
                       "entropy": int(rng.integers(2**62)), "clipped": float("nan")}
        self.ledger.step(self.noise_multiplier, self.sample_rate)
        return chosen, self.fit_config

    # -- aggregation ------------------------------------------------------------------------
    def noise_std(self) -> float:
        """Per-coordinate std of the noise on the averaged update this round."""
        return self.noise_multiplier * self.clip / self._expected()

    def _expected(self) -> float:
        exp = self._round.get("expected")
        if exp is None:
            raise TrainError(f"{self.name}: aggregate called before configure_fit; the "
                             "fixed denominator q * N needs the round's client count N")
        return float(exp)

    def _generator(self, round_num: int) -> torch.Generator:
        entropy = self._round.get("entropy", 0) if self._round.get("round") == round_num else 0
        seed = np.random.SeedSequence([self.seed, round_num, entropy]).generate_state(1)[0]
        return torch.Generator().manual_seed(int(seed))

    #: a round nobody was sampled for still releases a noisy model (pure noise around the
    #: current one), as the analysis assumes
    aggregates_empty = True

    def aggregate(self, round_num: int, global_params: Params, updates: Updates) -> Params:
        sampled = self._round.get("sampled")
        if sampled is not None and not set(updates.client_ids) <= sampled:
            extra = sorted(set(updates.client_ids) - sampled)[:5]
            raise TrainError(f"{self.name}: round {round_num} got updates from clients {extra} "
                             "that Poisson sampling did not pick (over_select must be 1 under DP)")
        deltas = {k: updates.params[k] - global_params[k].unsqueeze(0) for k in global_params}
        clipped, norms = clip_to_norm(deltas, self.clip)
        denom = self._expected()
        gen = self._generator(round_num)
        sigma_c = self.noise_multiplier * self.clip
        step = OrderedDict()
        for k in global_params:
            total = clipped[k].to(torch.float64).sum(dim=0)
            if sigma_c > 0:
                total = total + gaussian_like(total, sigma_c, gen)
            step[k] = global_params[k] + (self.server_lr * total / denom).to(global_params[k].dtype)
        empty = len(updates) == 0
        self._round["clipped"] = 0.0 if empty else float((norms > self.clip).double().mean())
        self._round["norm_median"] = 0.0 if empty else float(norms.median())
        one = Updates(client_ids=[-1], params={k: v.unsqueeze(0) for k, v in step.items()},
                      num_examples=torch.ones(1, dtype=torch.float64),
                      train_loss=torch.zeros(1, dtype=torch.float64))
        return self.inner.aggregate(round_num, global_params, one)

    # -- reporting and checkpoints ------------------------------------------------------------
    def round_metrics(self) -> dict[str, Any]:
        out = dict(self.inner.round_metrics())
        out.update({
            "dp_epsilon": self.ledger.epsilon(),  # inf without noise (null in the JSONL)
            "dp_delta": self.delta,
            "dp_noise_multiplier": self.noise_multiplier,
            "dp_sample_rate": self.sample_rate,
            "dp_sampled": len(self._round.get("sampled", ())),
            "dp_clipped": self._round.get("clipped", float("nan")),
            "dp_update_norm_median": self._round.get("norm_median", float("nan")),
        })
        if "expected" in self._round:
            out["dp_noise_std"] = self.noise_std()
        return out

    def epsilon(self) -> float:
        """Epsilon spent so far at ``delta`` (inf when sigma = 0)."""
        return self.ledger.epsilon()

    def control_state(self) -> dict[str, Any]:
        return {"ledger": self.ledger.state()}

    def load_control_state(self, state: dict[str, Any]) -> None:
        unknown = set(state) - {"ledger"}
        if unknown:
            raise TrainError(f"{self.name}: unexpected strategy state keys {sorted(unknown)}")
        self.ledger = PrivacyLedger(self.delta)
        if "ledger" in state:
            self.ledger.load_state(state["ledger"])
