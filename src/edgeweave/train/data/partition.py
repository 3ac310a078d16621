"""Partitioners: how a centralised dataset is split over simulated clients.

Each returns one index array per client, and together they partition ``range(n)`` exactly (every
sample owned by exactly one client), so ``FederatedData.from_parts`` never duplicates or drops
data and accuracy differences between partitions come from the skew alone.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgeweave.train.types import TrainError

Parts = list[np.ndarray]


def _check(n_samples: int, n_clients: int, what: str, per_client: int = 1) -> None:
    if n_clients < 1:
        raise TrainError(f"{what} partition: n_clients must be >= 1, got {n_clients}")
    if n_samples < n_clients * per_client:
        raise TrainError(
            f"{what} partition: {n_samples} samples cannot give {n_clients} clients "
            f"{per_client} each (need >= {n_clients * per_client})"
        )


def iid(n_samples: int, n_clients: int, rng: np.random.Generator) -> Parts:
    """Uniformly random, sizes differing by at most one (FedAvg's IID setting)."""
    _check(n_samples, n_clients, "iid")
    return [np.sort(p) for p in np.array_split(rng.permutation(n_samples), n_clients)]


def dirichlet(labels: np.ndarray, n_clients: int, alpha: float,
              rng: np.random.Generator) -> Parts:
    """Label skew (Hsu et al. 2019): each class is split over the clients in proportions drawn
    from Dirichlet(alpha); small alpha gives clients few classes, large alpha tends to IID.

    At alpha = 0.1 with many clients some draw nothing. Rather than re-drawing until none is empty
    (NIID-bench's loop, unbounded time at tiny alpha), every empty client takes one sample from the
    currently largest client: the skew is disturbed by at most ``n_clients`` moved samples and the
    result is deterministic given ``rng``.
    """
    labels = np.asarray(labels)
    _check(len(labels), n_clients, "dirichlet")
    if not alpha > 0:
        raise TrainError(f"dirichlet partition: alpha must be > 0, got {alpha}")
    owner = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        p = rng.dirichlet(np.full(n_clients, alpha))
        cuts = (np.cumsum(p)[:-1] * len(idx)).astype(np.int64)
        owner[idx] = np.repeat(np.arange(n_clients), np.diff(np.r_[0, cuts, len(idx)]))
    parts = [list(np.flatnonzero(owner == i)) for i in range(n_clients)]
    for i in range(n_clients):
        if not parts[i]:
            donor = max(range(n_clients), key=lambda j: len(parts[j]))
            parts[i].append(parts[donor].pop(int(rng.integers(len(parts[donor])))))
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def shards(labels: np.ndarray, n_clients: int, rng: np.random.Generator,
           shards_per_client: int = 2) -> Parts:
    """The FedAvg paper's pathological non-IID split (McMahan et al. 2017, sec. 3): sort by
    label, cut into ``n_clients * shards_per_client`` equal shards, give each client that many
    at random, so with 2 shards most clients see only two classes. Ties within a label are in
    random order so shards of the same class differ between seeds."""
    labels = np.asarray(labels)
    _check(len(labels), n_clients, "shards", shards_per_client)
    if shards_per_client < 1:
        raise TrainError(
            f"shards partition: shards_per_client must be >= 1, got {shards_per_client}"
        )
    perm = rng.permutation(len(labels))
    by_label = perm[np.argsort(labels[perm], kind="stable")]
    pieces = np.array_split(by_label, n_clients * shards_per_client)
    deal = rng.permutation(len(pieces)).reshape(n_clients, shards_per_client)
    return [np.sort(np.concatenate([pieces[j] for j in row])) for row in deal]


def unbalanced(n_samples: int, n_clients: int, sigma: float, rng: np.random.Generator) -> Parts:
    """IID labels, log-normal sizes (LEAF / FedProx's unbalanced setting): client weights
    ~ LogNormal(0, sigma), so sigma = 0 is balanced and sigma = 2 puts most data on a few
    clients. Every client gets at least one sample; the rest is shared by largest remainder so
    sizes sum to ``n_samples`` exactly."""
    _check(n_samples, n_clients, "unbalanced")
    if sigma < 0:
        raise TrainError(f"unbalanced partition: sigma must be >= 0, got {sigma}")
    w = rng.lognormal(0.0, sigma, n_clients)
    share = w / w.sum() * (n_samples - n_clients)
    sizes = np.floor(share).astype(np.int64)
    short = n_samples - n_clients - int(sizes.sum())
    sizes[np.argsort(-(share - sizes), kind="stable")[:short]] += 1
    sizes += 1
    perm = rng.permutation(n_samples)
    return [np.sort(p) for p in np.split(perm, np.cumsum(sizes)[:-1])]


PARTITIONERS: dict[str, Callable[..., Parts]] = {
    "iid": iid, "dirichlet": dirichlet, "shards": shards, "unbalanced": unbalanced,
}
