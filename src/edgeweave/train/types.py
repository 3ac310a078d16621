"""The data contracts of federated training, shared by strategies, backends and the server loop.

Client results travel as ONE stacked :class:`Updates` (each parameter tensor has a leading client
axis) rather than a list of per-client state dicts: the vectorized backend produces them that way
for free, robust aggregators (median, trimmed mean, Krum) need them that way, and a 10,000-client
round then aggregates with a handful of tensor ops instead of 10,000 Python dict walks.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch

from edgeweave.errors import EdgeWeaveError

#: A model's trainable floating-point parameters and buffers, by name, on CPU (a state dict).
Params = OrderedDict[str, torch.Tensor]

#: ``Updates.metrics`` key of a backend that aggregated in the network (secure aggregation): its
#: single row is the round's result, and this dict gives ``clients`` (how many contributed) and
#: the ``bytes_up`` / ``bytes_down`` it really moved, which the server records instead of its own
#: per-client counts.
PRESUMMED_WIRE = "presummed_wire"

#: ``Updates.metrics`` key of figures a backend adds to the round's metrics line (the edges of
#: hierarchical FL report their device-tier bytes and simulated time this way).
ROUND_EXTRA = "round_extra"


class TrainError(EdgeWeaveError):
    """A training configuration, dataset, client update or checkpoint is invalid."""


@dataclass(frozen=True)
class FitConfig:
    """What a client does locally in one round. ``prox_mu > 0`` adds FedProx's proximal term
    mu/2 * ||w - w_global||^2 to the local loss. ``local_steps``, when set, caps the number of
    SGD steps (adaptive aggregation frequency chooses it); otherwise ``epochs`` full passes."""

    lr: float = 0.1
    batch_size: int = 16
    epochs: int = 1
    local_steps: int | None = None
    prox_mu: float = 0.0
    momentum: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise TrainError(f"fit config: lr must be > 0, got {self.lr}")
        if self.batch_size < 1 or self.epochs < 1:
            raise TrainError(
                f"fit config: batch_size and epochs must be >= 1, got {self.batch_size}, "
                f"{self.epochs}"
            )
        if self.local_steps is not None and self.local_steps < 1:
            raise TrainError(f"fit config: local_steps must be >= 1, got {self.local_steps}")
        if self.prox_mu < 0 or not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise TrainError(
                "fit config: need prox_mu >= 0, 0 <= momentum < 1, weight_decay >= 0; got "
                f"{self.prox_mu}, {self.momentum}, {self.weight_decay}"
            )


@dataclass
class Updates:
    """The local models returned by a set of clients in one round, stacked on axis 0.

    ``params[name][i]`` is client ``client_ids[i]``'s new value of parameter ``name`` (NOT a
    delta: strategies that need deltas call :meth:`deltas`). ``num_examples[i]`` is how many
    training samples that client used (FedAvg's weight). ``staleness[i]`` is how many global
    rounds old the model was that the client started from (0 in synchronous training).
    """

    client_ids: list[int]
    params: dict[str, torch.Tensor]
    num_examples: torch.Tensor
    train_loss: torch.Tensor
    staleness: torch.Tensor | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.client_ids)
        for name, t in self.params.items():
            if t.shape[:1] != (n,):
                raise TrainError(
                    f"updates: parameter {name!r} has leading size {tuple(t.shape[:1])}, "
                    f"expected ({n},) (one row per client)"
                )
        if self.num_examples.shape != (n,) or self.train_loss.shape != (n,):
            raise TrainError(
                f"updates: num_examples and train_loss must have shape ({n},), got "
                f"{tuple(self.num_examples.shape)} and {tuple(self.train_loss.shape)}"
            )
        if self.staleness is None:
            self.staleness = torch.zeros(n, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.client_ids)

    def deltas(self, global_params: Params) -> dict[str, torch.Tensor]:
        """Per-client update w_i - w_global, stacked."""
        return {k: v - global_params[k].unsqueeze(0) for k, v in self.params.items()}

    def select(self, rows: list[int] | torch.Tensor) -> Updates:
        """The subset of clients at these row positions (not client ids)."""
        idx = torch.as_tensor(rows, dtype=torch.long)
        assert self.staleness is not None
        return Updates(
            client_ids=[self.client_ids[int(i)] for i in idx],
            params={k: v.index_select(0, idx) for k, v in self.params.items()},
            num_examples=self.num_examples.index_select(0, idx),
            train_loss=self.train_loss.index_select(0, idx),
            staleness=self.staleness.index_select(0, idx),
            metrics=dict(self.metrics),
        )

    @staticmethod
    def stack(client_ids: list[int], params: list[Params], num_examples: list[int],
              train_loss: list[float], staleness: list[int] | None = None) -> Updates:
        """Build from per-client state dicts (the sequential, grpc and ray backends)."""
        if not params:
            raise TrainError("updates: no client results to stack")
        names = list(params[0])
        return Updates(
            client_ids=list(client_ids),
            params={k: torch.stack([p[k] for p in params]) for k in names},
            num_examples=torch.tensor(num_examples, dtype=torch.float64),
            train_loss=torch.tensor(train_loss, dtype=torch.float64),
            staleness=None if staleness is None else torch.tensor(staleness, dtype=torch.long),
        )


@dataclass(frozen=True)
class ClientInfo:
    """What the server knows about a client when selecting: its data size and, when the fleet
    says, how long one local epoch and one model upload take on its device and link (FedCS)."""

    client_id: int
    num_examples: int
    compute_s_per_epoch: float = 0.0
    upload_s: float = 0.0
    device: str | None = None


@dataclass
class RoundRecord:
    """One line of the round-metrics JSONL."""

    round: int
    clients: int
    train_loss: float
    test_loss: float
    test_acc: float
    bytes_up: int
    bytes_down: int
    wall_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("round", "clients", "train_loss", "test_loss",
                                              "test_acc", "bytes_up", "bytes_down", "wall_s")}
        out.update(self.extra)
        return out
