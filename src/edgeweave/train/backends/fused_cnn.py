"""Hand-written forward and backward of a plain CNN (Conv2d, ReLU, MaxPool2d, Flatten, Linear in
an ``nn.Sequential``), batched over clients.

``vmap(grad(...))`` over a CNN already turns k clients' convolutions into one grouped
convolution, but the time profile of a federated round (``cnn:32,64,128``, 10 clients, batch 16)
showed where the rest goes: a quarter in max pooling, which vmap runs on the grouped
(batch, k * channels, 8, 8) layout through PyTorch's NCHW pooling kernel, several times slower
than its channels-last kernel, plus autograd and batching-rule bookkeeping around each op. Here
the layers are written out: each convolution is one grouped convolution forward and one
``convolution_backward`` (input, weight and bias gradients in one call), pooling runs
channels-last with its indices kept for the backward, the linear layers are ``bmm`` as in
:mod:`~edgeweave.train.backends.fused_mlp`, and no autograd graph is built.

Activations stay in the grouped layout (batch, k * C, H, W) from the first convolution to the
flatten, so no per-layer transposes are needed. The tests check the gradients equal to the generic
``torch.func`` path and training equal to the sequential reference; any other model (strided or
grouped convolutions, padding modes, other layers) takes the generic path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from edgeweave.train.backends.fused_mlp import softmax_ce

Op = tuple  # ("conv", weight, bias | None, padding) | ("relu",) | ("pool", k) | ("flatten",)
#             | ("linear", weight, bias | None)


@dataclass(frozen=True)
class CNNLayout:
    """The layers in order; convolutions come before the flatten, linear layers after it."""

    ops: tuple[Op, ...]


def cnn_layout(model: nn.Module, params: Mapping[str, torch.Tensor]) -> CNNLayout | None:
    """The layout when ``model`` is an ``nn.Sequential`` of stride-1 zero-padded Conv2d, ReLU,
    non-overlapping MaxPool2d, one Flatten and Linear layers, with at least one convolution;
    else None."""
    if type(model).forward is not nn.Sequential.forward:
        return None
    ops: list[Op] = []
    flat = False
    for name, m in model.named_children():
        op = _op(name, m, flat)
        if op is None:
            return None
        flat = flat or op[0] == "flatten"
        ops.append(op)
    names = {n for op in ops if op[0] in ("conv", "linear") for n in op[1:3] if n}
    if not flat or not any(op[0] == "conv" for op in ops) or names != set(params) or (
            ops[-1][0] != "linear"):
        return None
    return CNNLayout(tuple(ops))


def _op(name: str, m: nn.Module, flat: bool) -> Op | None:
    bias = f"{name}.bias" if getattr(m, "bias", None) is not None else None
    if type(m) is nn.Conv2d and not flat:
        pad = m.padding
        if (m.stride != (1, 1) or m.dilation != (1, 1) or m.groups != 1 or isinstance(pad, str)
                or m.padding_mode != "zeros"):
            return None
        return ("conv", f"{name}.weight", bias, tuple(pad))
    if type(m) is nn.ReLU:
        return ("relu",)
    if type(m) is nn.MaxPool2d and not flat:
        k, s = m.kernel_size, m.stride
        if (not isinstance(k, int) or s not in (k, (k, k)) or m.padding not in (0, (0, 0))
                or m.dilation not in (1, (1, 1)) or m.ceil_mode or m.return_indices):
            return None
        return ("pool", k)
    if type(m) is nn.Flatten and not flat and m.start_dim == 1 and m.end_dim == -1:
        return ("flatten",)
    if type(m) is nn.Linear and flat:
        return ("linear", f"{name}.weight", bias)
    if isinstance(m, nn.Identity):
        return ("identity",)
    return None


def cnn_grads(layout: CNNLayout, params: dict[str, torch.Tensor], x: torch.Tensor,
              y: torch.Tensor, mask: torch.Tensor | None, count: torch.Tensor
              ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-client gradients of the mean cross-entropy over each client's real samples, as
    :func:`~edgeweave.train.backends.fused_mlp.mlp_grads` (same arguments; ``x`` is
    (k, width, C, H, W); unstacked parameters mean every client still holds the same model)."""
    k, width = x.shape[:2]
    p = {n: v if v.dim() > _rank(layout, n) else v.unsqueeze(0).expand(k, *v.shape)
         for n, v in params.items()}
    h = x.transpose(0, 1).reshape(width, k * x.shape[2], *x.shape[3:])
    saved: list[object] = []
    for op in layout.ops:
        h, keep = _forward(op, p, h, k, width)
        saved.append(keep)
    scale = (mask / count.unsqueeze(1)) if mask is not None else (1.0 / count).unsqueeze(1)
    dh, loss = softmax_ce(h, y.unsqueeze(2), scale)
    grads: dict[str, torch.Tensor] = {}
    for i in range(len(layout.ops) - 1, -1, -1):
        dh = _backward(layout.ops[i], p, dh, saved[i], grads, k, width, need_input=i > 0)
    return grads, loss


