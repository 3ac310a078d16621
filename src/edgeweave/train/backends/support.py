"""Which models the vectorized backend can train exactly as the sequential reference does.

Batched training with torch.func is only equal to per-client training when one local step is a
pure function of (parameters, batch). Three things break that, and each is checked here:
layers that mix the samples of a batch or update buffers in training (BatchNorm: the padding of
a partial batch would enter its statistics, and its running statistics would be shared by all
clients under vmap), randomness in the forward pass (dropout: k clients draw one
stream instead of k), and operations vmap cannot batch. A model that fails any check is trained
client by client with the reference; the reason is returned so the backend can say which.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from edgeweave.train.types import Params

#: leaf layers whose forward is a pure, deterministic function of parameters and input
SUPPORTED_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Bilinear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d,
    nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Embedding, nn.LayerNorm, nn.GroupNorm,
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid,
    nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Softmax, nn.LogSoftmax,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.Flatten, nn.Unflatten, nn.Identity,
)

_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
            nn.FeatureAlphaDropout)


def unsupported_reason(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor
                       ) -> str | None:
    """Why ``model`` (in training mode) cannot be trained batched, or None if it can.
    ``x``, ``y``: at least one real sample, used to try the batched gradient once."""
    for name, m in model.named_modules():
        label = f"layer {name or '<root>'} ({type(m).__name__})"
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
            # batch statistics mix samples: the padding of partial batches would enter them
            return (f"{label} normalises with batch statistics"
                    + (" and updates running buffers" if m.track_running_stats else ""))
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.training and (
                m.track_running_stats):
            return f"{label} updates running statistics in training"
        if isinstance(m, _DROPOUT):
            if m.p > 0 and m.training:
                return f"{label} draws random masks (p={m.p})"
            continue
        if list(m.children()) or isinstance(m, SUPPORTED_LAYERS):
            continue
        return (f"{label} is not a supported layer type (supported: "
                f"{', '.join(sorted(t.__name__ for t in SUPPORTED_LAYERS))})")
    if any(not b.is_floating_point() for b in model.buffers()):
        return "the model has integer buffers (counters a training step would update)"
    return _probe(model, params, x, y)


def _probe(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor) -> str | None:
    """Run the batched gradient on two copies of the first sample; a deterministic, buffer-
    preserving model gives the two clients identical gradients."""
    before = {k: b.clone() for k, b in model.named_buffers()}
    p = {k: torch.stack([v, v]) for k, v in params.items()}
    xb, yb = torch.stack([x[:1], x[:1]]), torch.stack([y[:1], y[:1]])

    def loss(q, xs, ys):
        return nn.functional.cross_entropy(functional_call(model, q, (xs,)), ys)

    try:
        with torch.no_grad():
            out = [functional_call(model, params, (x[:1],)) for _ in range(2)]
        grads = vmap(grad(loss))(p, xb, yb)
    except Exception as e:  # vmap refuses: the message says which op
        return f"torch.func cannot batch this model's training step ({type(e).__name__}: {e})"
    if not torch.equal(out[0], out[1]):
        return "the forward pass is random (two identical calls differ)"
    for k, b in model.named_buffers():
        if not torch.equal(b, before[k]):
            return f"buffer {k} changes in a forward pass"
    if not all(torch.equal(g[0], g[1]) for g in grads.values()):
        return "the batched gradient differs between identical clients"
    return None
