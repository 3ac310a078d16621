"""Knowledge distillation (Hinton et al.): a narrower copy of an ``nn.Sequential`` trained on
the teacher's softened outputs as well as the labels."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from edgeweave.adapt.fit import fit
from edgeweave.adapt.structured import conv2d_like
from edgeweave.adapt.variant import Variant
from edgeweave.errors import EdgeWeaveError


def narrow(model: nn.Module, width: float) -> nn.Sequential:
    """A freshly initialized copy of a Sequential conv/linear net with every hidden width
    (conv channels, Linear features except the output layer) scaled by ``width``."""
    if not isinstance(model, nn.Sequential):
        raise EdgeWeaveError(f"narrow needs an nn.Sequential model, got {type(model).__name__}")
    if not 0 < width <= 1:
        raise EdgeWeaveError(f"width must be in (0, 1], got {width!r}")
    layers = list(model)
    last_linear = max((i for i, mod in enumerate(layers) if isinstance(mod, nn.Linear)),
                      default=-1)
    out: list[nn.Module] = []
    channels: int | None = None  # current channel / feature count of the new net
    old_channels: int | None = None
    for i, mod in enumerate(layers):
        if isinstance(mod, nn.Conv2d):
            if mod.groups != 1:
                raise EdgeWeaveError("narrow supports ungrouped convs only")
            c_in = channels if channels is not None else mod.in_channels
            c_out = max(1, round(mod.out_channels * width))
            out.append(conv2d_like(mod, c_in, c_out))
            channels, old_channels = c_out, mod.out_channels
        elif isinstance(mod, nn.BatchNorm2d):
            out.append(nn.BatchNorm2d(channels or mod.num_features))
        elif isinstance(mod, nn.Linear):
            f_in = mod.in_features
            if channels is not None and old_channels:
                f_in = channels * (mod.in_features // old_channels)
            f_out = mod.out_features if i == last_linear else max(1, round(mod.out_features
                                                                           * width))
            out.append(nn.Linear(f_in, f_out, mod.bias is not None))
            channels, old_channels = f_out, mod.out_features
        else:
            out.append(copy.deepcopy(mod))
    return nn.Sequential(*out)


def distillation_loss(teacher: nn.Module, temperature: float = 4.0, alpha: float = 0.7
                      ) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """Hinton et al.: ``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1-alpha) * CE``,
    as a ``loss_fn(student, x, y)`` for :func:`edgeweave.adapt.fit.fit`."""
    if temperature <= 0:
        raise EdgeWeaveError(f"temperature must be > 0, got {temperature!r}")
    if not 0 <= alpha <= 1:
        raise EdgeWeaveError(f"alpha must be in [0, 1], got {alpha!r}")
    teacher.eval()
    f = nn.functional

    def loss(student: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            soft = f.log_softmax(teacher(xb) / temperature, dim=1)
        logits = student(xb)
        kl = f.kl_div(f.log_softmax(logits / temperature, dim=1), soft, reduction="batchmean",
                      log_target=True)
        return alpha * temperature**2 * kl + (1 - alpha) * f.cross_entropy(logits, yb)

    return loss


def distill(teacher: nn.Module, x: torch.Tensor, y: torch.Tensor,
            student: nn.Module | None = None, width: float = 0.5, temperature: float = 4.0,
            alpha: float = 0.7, epochs: int = 30, lr: float = 3e-3, seed: int = 0,
            name: str | None = None) -> Variant:
    """Train ``student`` (default: :func:`narrow` of the teacher at ``width``) on the teacher's
    softened outputs plus the labels."""
    torch.manual_seed(seed)
    given = student is not None
    student = copy.deepcopy(student) if student is not None else narrow(teacher, width)
    fit(student, x, y, epochs=epochs, lr=lr, seed=seed,
        loss_fn=distillation_loss(teacher, temperature, alpha))
    return Variant.of(name or f"distilled-w{width}", student.eval(),
                      {"method": "distill", "width": None if given else width,
                       "temperature": temperature, "alpha": alpha, "epochs": epochs})
