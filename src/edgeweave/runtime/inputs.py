"""Inputs for a run: a user's image or array, shaped for the model, or seeded noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgeweave.errors import EdgeWeaveError

_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)  # ImageNet statistics
_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def load_input(path: Path | None, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    if path is None:
        return torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    if not path.exists():
        raise EdgeWeaveError(f"--input {path}: no such file")
    if path.suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
        if tuple(arr.shape) != tuple(shape):
            raise EdgeWeaveError(f"--input {path}: array shape {list(arr.shape)}, "
                                 f"model expects {list(shape)}")
        return torch.from_numpy(arr.astype(np.float32))
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.functional import resize

    try:
        img = decode_image(str(path), mode=ImageReadMode.RGB if shape[1] == 3
                           else ImageReadMode.GRAY)
    except (RuntimeError, ValueError) as e:
        raise EdgeWeaveError(f"--input {path}: not a readable image ({e})") from None
    img = resize(img, list(shape[2:]), antialias=True).float().unsqueeze(0) / 255.0
    return (img - _MEAN) / _STD if shape[1] == 3 else img


def top_classes(output: torch.Tensor, model: str, k: int = 5) -> list[tuple[str, float]]:
    """Top-k (label, probability); ImageNet names for torchvision models (offline metadata)."""
    probs = torch.softmax(output.flatten(1).float(), dim=1)[0]
    values, index = probs.topk(min(k, probs.numel()))
    names = _imagenet_names() if probs.numel() == 1000 else None
    return [(names[i] if names else str(i), float(v))
            for v, i in zip(values.tolist(), index.tolist(), strict=True)]


def _imagenet_names() -> list[str] | None:
    try:
        from torchvision.models import ResNet18_Weights

        return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    except (ImportError, KeyError, AttributeError):
        return None
