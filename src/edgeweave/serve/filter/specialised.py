"""The specialised model, the cascade's middle stage (NoScope's specialised CNN, FFS-VA's
stream-specialised network): a tiny CNN trained on the reference model's own labels for this
stream, which only has to tell this scene with an object from this scene without one, so it
can be orders of magnitude cheaper than the reference model."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgeweave.adapt.fit import fit
from edgeweave.errors import ServeError


class SpecialisedCNN(nn.Sequential):
    """avgpool 2 - conv(C -> w) - relu - maxpool 2 - conv(w -> 2w) - relu - maxpool 2 -
    flatten - linear(2 logits: no object, object), for frames ``(N, C, H, W)``, H and W
    divisible by 8."""

    def __init__(self, channels: int, size: int, width: int = 8):
        if size % 8:
            raise ServeError(f"the specialised model needs a frame size divisible by 8, "
                             f"got {size}")
        super().__init__(
            nn.AvgPool2d(2),
            nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * width * (size // 8) ** 2, 2),
        )


def train_specialised(frames: torch.Tensor, positive: np.ndarray, *, width: int = 8,
                      epochs: int = 15, seed: int = 0) -> SpecialisedCNN:
    """Train on ``frames`` ``(N, C, H, W)`` in [0, 1] labelled ``positive`` by the reference
    model. Classes are weighted by their inverse frequency: at 10% occurrence an unweighted
    loss is minimised by "never an object", the one answer the cascade cannot afford."""
    if len(frames) == 0 or len(frames) != len(positive):
        raise ServeError("the specialised model needs a non-empty stream with one label per "
                         "frame")
    y = torch.from_numpy(positive.astype(np.int64))
    counts = torch.bincount(y, minlength=2).double()
    weight = (len(y) / (2 * counts.clamp(min=1))).float()
    torch.manual_seed(seed)  # the initial weights too: ``seed`` decides the whole model
    model = SpecialisedCNN(frames.shape[1], frames.shape[2], width)

    def loss(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(m(xb), yb, weight=weight)

    fit(model, frames, y, epochs=epochs, seed=seed, loss_fn=loss)
    return model


@torch.inference_mode()
def object_probability(model: nn.Module, frames: torch.Tensor, batch: int = 512) -> np.ndarray:
    """P(object) per frame."""
    model.eval()
    out = [torch.softmax(model(frames[i:i + batch]), dim=1)[:, 1]
           for i in range(0, len(frames), batch)]
    return torch.cat(out).double().numpy()
