"""A small supervised training loop for the models adapt/ derives (exit heads, students,
fine-tuned pruned variants). Full-batch-friendly data only; federated training lives in train/."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

_Model = TypeVar("_Model", bound=nn.Module)


def fit(model: _Model, x: torch.Tensor, y: torch.Tensor, epochs: int = 30,
        lr: float = 3e-3, batch: int = 64, seed: int = 0,
        loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        params=None) -> _Model:
    """Adam on minibatches; `loss_fn(model, xb, yb)` overrides cross-entropy (e.g. the weighted
    sum of exit losses, or a distillation loss); `params` restricts what is trained."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(params if params is not None else model.parameters(), lr=lr)
    loss_fn = loss_fn or (lambda m, xb, yb: nn.functional.cross_entropy(m(xb), yb))
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), batch):
            b = perm[i : i + batch]
            opt.zero_grad()
            loss_fn(model, x[b], y[b]).backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())
