"""Real data that ships with the package: scikit-learn's 1,797 handwritten 8x8 digits.

This is the benchmark workload's data ("digits scaled to [0,1], 360 held-out test samples"), so
every backend and every peer framework sees exactly the same split for a given seed.
"""

from __future__ import annotations

import numpy as np
import torch

from edgeweave.train.types import TrainError


def digits(test_size: int = 360, seed: int = 0, flat: bool = True,
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test): pixels / 16 as float32 in [0, 1], labels int64.

    The test set is a uniformly random ``test_size`` samples (seeded), not stratified: peers'
    loaders do the same, and stratification would tie the split to scikit-learn's version.
    ``flat`` gives (N, 64) rows for MLPs; otherwise (N, 1, 8, 8) images for the digits CNN.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    n = len(data.target)
    if not 0 < test_size < n:
        raise TrainError(f"digits: test_size must be in 1..{n - 1}, got {test_size}")
    x = torch.tensor(data.images / 16.0, dtype=torch.float32)
    x = x.reshape(n, 64) if flat else x.unsqueeze(1)
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.as_tensor(np.random.default_rng(seed).permutation(n))
    te, tr = perm[:test_size], perm[test_size:]
    return x[tr], y[tr], x[te], y[te]
