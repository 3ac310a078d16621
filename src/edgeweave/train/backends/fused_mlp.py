"""Hand-written forward and backward of a stack of Linear and ReLU layers, batched over clients.

For the models federated simulations run most (logistic regression, small MLPs) one local step of
k clients is a few batched matmuls; ``vmap(grad(...))`` spends most of its time in dispatch and
autograd bookkeeping around them. Here the gradients are written out (softmax cross-entropy,
ReLU, affine layers) as ``bmm``/``baddbmm`` calls on the stacked parameters, with no autograd
graph. The tests check it equal to the generic ``torch.func`` path and to the sequential
reference; every other model takes the generic path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgeweave.train.types import Params


@dataclass(frozen=True)
class MLPLayout:
    """Parameter names of each affine layer, in order, and whether a ReLU follows it."""

    weights: tuple[str, ...]
    biases: tuple[str | None, ...]
    relu_after: tuple[bool, ...]


def mlp_layout(model: nn.Module, params: Params) -> MLPLayout | None:
    """The layout when ``model`` is exactly Linear (ReLU Linear)* on flat inputs, else None."""
    if type(model).forward is not nn.Sequential.forward:
        return None
    layers = [(name, m) for name, m in model.named_children() if not isinstance(m, nn.Identity)]
    weights: list[str] = []
    biases: list[str | None] = []
    relu: list[bool] = []
    for i, (name, m) in enumerate(layers):
        if isinstance(m, nn.ReLU) and i > 0 and isinstance(layers[i - 1][1], nn.Linear):
            relu[-1] = True
        elif type(m) is nn.Linear:
            weights.append(f"{name}.weight")
            biases.append(f"{name}.bias" if m.bias is not None else None)
            relu.append(False)
        else:
            return None
    names = set(weights) | {b for b in biases if b is not None}
    if not weights or relu[-1] or names != set(params):
        return None
    return MLPLayout(tuple(weights), tuple(biases), tuple(relu))


def mlp_grads(layout: MLPLayout, params: dict[str, torch.Tensor], x: torch.Tensor,
              y: torch.Tensor, mask: torch.Tensor | None, count: torch.Tensor
              ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-client gradients of the mean cross-entropy over each client's real samples.

    ``params[name]`` is (k, ...), or unstacked (...) when every client still holds the same
    model (the first local step: the forward pass is then one GEMM for all clients).
    ``x`` is (k, width, in), ``y`` (k, width), ``mask`` (k, width) with 1.0 for real samples
    (None: all real), ``count`` (k,) real samples per client.
    Returns (grads, per-client loss).
    """
    acts = [x]
    pre: list[torch.Tensor] = []
    h = x
    shared = params[layout.weights[0]].dim() == 2
    for w_name, b_name, relu in zip(layout.weights, layout.biases, layout.relu_after,
                                    strict=True):
        w, b = params[w_name], params[b_name] if b_name else None
        if shared:  # one (k * width, in) GEMM instead of k small ones
            z = nn.functional.linear(h, w, b)
        else:
            z = (torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2)) if b is not None
                 else torch.bmm(h, w.transpose(1, 2)))
        pre.append(z)
        h = torch.relu(z) if relu else z
        acts.append(h)
    scale = (mask / count.unsqueeze(1)) if mask is not None else (1.0 / count).unsqueeze(1)
    dz, loss = softmax_ce(h, y.unsqueeze(2), scale)
    grads: dict[str, torch.Tensor] = {}
    for i in range(len(layout.weights) - 1, -1, -1):
        grads[layout.weights[i]] = torch.bmm(dz.transpose(1, 2), acts[i])
        b_name = layout.biases[i]
        if b_name:
            grads[b_name] = dz.sum(1)
        if i:
            w = params[layout.weights[i]]
            dh = torch.matmul(dz, w) if shared else torch.bmm(dz, w)
            dz = dh.mul_(pre[i - 1] > 0) if layout.relu_after[i - 1] else dh
    return grads, loss


def softmax_ce(logits: torch.Tensor, y: torch.Tensor, scale: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(d loss / d logits, loss) of the ``scale``-weighted cross-entropy; ``y`` is (k, w, 1).

    d(mean CE)/d(logits) = (softmax - onehot) / count, zero on padding. Large blocks take an
    explicit max-shifted softmax (half the time of ``log_softmax`` over a 10-wide last axis on
    CPU); small ones the fewest ops, since there per-op overhead is all that counts.
    """
    if logits.numel() >= 1 << 14:
        z = logits - logits.amax(2, keepdim=True)
        e = z.exp()
        s = e.sum(2, keepdim=True)
        loss = ((s.log() - z.gather(2, y)).squeeze(2) * scale).sum(1)
        dz = e.div_(s)
    else:
        logp = torch.log_softmax(logits, dim=2)
        loss = (logp.gather(2, y).squeeze(2) * scale).sum(1).neg_()
        dz = logp.exp_()
    dz.scatter_(2, y, -1.0, reduce="add")
    return dz.mul_(scale.unsqueeze(2)), loss
