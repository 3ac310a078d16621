"""A federated task: the model, the clients' data and the held-out test set.

Client data is packed: all clients' samples in one tensor, client ``i`` owning rows
``offsets[i]:offsets[i+1]``. Ten thousand clients then cost two tensors, not ten thousand, and
the vectorized backend gathers a batch for every client with one indexing op.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edgeweave.train.types import Params, TrainError


@dataclass
class FederatedData:
    x: torch.Tensor
    y: torch.Tensor
    offsets: torch.Tensor  # (num_clients + 1,), long, offsets[0] == 0, nondecreasing

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise TrainError(
                f"federated data: x has {self.x.shape[0]} rows but y has {self.y.shape[0]}"
            )
        off = self.offsets
        if off.dim() != 1 or off.numel() < 2 or int(off[0]) != 0 or int(off[-1]) != len(self.y):
            raise TrainError(
                "federated data: offsets must run from 0 to the number of samples "
                f"({len(self.y)}), got {off.tolist()[:5]}..."
            )
        if bool((off[1:] < off[:-1]).any()):
            raise TrainError("federated data: offsets must be nondecreasing")

    @property
    def num_clients(self) -> int:
        return self.offsets.numel() - 1

    def sizes(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def client(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < self.num_clients:
            raise TrainError(f"federated data: no client {i} (have {self.num_clients})")
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.x[lo:hi], self.y[lo:hi]

    @staticmethod
    def from_parts(x: torch.Tensor, y: torch.Tensor,
                   parts: Sequence[np.ndarray | Sequence[int]]) -> FederatedData:
        """Pack a partition (one index array per client) of the samples (x, y)."""
        idx = [torch.as_tensor(np.asarray(p, dtype=np.int64)) for p in parts]
        order = torch.cat(idx) if idx else torch.zeros(0, dtype=torch.long)
        sizes = torch.tensor([len(p) for p in idx], dtype=torch.long)
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])
        return FederatedData(x[order], y[order], offsets)


@dataclass
class Task:
    """Everything a backend needs to train clients: a model factory (every call returns the same
    architecture; its initial weights come from ``init_seed``), the clients' data and a test set."""

    model_fn: Callable[[], nn.Module]
    data: FederatedData | None  # None when the clients hold their own data (grpc deployment)
    test_x: torch.Tensor
    test_y: torch.Tensor
    name: str = "task"
    init_seed: int = 0

    def init_params(self) -> Params:
        torch.manual_seed(self.init_seed)
        return params_of(self.model_fn())


def params_of(model: nn.Module) -> Params:
    """The model's floating-point parameters and buffers, detached and cloned."""
    return OrderedDict(
        (k, v.detach().clone()) for k, v in model.state_dict().items() if v.is_floating_point()
    )


def client_seed(seed: int, round_num: int, client_id: int) -> int:
    """The seed of one client's batch order in one round: identical in every backend, so the
    vectorized backend can reproduce the sequential reference exactly."""
    return int(np.random.SeedSequence([seed, round_num, client_id]).generate_state(1)[0])