def _rank(layout: CNNLayout, name: str) -> int:
    for op in layout.ops:
        if op[0] in ("conv", "linear") and name in op[1:3]:
            weight_rank = 4 if op[0] == "conv" else 2
            return weight_rank if name == op[1] else 1
    raise KeyError(name)


def _forward(op: Op, p: dict[str, torch.Tensor], h: torch.Tensor, k: int, width: int
             ) -> tuple[torch.Tensor, object]:
    kind = op[0]
    if kind == "conv":
        w = p[op[1]]
        b = p[op[2]].reshape(-1) if op[2] else None
        out = nn.functional.conv2d(h, w.reshape(-1, *w.shape[2:]), b, padding=op[3], groups=k)
        return out, h
    if kind == "relu":
        out = torch.relu(h)
        return out, out
    if kind == "pool":
        # PyTorch's channels-last max pooling is several times faster than its NCHW kernel on
        # small planes; the indices are the same (first maximum of each window)
        hc = h.contiguous(memory_format=torch.channels_last)
        out, idx = nn.functional.max_pool2d(hc, op[1], return_indices=True)
        return out.contiguous(), (hc, idx)
    if kind == "flatten":  # (width, k * C, H, W) -> (k, width, C * H * W)
        return h.reshape(width, k, -1).transpose(0, 1).contiguous(), h.shape
    if kind == "linear":
        w = p[op[1]]
        out = (torch.baddbmm(p[op[2]].unsqueeze(1), h, w.transpose(1, 2)) if op[2]
               else torch.bmm(h, w.transpose(1, 2)))
        return out, h
    return h, None  # identity


def _backward(op: Op, p: dict[str, torch.Tensor], dh: torch.Tensor, keep: object,
              grads: dict[str, torch.Tensor], k: int, width: int, need_input: bool
              ) -> torch.Tensor:
    kind = op[0]
    if kind == "conv":
        w, inp = p[op[1]], keep
        assert isinstance(inp, torch.Tensor)
        gw = w.reshape(-1, *w.shape[2:])
        gi, g_w, g_b = torch.ops.aten.convolution_backward(
            dh, inp, gw, [gw.shape[0]] if op[2] else None, [1, 1], list(op[3]), [1, 1], False,
            [0, 0], k, [need_input, True, op[2] is not None])
        grads[op[1]] = g_w.view(w.shape)
        if op[2]:
            grads[op[2]] = g_b.view(k, -1)
        return gi
    if kind == "relu":
        assert isinstance(keep, torch.Tensor)
        return torch.ops.aten.threshold_backward(dh, keep, 0)  # one kernel, not gt + mul
    if kind == "pool":
        assert isinstance(keep, tuple)
        hc, idx = keep
        g = dh.contiguous(memory_format=torch.channels_last)
        return torch.ops.aten.max_pool2d_with_indices_backward(
            g, hc, [op[1]] * 2, [op[1]] * 2, [0, 0], [1, 1], False, idx).contiguous()
    if kind == "flatten":
        assert isinstance(keep, torch.Size)
        return dh.transpose(0, 1).reshape(keep)
    if kind == "linear":
        inp = keep
        assert isinstance(inp, torch.Tensor)
        grads[op[1]] = torch.bmm(dh.transpose(1, 2), inp)
        if op[2]:
            grads[op[2]] = dh.sum(1)
        return torch.bmm(dh, p[op[1]]) if need_input else dh
    return dh
