"""Local training on one client: the sequential REFERENCE every other backend must reproduce.

The semantics, exactly (the vectorized backend matches them step for step):

* batch order: for each epoch, ``torch.randperm(n, generator=g)`` with
  ``g = torch.Generator().manual_seed(client_seed(config.seed, round, client))`` (one generator
  for the whole round, drawn once per epoch); batches of ``batch_size`` in that order, the last
  one possibly partial;
* ``local_steps`` (when set) runs exactly that many steps, starting a new permutation whenever
  an epoch ends; otherwise ``epochs`` full passes;
* the loss of a step is the mean cross-entropy over the batch plus, with FedProx,
  ``prox_mu / 2 * sum ||w - w_global||^2`` over parameters that require grad;
* SGD: ``g += weight_decay * w``; with momentum ``b = momentum * b + g`` (b starts at 0),
  ``w -= lr * b``; without, ``w -= lr * g``;
* returned ``train_loss`` is the mean of the step losses (cross-entropy part only).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.func import functional_call

from edgeweave.train.task import client_seed
from edgeweave.train.types import FitConfig, Params


def num_steps(n: int, config: FitConfig) -> int:
    if n == 0:
        return 0
    if config.local_steps is not None:
        return config.local_steps
    return config.epochs * -(-n // config.batch_size)


def batch_indices(n: int, config: FitConfig, round_num: int, client_id: int) -> list[torch.Tensor]:
    """The index tensor of every local step, in order (see module doc)."""
    g = torch.Generator().manual_seed(client_seed(config.seed, round_num, client_id))
    out: list[torch.Tensor] = []
    total = num_steps(n, config)
    while len(out) < total:
        perm = torch.randperm(n, generator=g)
        for lo in range(0, n, config.batch_size):
            out.append(perm[lo:lo + config.batch_size])
            if len(out) == total:
                break
    return out


def train_client(model: nn.Module, global_params: Params, x: torch.Tensor, y: torch.Tensor,
                 config: FitConfig, round_num: int, client_id: int) -> tuple[Params, float]:
    """Train a copy of ``global_params`` on (x, y); return the new params and the mean loss."""
    # only parameters are trained; buffers (BatchNorm running statistics) ride along and are
    # updated in place by the forward pass, as in ordinary training
    trainable = {k for k, _ in model.named_parameters()}
    params = OrderedDict((k, v.clone().requires_grad_(k in trainable))
                         for k, v in global_params.items())
    anchor = global_params
    momentum = {k: torch.zeros_like(v) for k, v in params.items()}
    losses = []
    model.train()
    for idx in batch_indices(len(y), config, round_num, client_id):
        out = functional_call(model, params, (x[idx],))
        ce = nn.functional.cross_entropy(out, y[idx])
        loss = ce
        if config.prox_mu > 0:
            loss = loss + config.prox_mu / 2 * sum(
                ((params[k] - anchor[k]) ** 2).sum() for k in params if k in trainable
            )
        live = [(k, w) for k, w in params.items() if w.requires_grad]
        grads = torch.autograd.grad(loss, [w for _, w in live], allow_unused=True)
        with torch.no_grad():
            for (k, w), g in zip(live, grads, strict=True):
                if g is None:
                    continue
                if config.weight_decay:
                    g = g + config.weight_decay * w
                if config.momentum:
                    momentum[k].mul_(config.momentum).add_(g)
                    g = momentum[k]
                w.sub_(config.lr * g)
        losses.append(float(ce.detach()))
    new = OrderedDict((k, v.detach()) for k, v in params.items())
    return new, (sum(losses) / len(losses) if losses else 0.0)
