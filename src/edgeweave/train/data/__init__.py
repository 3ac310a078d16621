"""Federated datasets and partitioners, and :func:`make_task`, which turns names into a Task.

Datasets and partitions are named by short strings (``"synthetic:1,1"``, ``"dirichlet:0.1"``),
like model specs, so a YAML config or a CLI flag can say which without code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from edgeweave.train.data.datasets import digits
from edgeweave.train.data.files import (
    FolderData,
    cifar10,
    load_folder,
    load_image_folder,
    load_npz,
    mnist,
)
from edgeweave.train.data.partition import PARTITIONERS, dirichlet, iid, shards, unbalanced
from edgeweave.train.data.synthetic import synthetic
from edgeweave.train.models import build_model
from edgeweave.train.task import FederatedData, Task
from edgeweave.train.types import TrainError

__all__ = [
    "PARTITIONERS", "FolderData", "cifar10", "digits", "dirichlet", "iid", "load_folder",
    "load_image_folder", "load_npz", "make_task", "mnist", "partition_indices", "shards",
    "synthetic", "unbalanced",
]


def partition_indices(spec: str, labels: np.ndarray, n_clients: int,
                      seed: int) -> list[np.ndarray]:
    """Split by a partition spec: ``iid``, ``dirichlet:ALPHA``, ``shards[:PER_CLIENT]``,
    ``unbalanced:SIGMA``."""
    kind, _, arg = spec.partition(":")
    rng = np.random.default_rng(seed)
    try:
        if kind == "iid":
            return iid(len(labels), n_clients, rng)
        if kind == "dirichlet":
            return dirichlet(labels, n_clients, float(arg or 0.5), rng)
        if kind == "shards":
            return shards(labels, n_clients, rng, int(arg or 2))
        if kind == "unbalanced":
            return unbalanced(len(labels), n_clients, float(arg or 1.0), rng)
    except ValueError:
        raise TrainError(f"partition {spec!r}: argument {arg!r} is not a number") from None
    raise TrainError(
        f"partition {spec!r}: unknown kind {kind!r}; expected iid, dirichlet:ALPHA, "
        "shards[:K], unbalanced:SIGMA or natural"
    )


def _holdout(x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int):
    perm = torch.as_tensor(np.random.default_rng(seed).permutation(len(y)))
    k = max(1, round(fraction * len(y)))
    return x[perm[k:]], y[perm[k:]], x[perm[:k]], y[perm[:k]]


def _load(dataset: str, seed: int, kw: dict[str, Any]):
    """(x, y, test_x, test_y) to partition, or (FederatedData, None, test_x, test_y)."""
    kind, _, arg = dataset.partition(":")
    if kind == "digits":
        return digits(kw.pop("test_size", 360), seed)
    if kind in ("synthetic", "synthetic-iid"):
        a, _, b = (arg or "1,1").partition(",")
        data, tx, ty = synthetic(float(a), float(b or a), kw.pop("n_clients"), seed,
                                 iid=kind == "synthetic-iid", **kw)
        kw.clear()
        return data, None, tx, ty
    if kind == "mnist":
        return mnist(arg or kw.pop("dir"))
    if kind == "cifar10":
        return cifar10(arg or kw.pop("dir"))
    if kind == "npz":
        x, y = load_npz(arg or kw.pop("path"))
        return _holdout(x, y, kw.pop("test_fraction", 0.2), seed)
    if kind == "folder":
        f = load_folder(arg or kw.pop("path"))
        if f.data is not None:
            if f.test is None:
                raise TrainError(f"folder {arg}: per-client .npz files need a test.npz beside them")
            return f.data, None, f.test[0], f.test[1]
        assert f.x is not None and f.y is not None
        if f.test is not None:
            return f.x, f.y, f.test[0], f.test[1]
        return _holdout(f.x, f.y, kw.pop("test_fraction", 0.2), seed)
    raise TrainError(
        f"dataset {dataset!r}: unknown; expected digits, synthetic:ALPHA,BETA, synthetic-iid, "
        "mnist:DIR, cifar10:DIR, npz:PATH or folder:DIR"
    )


def _shape_for(spec: str, x: torch.Tensor) -> torch.Tensor:
    """MLPs and logistic regression take flat rows; the digits CNNs take (N, 1, 8, 8)."""
    if spec.startswith(("mlp", "logreg")):
        return x.reshape(len(x), -1)
    if (spec == "digits-cnn" or spec.startswith("cnn:")) and x.dim() == 2:
        return x.reshape(len(x), 1, 8, 8)
    return x


def make_task(dataset: str, partition: str, n_clients: int, model_spec: str,
              seed: int = 0, **kw: Any) -> Task:
    """A Task from names, e.g. ``make_task("digits", "shards:2", 100, "mlp:64,64,10")``.

    Datasets that come already split by client (``synthetic``, ``folder:`` of per-client files)
    need ``partition="natural"``; the others are partitioned with ``seed``.
    Extra keywords go to the loader (``test_size``, ``test_fraction``, synthetic's options).
    """
    if n_clients < 1:
        raise TrainError(f"data.clients (--clients): expected >= 1, got {n_clients}")
    kw = dict(kw, n_clients=n_clients) if dataset.startswith("synthetic") else dict(kw)
    a, b, test_x, test_y = _load(dataset, seed, kw)
    if kw:
        raise TrainError(f"data: dataset {dataset!r} takes no options {sorted(kw)}")
    if isinstance(a, FederatedData):
        if partition != "natural":
            raise TrainError(
                f"data.partition (--partition): dataset {dataset!r} is already split by "
                f"client; use 'natural', not {partition!r}"
            )
        if a.num_clients != n_clients:
            raise TrainError(f"data.clients (--clients): dataset {dataset!r} holds "
                             f"{a.num_clients} clients, asked for {n_clients}")
        data = a
    else:
        if partition == "natural":
            raise TrainError(f"data.partition (--partition): dataset {dataset!r} has no natural "
                             "client split; use iid, dirichlet:ALPHA, shards or unbalanced:SIGMA")
        parts = partition_indices(partition, b.numpy(), n_clients, seed)
        data = FederatedData.from_parts(a, b, parts)
    data = FederatedData(_shape_for(model_spec, data.x), data.y, data.offsets)
    build_model(model_spec)  # fail here, naming the spec, not inside a backend
    return Task(model_fn=lambda: build_model(model_spec), data=data,
                test_x=_shape_for(model_spec, test_x), test_y=test_y,
                name=f"{dataset}/{partition}/{n_clients}", init_seed=seed)
