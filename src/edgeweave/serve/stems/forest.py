"""The shared-stem executor: the backbone's blocks run once per frame for every tenant sharing
them, and each tenant's own blocks and head branch off at its depth (a forest of stages: one
trunk, a tail per tenant).

:class:`StemForest` is an ``nn.Module`` whose ``forward`` maps a batch of frames ``(N, 1, s, s)``
to one tensor ``(N, sum of the tenants' classes)``: every tenant's logits side by side, in
tenant order. Rows are independent, so the serving engine batches it like any served model
(stack requests, run, split the rows back), and it captures with torch.fx like any model;
:meth:`StemForest.split` cuts a row block back into the tenants' answers. Tenant ``i``'s answer
equals its own whole model, ``trunk[:depth_i]`` followed by its tail (:meth:`tenant_model`).

For tenants sampling different frame rates, :meth:`forward_active` runs only the tenants a
frame is for (and the trunk only as deep as they need); :func:`run_stream` drives a stream that
way and counts what ran, which is what the scheduler's cost model predicts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from edgeweave.serve.stems.backbone import STEM_BLOCKS, check_depth
from edgeweave.serve.stems.errors import TenancyError


class StemForest(nn.Module):
    """See module doc. ``blocks`` are the shared backbone's; ``tails[i]`` is tenant ``i``'s own
    blocks after ``depths[i]`` and its head; ``classes[i]`` its head's outputs."""

    def __init__(self, blocks: Sequence[nn.Module], tails: Sequence[nn.Module],
                 depths: Sequence[int], classes: Sequence[int],
                 names: Sequence[str] | None = None) -> None:
        super().__init__()
        if not tails or not len(tails) == len(depths) == len(classes):
            raise TenancyError(f"stem forest: expected one depth and class count per tenant "
                               f"and at least one tenant, got {len(tails)} tails, "
                               f"{len(depths)} depths, {len(classes)} class counts")
        for d in depths:
            check_depth(d, "stem forest depth")
        names = list(names) if names is not None else [f"tenant{i}" for i in range(len(tails))]
        if len(names) != len(tails) or len(set(names)) != len(names):
            raise TenancyError(f"stem forest: expected {len(tails)} distinct tenant names, "
                               f"got {names}")
        self.shared_depth = max(depths)
        if len(blocks) < self.shared_depth:
            raise TenancyError(f"stem forest: a tenant shares {self.shared_depth} blocks but "
                               f"only {len(blocks)} were given")
        self.trunk = nn.ModuleList(blocks[: self.shared_depth])
        self.tails = nn.ModuleList(tails)
        self.depths = tuple(int(d) for d in depths)
        self.classes = tuple(int(c) for c in classes)
        self.names = tuple(names)
        # tenants branching off after each number of trunk blocks (plain tuples: fx unrolls)
        self._branch = tuple(tuple(i for i, d in enumerate(self.depths) if d == level)
                             for level in range(self.shared_depth + 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs: list[torch.Tensor] = [x] * len(self.tails)
        h = x
        for level in range(self.shared_depth + 1):
            for i in self._branch[level]:
                outs[i] = self.tails[i](h)
            if level < self.shared_depth:
                h = self.trunk[level](h)
        return torch.cat(outs, dim=1)

    def split(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        """The tenants' logits, by name, from :meth:`forward`'s output."""
        if out.dim() != 2 or out.shape[1] != sum(self.classes):
            raise TenancyError(f"stem forest output: expected (N, {sum(self.classes)}), got "
                               f"{tuple(out.shape)}")
        return dict(zip(self.names, torch.split(out, list(self.classes), dim=1), strict=True))

    def index(self, tenant: str) -> int:
        if tenant not in self.names:
            raise TenancyError(f"unknown tenant {tenant!r}; this stem serves "
                               f"{', '.join(self.names)}")
        return self.names.index(tenant)

    def forward_active(self, x: torch.Tensor, tenants: Iterable[str]) -> dict[str, torch.Tensor]:
        """Only the named tenants' logits, running the trunk no deeper than they share."""
        wanted = sorted({self.index(t) for t in tenants})
        out: dict[str, torch.Tensor] = {}
        if not wanted:
            return out
        h = x
        deepest = max(self.depths[i] for i in wanted)
        for level in range(deepest + 1):
            for i in self._branch[level]:
                if i in wanted:
                    out[self.names[i]] = self.tails[i](h)
            if level < deepest:
                h = self.trunk[level](h)
        return out

    def tenant_model(self, tenant: str) -> nn.Sequential:
        """Tenant's whole model on its own: the shared blocks it uses, then its tail (the same
        modules, not copies)."""
        i = self.index(tenant)
        return nn.Sequential(*self.trunk[: self.depths[i]], self.tails[i])


def tail_of(blocks: Sequence[nn.Module], depth: int, head: nn.Module) -> nn.Sequential:
    """A tenant's own part at ``depth``: the blocks after it and its head."""
    check_depth(depth, "depth")
    if len(blocks) != STEM_BLOCKS:
        raise TenancyError(f"expected the backbone's {STEM_BLOCKS} blocks, got {len(blocks)}")
    return nn.Sequential(*blocks[depth:], head)


@dataclass(frozen=True)
class StreamRun:
    """What :func:`run_stream` computed: each tenant's predicted class per frame it sampled,
    how many frames each trunk block ran on, and how many each tenant's tail ran on."""

    predictions: dict[str, dict[int, int]]
    block_frames: tuple[int, ...]
    tail_frames: dict[str, int]


@torch.no_grad()
def run_stream(forest: StemForest, frames: torch.Tensor, strides: dict[str, int]) -> StreamRun:
    """Run ``frames`` (a stream, in order) with tenant ``t`` sampling every ``strides[t]``-th
    frame; frames wanted by the same tenants are batched together."""
    unknown = sorted(set(forest.names) ^ set(strides))
    if unknown:
        raise TenancyError(f"strides: expected exactly the tenants {', '.join(forest.names)}; "
                           f"mismatched: {', '.join(unknown)}")
    for name, s in strides.items():
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise TenancyError(f"stride of tenant {name!r}: expected an integer >= 1, got {s!r}")
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for t in range(len(frames)):
        active = tuple(n for n in forest.names if t % strides[n] == 0)
        if active:
            groups[active].append(t)
    predictions: dict[str, dict[int, int]] = {n: {} for n in forest.names}
    blocks = [0] * forest.shared_depth
    forest.eval()
    for active, idx in groups.items():
        out = forest.forward_active(frames[idx], active)
        for name, logits in out.items():
            predictions[name].update(zip(idx, logits.argmax(1).tolist(), strict=True))
        deepest = max(forest.depths[forest.index(n)] for n in active)
        for level in range(deepest):
            blocks[level] += len(idx)
    return StreamRun(predictions, tuple(blocks),
                     {n: len(p) for n, p in predictions.items()})
