"""Real data for measuring accuracy offline: scikit-learn's handwritten digits (shipped with the
package, nothing downloaded), split train/validation/test with a fixed seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Split:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def digits(seed: int = 0, val: float = 0.15, test: float = 0.2) -> Split:
    """1,797 8x8 grayscale digits as (N, 1, 8, 8) floats in [0, 1], stratified splits."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(data.target, dtype=torch.long)
    idx = np.arange(len(y))
    rest, te = train_test_split(idx, test_size=test, random_state=seed, stratify=data.target)
    tr, va = train_test_split(rest, test_size=val / (1 - test), random_state=seed,
                              stratify=data.target[rest])
    return Split(x[tr], y[tr], x[va], y[va], x[te], y[te])
