"""Structural compression: filter pruning that really removes channels from an
``nn.Sequential`` (and the BatchNorm and next layer that follow them), and SVD factorization of
Linear layers into two thinner ones. Each returns a :class:`~edgeweave.adapt.variant.Variant`
and may fine-tune it on the data given."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn

from edgeweave.adapt.fit import fit
from edgeweave.adapt.variant import (
    Variant,
    check_sparsity,
    count_flops,
    replace_layer,
    resolve_layer,
)
from edgeweave.errors import EdgeWeaveError

# Modules a filter-pruned conv's channels flow through unchanged (one output channel per input).
_PASS_THROUGH = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
                 nn.Hardswish, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
                 nn.AdaptiveMaxPool2d, nn.Dropout, nn.Dropout2d, nn.Identity)


def conv2d_like(conv: nn.Conv2d, c_in: int, c_out: int) -> nn.Conv2d:
    """A fresh ungrouped Conv2d with ``conv``'s kernel, stride, padding, dilation, bias and
    padding mode, and ``c_in`` -> ``c_out`` channels."""
    # torch types these as tuple[int, ...] (shared by Conv1d/2d/3d); a Conv2d's hold two ints
    def pair(t: tuple[int, ...]) -> tuple[int, int]:
        return cast("tuple[int, int]", t)

    padding = conv.padding if isinstance(conv.padding, str) else pair(conv.padding)
    return nn.Conv2d(c_in, c_out, pair(conv.kernel_size), pair(conv.stride), padding,
                     pair(conv.dilation), 1, conv.bias is not None, conv.padding_mode)


def _slice_conv(conv: nn.Conv2d, out_keep: torch.Tensor | None, in_keep: torch.Tensor | None
                ) -> nn.Conv2d:
    if conv.groups != 1:
        raise EdgeWeaveError("filter pruning supports ungrouped convs only (groups == 1)")
    w = conv.weight.detach()
    if out_keep is not None:
        w = w[out_keep]
    if in_keep is not None:
        w = w[:, in_keep]
    new = conv2d_like(conv, w.shape[1], w.shape[0])
    new.weight.data.copy_(w)
    if conv.bias is not None and new.bias is not None:
        b = conv.bias.detach()
        new.bias.data.copy_(b[out_keep] if out_keep is not None else b)
    return new


def _slice_bn(bn: nn.BatchNorm2d, keep: torch.Tensor) -> nn.BatchNorm2d:
    new = nn.BatchNorm2d(len(keep), bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    if bn.affine:
        new.weight.data.copy_(bn.weight.detach()[keep])
        new.bias.data.copy_(bn.bias.detach()[keep])
    if bn.track_running_stats:  # then both have these buffers (typed Optional)
        for stat in ("running_mean", "running_var"):
            getattr(new, stat).copy_(getattr(bn, stat)[keep])
    return new


def _prune_filters_at(seq: nn.Sequential, idx: int, amount: float) -> tuple[int, int]:
    """Remove the lowest-L1 ``amount`` of conv ``seq[idx]``'s filters and the matching inputs of
    the layer that consumes them; returns (filters before, after)."""
    conv = resolve_layer(seq, str(idx), (nn.Conv2d,), "Conv2d")
    n_out = conv.out_channels
    n_keep = max(1, round(n_out * (1 - amount)))
    norms = conv.weight.detach().abs().flatten(1).sum(1)
    keep = torch.sort(torch.topk(norms, n_keep).indices).values
    flattened = False
    for j in range(idx + 1, len(seq)):
        nxt = seq[j]
        if isinstance(nxt, nn.BatchNorm2d) and not flattened:
            seq[j] = _slice_bn(nxt, keep)
        elif isinstance(nxt, _PASS_THROUGH):
            continue
        elif isinstance(nxt, nn.Flatten) and not flattened:
            if nxt.start_dim != 1:
                raise EdgeWeaveError(f"layer {j} flattens from dim {nxt.start_dim}; need 1")
            flattened = True
        elif isinstance(nxt, nn.Conv2d) and not flattened:
            seq[j] = _slice_conv(nxt, None, keep)
            break
        elif isinstance(nxt, nn.Linear) and flattened:
            if nxt.in_features % n_out:
                raise EdgeWeaveError(f"linear layer {j} has {nxt.in_features} inputs, not a "
                                     f"multiple of conv {idx}'s {n_out} channels")
            per = nxt.in_features // n_out
            cols = (keep[:, None] * per + torch.arange(per)[None, :]).flatten()
            new = nn.Linear(len(cols), nxt.out_features, nxt.bias is not None)
            new.weight.data.copy_(nxt.weight.detach()[:, cols])
            if nxt.bias is not None:
                new.bias.data.copy_(nxt.bias.detach())
            seq[j] = new
            break
        else:
            raise EdgeWeaveError(f"cannot filter-prune layer {idx}: its output flows into "
                                 f"{type(nxt).__name__} (layer {j}), which is not supported")
    else:
        raise EdgeWeaveError(f"layer {idx} is the last conv of the model; pruning its filters "
                             "would change the model's output")
    seq[idx] = _slice_conv(conv, keep, None)
    return n_out, n_keep


def filter_prune(model: nn.Module, amount: float, layers: Sequence[str] | None = None,
                 input_shape: Sequence[int] | None = None,
                 x: torch.Tensor | None = None, y: torch.Tensor | None = None,
                 epochs: int = 0, lr: float = 1e-3, seed: int = 0,
                 name: str | None = None) -> Variant:
    """Structured pruning of an ``nn.Sequential``: remove the ``amount`` fraction of
    lowest-L1-norm output filters of each conv in ``layers`` (default: every conv whose output
    feeds a later conv or Linear) and the matching input channels / features of the consumer
    (through activations, pooling, BatchNorm and Flatten), so the model really gets smaller and
    cheaper; fine-tuned on ``x, y`` for ``epochs``. The recipe records FLOPs before and after
    when ``input_shape`` is given."""
    check_sparsity(amount, "amount")
    if not isinstance(model, nn.Sequential):
        raise EdgeWeaveError(f"filter pruning needs an nn.Sequential model, "
                             f"got {type(model).__name__}")
    m = copy.deepcopy(model)
    convs = [str(i) for i, mod in enumerate(m) if isinstance(mod, nn.Conv2d)]
    if layers is None:
        later = {i for i, mod in enumerate(m) if isinstance(mod, nn.Conv2d | nn.Linear)}
        layers = [c for c in convs if any(j > int(c) for j in later)]
    filters = {}
    for layer in layers:
        resolve_layer(m, str(layer), (nn.Conv2d,), "Conv2d")
        if str(layer) not in convs:
            raise EdgeWeaveError(f"layer {layer!r} must be a top-level conv of the Sequential")
        filters[str(layer)] = _prune_filters_at(m, int(layer), amount)
    recipe: dict[str, Any] = {"method": "filter_prune", "amount": amount,
                              "filters": {k: list(v) for k, v in filters.items()},
                              "fine_tune_epochs": epochs}
    if input_shape is not None:
        recipe["flops_before"] = count_flops(model, input_shape)
        recipe["flops_after"] = count_flops(m, input_shape)
    if epochs > 0:
        if x is None or y is None:
            raise EdgeWeaveError("fine-tuning (epochs > 0) needs x and y")
        fit(m, x, y, epochs=epochs, lr=lr, seed=seed)
    return Variant.of(name or f"filters-{round(amount * 100)}%", m.eval(), recipe)


def svd_linear(linear: nn.Linear, rank: int) -> nn.Sequential:
    """``W ~= U_r S_r V_r^T`` as Linear(in, r, no bias) then Linear(r, out, bias)."""
    if not isinstance(rank, int) or rank < 1:
        raise EdgeWeaveError(f"rank must be an integer >= 1, got {rank!r}")
    w = linear.weight.detach()
    rank = min(rank, min(w.shape))
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    root = s[:rank].sqrt()
    first = nn.Linear(linear.in_features, rank, bias=False)
    second = nn.Linear(rank, linear.out_features, bias=linear.bias is not None)
    first.weight.data.copy_(root[:, None] * vh[:rank])
    second.weight.data.copy_(u[:, :rank] * root[None, :])
    if linear.bias is not None:
        second.bias.data.copy_(linear.bias.detach())
    return nn.Sequential(first, second)


def low_rank(model: nn.Module, rank: int | dict[str, int], layers: Sequence[str] | None = None,
             x: torch.Tensor | None = None, y: torch.Tensor | None = None, epochs: int = 0,
             lr: float = 1e-3, seed: int = 0, name: str | None = None) -> Variant:
    """Factor Linear layers by truncated SVD. ``rank`` is one rank for every layer in ``layers``
    (default: every Linear where the factorization is smaller than the original) or a
    {layer: rank} dict. Optionally fine-tuned on ``x, y``."""
    m = copy.deepcopy(model)
    if isinstance(rank, dict):
        ranks = dict(rank)
    else:
        if not isinstance(rank, int) or rank < 1:
            raise EdgeWeaveError(f"rank must be an integer >= 1, got {rank!r}")
        if layers is None:
            layers = [n for n, mod in m.named_modules() if isinstance(mod, nn.Linear)
                      and rank * (mod.in_features + mod.out_features)
                      < mod.in_features * mod.out_features]
        ranks = dict.fromkeys(layers, rank)
    if not ranks:
        raise EdgeWeaveError(f"no Linear layer would get smaller at rank {rank}")
    for layer, r in ranks.items():
        replace_layer(m, layer, svd_linear(resolve_layer(m, layer, (nn.Linear,), "Linear"), r))
    if epochs > 0:
        if x is None or y is None:
            raise EdgeWeaveError("fine-tuning (epochs > 0) needs x and y")
        fit(m, x, y, epochs=epochs, lr=lr, seed=seed)
    return Variant.of(name or f"svd-r{rank if isinstance(rank, int) else 'mixed'}", m.eval(),
                      {"method": "low_rank_svd", "ranks": ranks, "fine_tune_epochs": epochs})
