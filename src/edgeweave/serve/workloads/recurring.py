"""Streams of real images in which the same objects recur across time and across devices: the
workload a semantic cache exists for (FoggyCache: devices near each other see the same things;
Precog: a user's next objects follow from the last ones).

Objects are real handwritten digits (a pool of distinct images per class). Each device walks
through the classes as a Markov chain (the next class is a fixed successor of the current one
with probability ``successor_prob``, else uniform), shows one object of the class for a burst of
consecutive requests, and picks the object by a Zipf popularity shared by all devices, so
popular objects recur on every device. Every request is a fresh view of its object
(:mod:`edgeweave.serve.workloads.variation`). Devices take turns, one request each per tick.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from edgeweave.errors import ServeError
from edgeweave.serve.stage import check_fraction, check_positive_int
from edgeweave.serve.workloads.variation import Variation, view


@dataclass(frozen=True)
class RecurringWorkload:
    """Requests in arrival order; per request its device, object and the object's true class."""

    inputs: torch.Tensor   #: (N, 1, H, W) float32 in [0, 1]
    devices: list[str]
    objects: np.ndarray    #: object id per request (index into the pool)
    classes: np.ndarray    #: the object's true class per request
    successor: np.ndarray  #: the class chain's fixed successor of each class
    description: str

    def __len__(self) -> int:
        return len(self.devices)


def recurring_images(images: torch.Tensor, labels: torch.Tensor, *, devices: int = 4,
                     requests_per_device: int = 500, objects_per_class: int = 4,
                     burst: tuple[int, int] = (3, 8), successor_prob: float = 0.8,
                     zipf: float = 1.0, variation: Variation | None = None, seed: int = 0,
                     source: str = "images") -> RecurringWorkload:
    """Build the workload from real ``images`` ``(M, 1, H, W)`` in [0, 1] with class ``labels``;
    ``source`` names where they came from in the description."""
    check_positive_int(devices, "devices")
    check_positive_int(requests_per_device, "requests per device")
    check_positive_int(objects_per_class, "objects per class")
    check_fraction(successor_prob, "successor probability")
    if len(images) == 0 or images.dim() != 4 or len(images) != len(labels):
        raise ServeError(f"the image pool must be a non-empty (M, 1, H, W) tensor with one label "
                         f"per image, got {tuple(images.shape)} and {len(labels)} labels")
    if not 1 <= burst[0] <= burst[1]:
        raise ServeError(f"burst must be (min, max) with 1 <= min <= max, got {burst}")
    variation = variation or Variation()
    rng = np.random.default_rng(seed)
    pool, pool_class = _pick_objects(labels.numpy(), objects_per_class, rng)
    n_classes = int(pool_class.max()) + 1
    successor = rng.permutation(n_classes)
    popularity = 1.0 / np.arange(1, objects_per_class + 1) ** zipf
    popularity /= popularity.sum()
    walks = [_walk(requests_per_device, n_classes, successor, successor_prob, burst,
                   objects_per_class, popularity, rng) for _ in range(devices)]
    order = [(d, j) for j in range(requests_per_device) for d in range(devices)]
    objects = np.array([walks[d][j] for d, j in order])
    obj_ids = np.array([int(pool[c * objects_per_class + k]) for c, k in objects])
    base = images[:, 0].numpy()
    views = np.stack([view(base[i], variation, rng) for i in obj_ids])
    return RecurringWorkload(
        inputs=torch.from_numpy(views).unsqueeze(1),
        devices=[f"device-{d}" for d, _ in order],
        objects=obj_ids,
        classes=labels.numpy()[obj_ids],
        successor=successor,
        description=(
            f"{devices} devices x {requests_per_device} requests of real {source}: "
            f"{objects_per_class} objects per class drawn from the pool (seed {seed}); each "
            f"device walks the classes as a Markov chain (fixed successor with probability "
            f"{successor_prob:g}, else uniform), shows one object per visit for a burst of "
            f"U{{{burst[0]}..{burst[1]}}} requests, the object chosen by Zipf({zipf:g}) "
            f"popularity shared by all devices; every request is a fresh view: "
            f"{variation.describe()}; devices take turns one request per tick"),
    )


def _pick_objects(labels: np.ndarray, per_class: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` distinct images of every class, class-major, and their classes."""
    classes = np.unique(labels)
    if not np.array_equal(classes, np.arange(len(classes))):
        raise ServeError(f"image labels must be 0..C-1, got classes {classes.tolist()}")
    pool: list[int] = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        if len(idx) < per_class:
            raise ServeError(f"class {c} has {len(idx)} images; {per_class} objects per class "
                             "were asked for")
        pool.extend(int(i) for i in rng.choice(idx, per_class, replace=False))
    return np.array(pool), np.repeat(classes, per_class)


def _walk(n: int, n_classes: int, successor: np.ndarray, successor_prob: float,
          burst: tuple[int, int], per_class: int, popularity: np.ndarray,
          rng: np.random.Generator) -> list[tuple[int, int]]:
    """One device's ``n`` requests as (class, object rank within the class)."""
    out: list[tuple[int, int]] = []
    cls = int(rng.integers(n_classes))
    while len(out) < n:
        rank = int(rng.choice(per_class, p=popularity))
        out.extend([(cls, rank)] * int(rng.integers(burst[0], burst[1] + 1)))
        cls = (int(successor[cls]) if rng.random() < successor_prob
               else int(rng.integers(n_classes)))
    return out[:n]
