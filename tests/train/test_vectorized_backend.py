"""The vectorized backend must give the model the sequential reference gives (same seeds)."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from edgeweave.train.backends.schedule import BatchSchedule, client_seeds
from edgeweave.train.backends.sequential import SequentialBackend
from edgeweave.train.backends.vectorized import VectorizedBackend
from edgeweave.train.local import batch_indices
from edgeweave.train.models import build_model
from edgeweave.train.task import FederatedData, Task, client_seed
from edgeweave.train.types import FitConfig, TrainError, Updates

# unequal sizes: empty, smaller than a batch, exact batches, partial last batches
SIZES = [0, 5, 16, 17, 33, 40, 1, 70, 7, 48]


@functools.cache
def _digits(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images[:n] / 16.0, dtype=torch.float32)
    return x, torch.tensor(d.target[:n])


def _task(spec: str | None = None, sizes: list[int] = SIZES, model_fn=None,
          image: bool = False) -> Task:
    x, y = _digits(sum(sizes))
    x = x.unsqueeze(1) if image else x.reshape(len(x), 64)
    offsets = torch.tensor([0, *np.cumsum(sizes)])
    fn = model_fn or (lambda: build_model(spec))
    return Task(fn, FederatedData(x, y, offsets), x[:8], y[:8], init_seed=3)


def _by_client(u: Updates, ids: list[int]) -> Updates:
    return u.select([u.client_ids.index(c) for c in ids])


def _assert_same(task: Task, config: FitConfig, round_num: int = 2, **kw) -> Updates:
    ids = list(range(task.data.num_clients))
    g = task.init_params()
    ref = SequentialBackend(task).fit(round_num, g, ids, config)
    got = _by_client(VectorizedBackend(task, **kw).fit(round_num, g, ids, config), ids)
    assert got.client_ids == ref.client_ids
    for k in g:
        torch.testing.assert_close(got.params[k], ref.params[k], rtol=1e-5, atol=1e-6)
        assert not torch.equal(got.params[k][1], g[k]), "clients must actually train"
    torch.testing.assert_close(got.train_loss, ref.train_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.num_examples, ref.num_examples)
    return got


CONFIGS = [
    FitConfig(lr=0.1, batch_size=16),
    FitConfig(lr=0.05, batch_size=8, epochs=2, seed=7),
    FitConfig(lr=0.1, batch_size=8, local_steps=5, momentum=0.9, weight_decay=0.01,
              prox_mu=0.1),
]


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("spec", ["mlp:64,32,10", "logreg:64,10"])
def test_mlp_and_logreg_equal_the_reference(spec: str, config: FitConfig, fused: bool) -> None:
    backend = VectorizedBackend(_task(spec), fused=fused)
    assert (backend.layout is not None) == fused  # the hand-written path is really taken
    _assert_same(_task(spec), config, fused=fused)


@pytest.mark.parametrize(("spec", "config", "fused"), [
    ("digits-cnn", CONFIGS[0], True), ("digits-cnn", CONFIGS[2], True),
    ("digits-cnn", CONFIGS[0], False), ("digits-cnn", CONFIGS[2], False),
    ("cnn:4,8,16", CONFIGS[2], True)])
def test_cnns_equal_the_reference(spec: str, config: FitConfig, fused: bool) -> None:
    task = _task(spec, sizes=[0, 3, 17, 9, 20], image=True)
    assert (VectorizedBackend(task, fused=fused).cnn is not None) == fused
    _assert_same(task, config, fused=fused)


def test_cnns_the_hand_written_path_cannot_run_take_the_generic_one() -> None:
    def strided():
        return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Flatten(),
                             nn.Linear(36, 10))

    def avgpool():
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.AvgPool2d(2), nn.Flatten(),
                             nn.Linear(64, 10))

    for fn in (strided, avgpool):
        task = _task(sizes=[3, 17, 9], model_fn=fn, image=True)
        assert VectorizedBackend(task).cnn is None
        _assert_same(task, CONFIGS[0])


def test_untrained_client_keeps_the_global_model_and_zero_loss() -> None:
    task = _task("logreg:64,10")
    got = _assert_same(task, CONFIGS[2])
    g = task.init_params()
    row = got.client_ids.index(0)  # client 0 has no samples
    for k in g:
        assert torch.equal(got.params[k][row], g[k])
    assert float(got.train_loss[row]) == 0.0


def test_chunking_does_not_change_the_result() -> None:
    task = _task("mlp:64,16,10")
    ids = list(range(task.data.num_clients))
    g = task.init_params()
    whole = VectorizedBackend(task).fit(1, g, ids, CONFIGS[2])
    tiny = VectorizedBackend(task, memory_budget=1)  # one client per chunk
    assert tiny._chunk_size(g, CONFIGS[2]) == 1
    parts = _by_client(tiny.fit(1, g, ids, CONFIGS[2]), whole.client_ids)
    for k in g:
        torch.testing.assert_close(parts.params[k], whole.params[k])


def test_batchnorm_falls_back_says_so_and_equals_sequential() -> None:
    def bn_model() -> nn.Module:
        return nn.Sequential(nn.Linear(64, 16), nn.BatchNorm1d(16, track_running_stats=False),
                             nn.ReLU(), nn.Linear(16, 10))

    task = _task(model_fn=bn_model, sizes=[16, 20, 34, 8])  # no batch of one sample
    with pytest.warns(RuntimeWarning, match="BatchNorm1d"):
        backend = VectorizedBackend(task)
    assert backend.fallback and "batch statistics" in backend.fallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = _assert_same(task, CONFIGS[0])
    assert "BatchNorm1d" in got.metrics["backend_fallback"]


def test_random_forward_falls_back() -> None:
    class Noisy(nn.Module):  # not a known layer type AND random: either check must catch it
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(nn.functional.dropout(x, 0.5, training=True))

    with pytest.warns(RuntimeWarning, match="random"):
        backend = VectorizedBackend(_task(model_fn=Noisy))
    assert "random" in backend.fallback
    with pytest.warns(RuntimeWarning, match="Dropout"):
        VectorizedBackend(_task(model_fn=lambda: nn.Sequential(nn.Dropout(0.2),
                                                               nn.Linear(64, 10))))


def test_schedule_has_the_reference_batches() -> None:
    sizes = [0, 5, 16, 17, 33, 1, 70]
    offsets = torch.tensor([0, *np.cumsum(sizes)])
    for config in [FitConfig(batch_size=16), FitConfig(batch_size=4, local_steps=11, seed=5)]:
        s = BatchSchedule.build(offsets, list(range(len(sizes))), config, 4)
        assert s.steps.tolist() == sorted(s.steps.tolist(), reverse=True)
        for rank, pos in enumerate(s.order.tolist()):
            ref = batch_indices(sizes[pos], config, 4, pos)
            assert int(s.steps[rank]) == len(ref)
            for t, want in enumerate(ref):
                rows, k = s.step(t)
                assert rank < k  # active clients are a prefix
                n = int(s.count[rows][rank])
                got = s.index[rows][rank][:n] - offsets[pos]
                if sizes[pos] <= config.batch_size:  # whole data every step: order is free
                    got, want = got.sort().values, want.sort().values
                assert torch.equal(got, want)


def test_vectorized_client_seeds_match_numpy() -> None:
    rng = np.random.default_rng(1)
    ids = [0, 1, 2**32 - 1, *rng.integers(0, 2**32, 50).tolist()]
    for seed, r in [(0, 0), (12345, 3), (2**32 - 1, 2**31), (2**40, 1)]:
        assert client_seeds(seed, r, ids) == [client_seed(seed, r, c) for c in ids]


def test_unknown_client_is_rejected_by_name() -> None:
    task = _task("logreg:64,10")
    with pytest.raises(TrainError, match="no client 99"):
        VectorizedBackend(task).fit(0, task.init_params(), [1, 99], FitConfig())


def test_many_clients_take_the_large_block_path_and_still_match() -> None:
    # 140 clients x 12 samples: the first step's logits exceed the small-block threshold
    task = _task("mlp:64,16,10", sizes=[12] * 140)
    fused = _assert_same(task, FitConfig(lr=0.1, batch_size=16))
    ids = list(range(140))
    generic = _by_client(VectorizedBackend(task, fused=False).fit(
        2, task.init_params(), ids, FitConfig(lr=0.1, batch_size=16)), ids)
    for k, v in fused.params.items():
        torch.testing.assert_close(generic.params[k], v, rtol=1e-5, atol=1e-6)
