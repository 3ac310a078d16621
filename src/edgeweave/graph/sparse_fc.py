"""Splitting a pruned (sparse) fully connected layer across K devices (MoDNN, Mao et al. 2017).

Split by output neurons, a device computing neuron ``i`` needs every input ``j`` with
``W[i, j] != 0``; inputs live on the device that produced them (the previous layer's split),
so each such input on another device must cross the network. MoDNN reorders the layer with
spectral co-clustering of its sparsity pattern (Dhillon 2001; scikit-learn's
``SpectralCoclustering``) into K row/column blocks, one per device, so most non-zeros fall
inside a device's own block. Compared here with a plain split (contiguous row and column
blocks) and a 2-D grid split (each device one block of the matrix, partial sums sent to the
owner of each output row). Counts are exact for the given pattern; the co-clustering is seeded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from edgeweave.errors import GraphError
from edgeweave.graph.layerwise import grid_shape
from edgeweave.graph.regions import even_bounds

METHODS = ("cocluster", "plain", "grid")


@dataclass(frozen=True)
class SparseSplit:
    """Who owns what: ``row_owner[i]`` gathers output ``i``, ``col_owner[j]`` holds input ``j``;
    for ``grid`` each non-zero is computed by ``block_owner[row block, column block]``.

    ``off_block_nnz`` counts non-zeros whose input lives on another device than the one that
    multiplies it; ``crossing_values`` counts the values that must cross devices per inference
    (distinct remote inputs per device, plus partial sums for the grid split)."""

    method: str
    devices: int
    row_owner: np.ndarray
    col_owner: np.ndarray
    row_bounds: tuple[int, ...] = ()
    col_bounds: tuple[int, ...] = ()
    nnz: int = 0
    off_block_nnz: int = 0
    crossing_values: int = 0

    def rows_per_device(self) -> list[int]:
        return np.bincount(self.row_owner, minlength=self.devices).tolist()

    def to_dict(self) -> dict[str, object]:
        return {"method": self.method, "devices": self.devices, "nnz": self.nnz,
                "off_block_nnz": self.off_block_nnz, "crossing_values": self.crossing_values,
                "rows_per_device": self.rows_per_device()}


def magnitude_mask(weight: torch.Tensor, keep: float) -> np.ndarray:
    """The ``keep`` fraction of largest-magnitude weights (magnitude pruning)."""
    if not 0 < keep <= 1:
        raise GraphError(f"keep fraction {keep}: expected a number in (0, 1]")
    flat = weight.detach().abs().flatten()
    k = max(1, round(keep * flat.numel()))
    threshold = torch.topk(flat, k).values.min()
    return (weight.detach().abs() >= threshold).cpu().numpy()


def split_sparse(mask: np.ndarray, devices: int, method: str = "cocluster",
                 seed: int = 0) -> SparseSplit:
    """Assign a sparsity pattern (``out x in`` booleans) to ``devices`` devices."""
    if method not in METHODS:
        raise GraphError(f"sparse split method {method!r}: expected one of {', '.join(METHODS)}")
    mask = np.asarray(mask, dtype=bool)
    n_out, n_in = mask.shape
    if devices < 1 or devices > min(n_out, n_in):
        raise GraphError(f"{devices} devices for a {n_out}x{n_in} layer: expected 1 to "
                         f"{min(n_out, n_in)}")
    plain_rows = _blocks(n_out, devices)
    plain_cols = _blocks(n_in, devices)
    if method == "plain":
        return _one_dimensional("plain", mask, devices, plain_rows, plain_cols)
    if method == "cocluster":
        rows, cols = _cocluster(mask, devices, seed)
        return _one_dimensional("cocluster", mask, devices, rows, cols)
    return _grid(mask, devices, plain_rows, plain_cols)


def _blocks(n: int, parts: int) -> np.ndarray:
    bounds = even_bounds(n, parts)
    return np.repeat(np.arange(parts), np.diff(bounds))


def _cocluster(mask: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column labels from spectral co-clustering of the non-empty rows and columns;
    empty rows (no input needed) go to the device with fewest rows, empty columns (read by no
    one) anywhere."""
    from sklearn.cluster import SpectralCoclustering  # deferred: sklearn is slow to import

    live_r = mask.any(axis=1)
    live_c = mask.any(axis=0)
    rows = np.zeros(mask.shape[0], dtype=int)
    cols = _blocks(mask.shape[1], k)
    if k > 1 and live_r.sum() >= k and live_c.sum() >= k:
        model = SpectralCoclustering(n_clusters=k, random_state=seed)
        model.fit(mask[np.ix_(live_r, live_c)].astype(float))
        rows[live_r] = model.row_labels_
        cols[live_c] = model.column_labels_
    counts = np.bincount(rows[live_r], minlength=k)
    for i in np.flatnonzero(~live_r):
        d = int(counts.argmin())
        rows[i] = d
        counts[d] += 1
    return rows, cols


