"""The reuse decision: a homogenised k-nearest-neighbour vote (H-kNN, Guo et al. 2018) and the
reuse radius calibrated from labelled keys.

A cached label is reused only when the neighbourhood of the query is homogeneous: among the k
nearest cached keys within the reuse radius, one label must hold at least ``threshold`` of the
inverse-distance weight (an exact duplicate outweighs a far neighbour). A plain nearest
neighbour would reuse whatever happens to be closest, also at the border between two classes,
which is where the model and the cache disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Added to distances before inverting them, so an exact duplicate has a finite weight.
EPS = 1e-3


@dataclass(frozen=True)
class Vote:
    label: int
    share: float      #: the label's share of the neighbours' weight, in (0, 1]
    neighbours: int   #: how many neighbours voted (1..k)


def hknn_vote(distances: np.ndarray, labels: np.ndarray, k: int, radius: float) -> Vote | None:
    """The dominant label among the ``k`` nearest points within ``radius`` (None if there are
    none); ties go to the label with the nearest point."""
    within = np.flatnonzero(distances <= radius)
    if len(within) == 0:
        return None
    order = within[np.argsort(distances[within], kind="stable")[:k]]
    weights = 1.0 / (distances[order].astype(np.float64) + EPS)
    votes: dict[int, float] = {}
    for label, w in zip(labels[order].tolist(), weights.tolist(), strict=True):
        votes[label] = votes.get(label, 0.0) + w
    best = max(votes, key=lambda lab: votes[lab])  # first-inserted (nearest) wins a tie
    return Vote(int(best), votes[best] / float(weights.sum()), len(order))


def nearest_neighbour_pairs(keys: np.ndarray, labels: np.ndarray, limit: int = 600,
                            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """For up to ``limit`` sampled keys, the distance to their nearest other key and whether
    its label agrees (leave-one-out), exact."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(keys), min(limit, len(keys)), replace=False)
    sq = (keys.astype(np.float64) ** 2).sum(axis=1)
    d2 = sq[pick][:, None] + sq[None, :] - 2.0 * (keys[pick].astype(np.float64) @ keys.T)
    d = np.sqrt(np.maximum(d2, 0.0))
    d[np.arange(len(pick)), pick] = np.inf
    nearest = d.argmin(axis=1)
    return d[np.arange(len(pick)), nearest], labels[nearest] == labels[pick]


def calibrate_radius(keys: np.ndarray, labels: np.ndarray, agreement: float,
                     min_pairs: int = 20, seed: int = 0) -> float:
    """The largest radius at which reusing the nearest neighbour's label would have agreed
    with the true label at least ``agreement`` of the time, over the keys' own leave-one-out
    neighbours. 0.0 (reuse nothing) with too few keys or when even the nearest pairs
    disagree too often."""
    if len(keys) < max(2, min_pairs):
        return 0.0
    dist, agree = nearest_neighbour_pairs(keys, labels, seed=seed)
    order = np.argsort(dist, kind="stable")
    dist, agree = dist[order], agree[order]
    running = np.cumsum(agree) / np.arange(1, len(agree) + 1)
    ok = np.flatnonzero((running >= agreement) & (np.arange(1, len(agree) + 1) >= min_pairs))
    return float(dist[ok[-1]]) if len(ok) else 0.0
