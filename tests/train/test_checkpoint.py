"""The checkpoint's random state: a resumed run draws what an uninterrupted one would."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgeweave.train import checkpoint as ckpt


def test_restored_rng_continues_numpys_cached_gaussian(tmp_path: Path) -> None:
    # numpy's legacy normal() makes two Gaussians per Box-Muller step and caches the second,
    # so after an odd number of draws the cache is live; the checkpoint must carry it.
    np.random.seed(7)
    torch.manual_seed(7)
    np.random.normal(size=3)
    torch.randn(3)
    assert np.random.get_state(legacy=False)["has_gauss"] == 1
    cp = tmp_path / ckpt.CHECKPOINT
    ckpt.save_checkpoint(cp, {"rng": ckpt.rng_state()})
    uninterrupted = (np.random.normal(size=4), np.random.rand(2), torch.randn(4))

    np.random.seed(99)  # a fresh process would start elsewhere
    torch.manual_seed(99)
    ckpt.restore_rng(ckpt.load_checkpoint(cp)["rng"])
    resumed = (np.random.normal(size=4), np.random.rand(2), torch.randn(4))

    np.testing.assert_array_equal(resumed[0], uninterrupted[0])
    np.testing.assert_array_equal(resumed[1], uninterrupted[1])
    assert torch.equal(resumed[2], uninterrupted[2])


def test_checkpoint_without_cached_gaussian_still_restores(tmp_path: Path) -> None:
    # checkpoints written before the cache was saved have only the key and position
    np.random.seed(3)
    state = ckpt.rng_state()
    old = {k: state[k] for k in ("torch", "numpy_key", "numpy_pos")}
    expected = np.random.rand(3)
    np.random.seed(4)
    ckpt.restore_rng(old)
    np.testing.assert_array_equal(np.random.rand(3), expected)
