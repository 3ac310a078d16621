"""FedCS client selection (Nishio & Yonetani 2019, "Client Selection for Federated Learning with
Heterogeneous Resources in Mobile Edge", Algorithm 2).

Of the clients that answered the resource request (a random ``request_fraction`` of those
available), keep as many as can finish within the round deadline. Local updates run in parallel
once the model is distributed; uploads share one channel and go one after another, so client j
in the schedule finishes uploading at

    theta_j = max(theta_{j-1}, t_update_j) + t_upload_j

(an upload starts when the channel is free AND the client's update is done). The greedy step adds
the client that increases theta least, ``t_upload + max(0, t_update - theta)``, and keeps it if
theta stays within the deadline; a client that does not fit is dropped for this round. Picking
the cheapest increment first is what lets FedCS fit more clients than random selection under the
same deadline.

The sequential-upload schedule is stricter than the server's own deadline check (each client's
compute + upload on its own), so every client FedCS keeps also arrives in time there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeweave.train.control.wrapper import StrategyWrapper
from edgeweave.train.strategies.base import Strategy
from edgeweave.train.types import ClientInfo, FitConfig, TrainError


def update_s(info: ClientInfo, config: FitConfig) -> float:
    """Seconds of local computation for one round (the server's rule, without the upload)."""
    if config.local_steps is not None and info.num_examples > 0:
        epochs = config.local_steps * min(config.batch_size, info.num_examples) / info.num_examples
    else:
        epochs = config.epochs
    return info.compute_s_per_epoch * epochs


@dataclass(frozen=True)
class Schedule:
    """Selected clients in upload order, and when each finishes uploading."""

    client_ids: list[int]
    finish_s: list[float]

    @property
    def elapsed_s(self) -> float:
        return self.finish_s[-1] if self.finish_s else 0.0


def upload_schedule(clients: list[ClientInfo], config: FitConfig) -> Schedule:
    """Finish times of ``clients`` uploading one at a time in the given order."""
    theta, finish = 0.0, []
    for c in clients:
        theta = max(theta, update_s(c, config)) + c.upload_s
        finish.append(theta)
    return Schedule([c.client_id for c in clients], finish)


def greedy_select(candidates: list[ClientInfo], config: FitConfig, budget_s: float,
                  max_clients: int | None = None) -> Schedule:
    """FedCS Algorithm 2: repeatedly take the candidate whose upload extends the schedule least;
    keep it when the schedule still ends within ``budget_s``."""
    left = list(candidates)
    chosen: list[ClientInfo] = []
    theta = 0.0
    finish: list[float] = []
    while left and (max_clients is None or len(chosen) < max_clients):
        cost = [c.upload_s + max(0.0, update_s(c, config) - theta) for c in left]
        best = int(np.argmin(cost))
        c = left.pop(best)
        if theta + cost[best] <= budget_s:
            theta += cost[best]
            chosen.append(c)
            finish.append(theta)
    return Schedule([c.client_id for c in chosen], finish)


def random_fill(candidates: list[ClientInfo], config: FitConfig, budget_s: float,
                rng: np.random.Generator, max_clients: int | None = None) -> Schedule:
    """The paper's baseline, FedLim: candidates in random order, each kept if the schedule
    still fits. Same deadline and channel model as :func:`greedy_select`, no cost ordering."""
    chosen: list[ClientInfo] = []
    theta, finish = 0.0, []
    for i in rng.permutation(len(candidates)):
        if max_clients is not None and len(chosen) >= max_clients:
            break
        c = candidates[int(i)]
        end = max(theta, update_s(c, config)) + c.upload_s
        if end <= budget_s:
            theta = end
            chosen.append(c)
            finish.append(theta)
    return Schedule([c.client_id for c in chosen], finish)


class FedCS(StrategyWrapper):
    """Wrap any strategy: ``inner`` still aggregates and sets the local configuration; FedCS
    replaces its uniform sampling by deadline-aware greedy selection.

    ``deadline_s`` is the time left for update and upload in a round (the paper's
    T_round - T_cs - T_d - T_agg). ``max_clients`` caps the selection (None: as many as fit).
    ``policy="random"`` is the paper's FedLim baseline (:func:`random_fill`), for comparisons.
    """

    name = "fedcs"

    def __init__(self, inner: Strategy, deadline_s: float, request_fraction: float = 1.0,
                 max_clients: int | None = None, policy: str = "greedy") -> None:
        super().__init__(inner)
        if policy not in ("greedy", "random"):
            raise TrainError(f"fedcs: policy must be 'greedy' or 'random', got {policy!r}")
        self.policy = policy
        if deadline_s <= 0:
            raise TrainError(f"fedcs: deadline_s must be > 0, got {deadline_s}")
        if not 0 < request_fraction <= 1:
            raise TrainError(f"fedcs: request_fraction must be in (0, 1], got {request_fraction}")
        if max_clients is not None and max_clients < 1:
            raise TrainError(f"fedcs: max_clients must be >= 1, got {max_clients}")
        self.deadline_s = float(deadline_s)
        self.request_fraction = float(request_fraction)
        self.max_clients = max_clients
        self.last: Schedule | None = None

    def configure_fit(self, round_num: int, clients: list[ClientInfo],
                      rng: np.random.Generator) -> tuple[list[int], FitConfig]:
        if not clients:
            raise TrainError(f"fedcs: no clients available in round {round_num}")
        _, fit = self.inner.configure_fit(round_num, clients, rng)
        k = max(1, round(self.request_fraction * len(clients)))
        asked = [clients[int(i)] for i in np.sort(rng.choice(len(clients), k, replace=False))]
        if self.policy == "greedy":
            self.last = greedy_select(asked, fit, self.deadline_s, self.max_clients)
        else:
            self.last = random_fill(asked, fit, self.deadline_s, rng, self.max_clients)
        # An empty selection is a round in which no one can make the deadline: the server then
        # keeps the model, rather than waiting for clients it already knows will be late.
        return sorted(self.last.client_ids), fit
