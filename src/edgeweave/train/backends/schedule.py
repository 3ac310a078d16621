"""Every selected client's local batches for one round, laid out so all clients step in lock-step.

The vectorized backend must reproduce :func:`~edgeweave.train.local.batch_indices` exactly (same
``torch.randperm`` per (seed, round, client), partial last batch of every epoch, ``local_steps``
wrapping into new epochs). Only the permutations themselves need a per-client call; everything
else (padding, offsets, the step-major layout) is done with a handful of array ops over all
clients at once.

Layout: clients are sorted by their step count, most steps first, so the clients that take step
``t`` are always a PREFIX of that order. Step ``t``'s batches are then rows
``row_start[t]:row_start[t + 1]`` of one ``(total_steps, batch_size)`` index tensor, one row per
active client in sorted order, and a client that has run out of steps is simply not in the prefix
(its parameters are not touched: no step masks, no wasted compute on finished clients).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from edgeweave.train.task import client_seed
from edgeweave.train.types import FitConfig

# numpy's SeedSequence constants (O'Neill's seed_seq hash, numpy/random/bit_generator.pyx)
_INIT_A, _MULT_A = 0x43B0D7E5, 0x931E8875
_INIT_B, _MULT_B = 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R = 0xCA01F9DD, 0x4973F715
_M32 = 0xFFFFFFFF
_POOL = 4


def _hash_consts(init: int, mult: int, n: int) -> list[int]:
    out, h = [], init
    for _ in range(n):
        out.append(h)
        h = (h * mult) & _M32
    return out


_HA = _hash_consts(_INIT_A, _MULT_A, 16)
_HB = _hash_consts(_INIT_B, _MULT_B, 1)


def client_seeds(seed: int, round_num: int, client_ids: Sequence[int]) -> list[int]:
    """``[client_seed(seed, round_num, c) for c in client_ids]``, hashed for all clients at once.

    ``np.random.SeedSequence`` costs ~12 us a call; at 10,000 clients a round that alone is a
    tenth of a second, as much as the training step. Its hash is a few 32-bit multiplies and
    xors, done here over the client axis (checked equal to ``client_seed`` in the tests). Entropy
    words that do not fit 32 bits take numpy's own path.
    """
    ids = np.asarray(client_ids, dtype=np.int64)
    if (ids.size == 0 or not 0 <= seed <= _M32 or not 0 <= round_num <= _M32
            or ids.min() < 0 or ids.max() > _M32):
        return [client_seed(seed, round_num, int(c)) for c in ids]
    u32 = np.uint32
    with np.errstate(over="ignore"):
        entropy = [np.full(ids.shape, seed, u32), np.full(ids.shape, round_num, u32),
                   ids.astype(u32), np.zeros(ids.shape, u32)]
        k = 0

        def hashmix(v: np.ndarray) -> np.ndarray:
            nonlocal k
            v = (v ^ u32(_HA[k])) * u32((_HA[k] * _MULT_A) & _M32)
            k += 1
            return v ^ (v >> u32(16))

        def mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            r: np.ndarray = u32(_MIX_L) * x - u32(_MIX_R) * y
            return r ^ (r >> u32(16))

        pool = [hashmix(e) for e in entropy]
        for src in range(_POOL):
            for dst in range(_POOL):
                if src != dst:
                    pool[dst] = mix(pool[dst], hashmix(pool[src]))
        v = (pool[0] ^ u32(_HB[0])) * u32((_HB[0] * _MULT_B) & _M32)
        v = v ^ (v >> u32(16))
    return v.astype(np.int64).tolist()


def step_counts(sizes: torch.Tensor, config: FitConfig) -> torch.Tensor:
    """:func:`~edgeweave.train.local.num_steps` of every client size at once."""
    b = config.batch_size
    steps = (torch.full_like(sizes, config.local_steps) if config.local_steps is not None
             else config.epochs * ((sizes + b - 1) // b))
    return torch.where(sizes > 0, steps, 0)


@dataclass
class BatchSchedule:
    """One round's batches for a group of clients (see the module doc for the layout)."""

    #: positions (into the client list given to :meth:`build`) in training order
    order: torch.Tensor
    #: local steps of each client, in training order (nonincreasing)
    steps: torch.Tensor
    #: rows of step t are ``index[row_start[t]:row_start[t + 1]]``; their count is the prefix size
    row_start: list[int]
    #: (total_steps, width <= batch_size) rows into the packed data; padding points at a real row
    index: torch.Tensor
    #: (total_steps,) real samples in each batch
    count: torch.Tensor
    #: (total_steps, width) 1.0 for real samples, 0.0 for padding; None when no batch is partial
    mask: torch.Tensor | None

    @property
    def max_steps(self) -> int:
        return len(self.row_start) - 1

    def step(self, t: int) -> tuple[slice, int]:
        """The rows of step ``t`` and how many clients (a prefix of ``order``) take it."""
        lo, hi = self.row_start[t], self.row_start[t + 1]
        return slice(lo, hi), hi - lo

    @staticmethod
    def build(offsets: torch.Tensor, client_ids: Sequence[int], config: FitConfig,
              round_num: int) -> BatchSchedule:
        """The schedule of ``client_ids`` (rows ``offsets[c]:offsets[c + 1]`` of packed data)."""
        ids = torch.as_tensor(list(client_ids), dtype=torch.long)
        starts = offsets[ids]
        sizes = offsets[ids + 1] - starts
        steps = step_counts(sizes, config)
        order = torch.sort(steps, descending=True, stable=True).indices
        steps_o, sizes_o, starts_o = steps[order], sizes[order], starts[order]
        b = config.batch_size
        per_epoch = (sizes_o + b - 1) // b
        epochs = torch.where(steps_o > 0, (steps_o + per_epoch.clamp(min=1) - 1)
                             // per_epoch.clamp(min=1), torch.zeros_like(steps_o))
        blocks = _padded_permutations(ids[order].tolist(), sizes_o.tolist(), epochs.tolist(),
                                      config, round_num)
        max_steps = int(steps_o[0]) if len(steps_o) else 0
        active = torch.bincount(steps_o, minlength=max_steps + 1).flip(0).cumsum(0).flip(0)[1:]
        row_start = torch.cat([torch.zeros(1, dtype=torch.long), active.cumsum(0)])
        # the blocks are client-major (rank, epoch, batch); move each kept row to step-major
        rows = epochs * per_epoch
        rank = torch.repeat_interleave(torch.arange(len(ids)), rows)
        step = torch.arange(len(rank)) - torch.repeat_interleave(rows.cumsum(0) - rows, rows)
        if not torch.equal(rows, steps_o):  # local_steps ends some clients mid-epoch
            keep = step < steps_o[rank]
            rank, step, blocks = rank[keep], step[keep], blocks[keep]
        dest = row_start[step] + rank
        real = blocks >= 0
        full = bool(real.all())
        src = (blocks if full else blocks.clamp(min=0)) + starts_o[rank].unsqueeze(1)
        index = torch.empty_like(blocks).index_copy_(0, dest, src)
        mask = None
        if not full:
            mask = torch.empty(blocks.shape).index_copy_(0, dest, real.float())
        count = torch.full((len(dest),), float(b)) if mask is None else mask.sum(1)
        if mask is not None and len(count):
            # padding sits at the end of a row: clients smaller than a batch (a 1,000-client
            # split of 1,437 digits has 1 or 2 samples each) need only the widest real row
            width = max(int(count.max()), 1)
            index, mask = index[:, :width].contiguous(), mask[:, :width].contiguous()
            if bool((count == width).all()):
                mask = None
        return BatchSchedule(order, steps_o, row_start.tolist(), index, count, mask)


def _padded_permutations(ids: list[int], sizes: list[int], epochs: list[int],
                         config: FitConfig, round_num: int) -> torch.Tensor:
    """(rows, batch_size): every client's per-epoch ``randperm``, each epoch padded with -1 to
    whole batches, client by client, epoch by epoch.

    A client with at most ``batch_size`` samples trains on ALL of them in every step, whatever
    the permutation: the order inside a batch changes only the summation order of its mean
    (allclose, not bitwise). Its rows are ``0..n-1`` and it needs no generator, which is most
    clients of a large simulated federation (1,000 digit clients hold 1 or 2 samples each).
    Every other permutation is drawn as the reference draws it and written straight into its
    place (``out=``): concatenating 10,000 small tensors costs more than drawing them.
    """
    b = config.batch_size
    n_t, e_t = torch.tensor(sizes, dtype=torch.long), torch.tensor(epochs, dtype=torch.long)
    rows = e_t * ((n_t + b - 1) // b)
    first = rows.cumsum(0) - rows
    blocks = torch.full((int(rows.sum()), b), -1, dtype=torch.long)
    small = (n_t <= b) & (e_t > 0)
    if bool(small.any()):
        reps = e_t[small]
        row = torch.repeat_interleave(first[small], reps)
        row += torch.arange(len(row)) - torch.repeat_interleave(reps.cumsum(0) - reps, reps)
        n_rep = torch.repeat_interleave(n_t[small], reps).unsqueeze(1)
        col = torch.arange(b).unsqueeze(0)
        blocks[row] = torch.where(col < n_rep, col, -1)
    large = (~small & (e_t > 0)).nonzero().squeeze(1).tolist()
    seeds = client_seeds(config.seed, round_num, [ids[i] for i in large])
    flat = blocks.view(-1)
    g = torch.Generator()  # re-seeding one generator gives the same stream as a fresh one
    for i, s in zip(large, seeds, strict=True):
        n, lo, step = sizes[i], int(first[i]) * b, -(-sizes[i] // b) * b
        g.manual_seed(s)
        for _ in range(epochs[i]):
            torch.randperm(n, generator=g, out=flat[lo:lo + n])
            lo += step
    return blocks
