import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeweave.train.data import dirichlet, iid, partition_indices, shards, unbalanced
from edgeweave.train.types import TrainError


def assert_partition(parts, n):
    allidx = np.concatenate(parts)
    assert len(allidx) == n, "every sample assigned exactly once"
    assert np.array_equal(np.sort(allidx), np.arange(n))


@settings(max_examples=60, deadline=None)
@given(n_clients=st.integers(1, 40), extra=st.integers(0, 400), seed=st.integers(0, 2**31))
def test_iid_partitions_with_balanced_sizes(n_clients, extra, seed):
    n = n_clients + extra
    parts = iid(n, n_clients, np.random.default_rng(seed))
    assert len(parts) == n_clients
    assert_partition(parts, n)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


@settings(max_examples=60, deadline=None)
@given(n_clients=st.integers(1, 30), extra=st.integers(0, 300), classes=st.integers(1, 10),
       alpha=st.floats(0.01, 100), seed=st.integers(0, 2**31))
def test_dirichlet_partitions_and_no_client_is_empty(n_clients, extra, classes, alpha, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n_clients + extra)
    parts = dirichlet(labels, n_clients, alpha, np.random.default_rng(seed))
    assert len(parts) == n_clients
    assert_partition(parts, len(labels))
    assert min(len(p) for p in parts) >= 1


def test_dirichlet_small_alpha_skews_labels_more_than_large():
    labels = np.repeat(np.arange(10), 200)

    def mean_classes(alpha):
        parts = dirichlet(labels, 20, alpha, np.random.default_rng(0))
        return np.mean([len(np.unique(labels[p])) for p in parts])

    assert mean_classes(0.05) < 4 < 9 < mean_classes(100.0)


@settings(max_examples=60, deadline=None)
@given(n_clients=st.integers(1, 30), spc=st.integers(1, 4), extra=st.integers(0, 300),
       seed=st.integers(0, 2**31))
def test_shards_partition_with_equal_shard_sizes(n_clients, spc, extra, seed):
    n = n_clients * spc + extra
    labels = np.random.default_rng(seed).integers(0, 10, n)
    parts = shards(labels, n_clients, np.random.default_rng(seed), spc)
    assert_partition(parts, n)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= spc


def test_shards_gives_each_client_at_most_two_classes_on_sorted_equal_classes():
    # FedAvg's MNIST setting in miniature: 10 classes x 40, 20 clients x 2 shards of 10
    labels = np.repeat(np.arange(10), 40)
    parts = shards(labels, 20, np.random.default_rng(1), 2)
    assert all(len(np.unique(labels[p])) <= 2 for p in parts)
    assert len(np.unique(np.concatenate([labels[p] for p in parts]))) == 10


@settings(max_examples=60, deadline=None)
@given(n_clients=st.integers(1, 40), extra=st.integers(0, 500), sigma=st.floats(0, 3),
       seed=st.integers(0, 2**31))
def test_unbalanced_partitions_with_every_client_nonempty(n_clients, extra, sigma, seed):
    n = n_clients + extra
    parts = unbalanced(n, n_clients, sigma, np.random.default_rng(seed))
    assert_partition(parts, n)
    assert min(len(p) for p in parts) >= 1


def test_unbalanced_sigma_controls_size_spread():
    def cv(sigma):
        sizes = [len(p) for p in unbalanced(20_000, 100, sigma, np.random.default_rng(0))]
        return np.std(sizes) / np.mean(sizes)

    assert cv(0.0) < 0.01 < cv(0.5) < cv(2.0)


def test_partition_specs_and_errors():
    labels = np.repeat(np.arange(10), 10)
    assert len(partition_indices("dirichlet:0.3", labels, 5, 0)) == 5
    assert len(partition_indices("shards:3", labels, 5, 0)) == 5
    with pytest.raises(TrainError, match="unknown kind 'bogus'"):
        partition_indices("bogus", labels, 5, 0)
    with pytest.raises(TrainError, match="not a number"):
        partition_indices("dirichlet:x", labels, 5, 0)
    with pytest.raises(TrainError, match="cannot give 200 clients"):
        iid(100, 200, np.random.default_rng(0))
    with pytest.raises(TrainError, match="alpha must be > 0"):
        dirichlet(labels, 5, 0.0, np.random.default_rng(0))