def _one_dimensional(method: str, mask: np.ndarray, k: int, rows: np.ndarray,
                     cols: np.ndarray) -> SparseSplit:
    ii, jj = np.nonzero(mask)
    split = SparseSplit(method, k, rows, cols, nnz=len(ii),
                        off_block_nnz=int((rows[ii] != cols[jj]).sum()))
    crossing = sum(int((uses_inputs(split, mask, d) & (cols != d)).sum()) for d in range(k))
    return _with(split, crossing)


def _grid(mask: np.ndarray, k: int, rows: np.ndarray, cols: np.ndarray) -> SparseSplit:
    n_out, n_in = mask.shape
    r, c = grid_shape(k)
    split = SparseSplit("grid", k, rows, cols, tuple(even_bounds(n_out, r)),
                        tuple(even_bounds(n_in, c)))
    ii, jj = np.nonzero(mask)
    row_block = np.repeat(np.arange(r), np.diff(split.row_bounds))
    col_block = np.repeat(np.arange(c), np.diff(split.col_bounds))
    worker = row_block[ii] * c + col_block[jj]
    crossing = 0
    for d in range(k):
        crossing += int((uses_inputs(split, mask, d) & (cols != d)).sum())
        # partial sums of rows this block touches, owned by another device
        touched = np.zeros(n_out, dtype=bool)
        touched[ii[worker == d]] = True
        crossing += int((touched & (rows != d)).sum())
    return _with(SparseSplit("grid", k, rows, cols, split.row_bounds, split.col_bounds,
                             nnz=len(ii), off_block_nnz=int((cols[jj] != worker).sum())),
                 crossing)


def _with(split: SparseSplit, crossing: int) -> SparseSplit:
    return SparseSplit(split.method, split.devices, split.row_owner, split.col_owner,
                       split.row_bounds, split.col_bounds, split.nnz, split.off_block_nnz,
                       crossing)


def _grid_block(split: SparseSplit, d: int) -> tuple[slice, slice]:
    c = len(split.col_bounds) - 1
    a, b = divmod(d, c)
    return (slice(split.row_bounds[a], split.row_bounds[a + 1]),
            slice(split.col_bounds[b], split.col_bounds[b + 1]))


def uses_inputs(split: SparseSplit, mask: np.ndarray, d: int) -> np.ndarray:
    """The inputs device ``d`` multiplies (its own plus those it receives): every input a
    non-zero of its rows (1-D) or of its block (grid) reads."""
    used = np.zeros(mask.shape[1], dtype=bool)
    if split.method == "grid":
        if d < (len(split.row_bounds) - 1) * (len(split.col_bounds) - 1):
            rows, cols = _grid_block(split, d)
            used[cols] = mask[rows, cols].any(axis=0)
        return used
    return mask[split.row_owner == d].any(axis=0)


def run_sparse(weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor,
               split: SparseSplit) -> torch.Tensor:
    """``x @ weight.T + bias`` computed device by device, each device reading only the inputs
    :func:`uses_inputs` counts for it (partial sums added at each row's owner for ``grid``):
    equal to the unsplit layer exactly when the counted traffic is all a device needs."""
    mask = (weight != 0).cpu().numpy()
    out = torch.zeros(x.shape[0], weight.shape[0], dtype=x.dtype)
    for d in range(split.devices):
        visible = x * torch.as_tensor(uses_inputs(split, mask, d), dtype=x.dtype)
        if split.method == "grid":
            if d >= (len(split.row_bounds) - 1) * (len(split.col_bounds) - 1):
                continue
            rows, cols = _grid_block(split, d)
            out[:, rows] += visible[:, cols] @ weight[rows, cols].T
        else:
            rows_d = torch.as_tensor(split.row_owner == d)
            out[:, rows_d] = visible @ weight[rows_d].T
    return out if bias is None else out + bias
