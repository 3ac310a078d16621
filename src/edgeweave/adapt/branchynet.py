"""The BranchyNet network: a backbone with exit heads, and how heads are sized and attached.

See :mod:`edgeweave.adapt.exit_rules` for when a sample leaves at an exit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from edgeweave.adapt.exit_rules import ExitError, check_mode, exit_mask

_FOLLOW_ONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Sigmoid,
                nn.Tanh, nn.ELU, nn.PReLU, nn.BatchNorm1d, nn.BatchNorm2d, nn.MaxPool2d,
                nn.AvgPool2d, nn.Dropout)


def example_tensor(example_input) -> torch.Tensor:
    """``example_input`` itself if it is a tensor, else zeros of that shape."""
    if isinstance(example_input, torch.Tensor):
        return example_input
    try:
        return torch.zeros(tuple(int(d) for d in example_input))
    except (TypeError, ValueError) as exc:
        raise ExitError(f"example_input must be a tensor or a shape, got {example_input!r}"
                        ) from exc


class BranchyNet(nn.Module):
    """A backbone (``blocks``, run in order) with exit heads after some block indices.

    ``exits`` maps block index -> head; head *k* sees the output of block ``exits``' k-th
    smallest index. The backbone's output (after the last block) is the final exit, so the
    network has ``len(exits) + 1`` exits. The blocks are shared, not copied.
    """

    def __init__(self, blocks: Sequence[nn.Module], exits: dict[int, nn.Module]):
        super().__init__()
        blocks = list(blocks)
        if not blocks:
            raise ExitError("blocks: the backbone needs at least one block")
        for idx in exits:
            if not isinstance(idx, int) or not 0 <= idx < len(blocks) - 1:
                raise ExitError(f"exit index {idx!r} out of range: an early exit goes after "
                                f"block 0..{len(blocks) - 2} (the last block is the final exit)")
        self.blocks = nn.ModuleList(blocks)
        self.exit_points: list[int] = sorted(exits)
        self.heads = nn.ModuleList(exits[i] for i in self.exit_points)

    @property
    def num_exits(self) -> int:
        return len(self.exit_points) + 1

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every exit, early exits first and the backbone's output last."""
        outs = []
        heads = dict(zip(self.exit_points, self.heads, strict=True))
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in heads:
                outs.append(heads[i](x))
        outs.append(x)
        return outs

    def check_thresholds(self, thresholds: Sequence[float], mode: str = "entropy"
                         ) -> list[float]:
        """The early-exit thresholds as floats; raises ExitError on a wrong count or mode."""
        check_mode(mode)
        try:
            values = [float(t) for t in thresholds]
        except (TypeError, ValueError) as exc:
            raise ExitError(f"thresholds must be numbers, got {thresholds!r}") from exc
        early = self.num_exits - 1
        if len(values) not in (early, early + 1):
            raise ExitError(f"thresholds: expected {early} (one per early exit) or "
                            f"{early + 1} values, got {len(values)}")
        if any(math.isnan(v) for v in values):
            raise ExitError(f"thresholds must not be NaN, got {values}")
        return values[:early]

    @torch.no_grad()
    def infer(self, x: torch.Tensor, thresholds: Sequence[float], mode: str = "entropy"
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run block by block, dropping samples as they exit.

        Returns ``(logits, exit_index)``: per sample the logits of the exit it left at and that
        exit's index (0 = first early exit, ``num_exits - 1`` = final). Rule: see
        :mod:`~edgeweave.adapt.exit_rules`.
        """
        ts = self.check_thresholds(thresholds, mode)
        self.eval()
        n = x.shape[0]
        logits: torch.Tensor | None = None
        exit_idx = torch.full((n,), self.num_exits - 1, dtype=torch.long)
        active = torch.arange(n)
        heads = dict(zip(self.exit_points, self.heads, strict=True))
        k = 0
        for i, block in enumerate(self.blocks):
            if active.numel() == 0:
                break
            x = block(x)
            if i not in heads:
                continue
            out = heads[i](x)
            if logits is None:
                logits = torch.zeros((n, *out.shape[1:]), dtype=out.dtype)
            leave = exit_mask(out, ts[k], mode)
            logits[active[leave]] = out[leave]
            exit_idx[active[leave]] = k
            keep = ~leave
            active, x = active[keep], x[keep]
            k += 1
        if active.numel():
            if logits is None:
                logits = torch.zeros((n, *x.shape[1:]), dtype=x.dtype)
            logits[active] = x
        assert logits is not None
        return logits, exit_idx


def candidate_exit_points(backbone: nn.Sequential, example_input) -> list[int]:
    """Sensible early-exit indices: after each block whose output is a feature map (N, C, H, W),
    excluding the last block, and skipping a block directly followed by an activation,
    normalization, pooling or dropout block (the exit then goes after that one instead)."""
    blocks = list(backbone)
    x = example_tensor(example_input)
    points = []
    with torch.no_grad():
        for i, block in enumerate(blocks):
            x = block(x)
            if i == len(blocks) - 1 or x.dim() != 4:
                continue
            if isinstance(blocks[i + 1], _FOLLOW_ONS):
                continue
            points.append(i)
    return points


def make_head(features: torch.Tensor, num_classes: int, pool: int = 4) -> nn.Module:
    """A small exit head for this feature shape: average-pool a feature map to at most
    ``pool`` x ``pool``, flatten, one linear layer."""
    if features.dim() == 4:
        c, h, w = features.shape[1:]
        side = (min(pool, h), min(pool, w))
        return nn.Sequential(nn.AdaptiveAvgPool2d(side), nn.Flatten(),
                             nn.Linear(c * side[0] * side[1], num_classes))
    return nn.Sequential(nn.Flatten(), nn.Linear(features[0].numel(), num_classes))


def attach_exits(backbone: nn.Sequential, after: Sequence[int], num_classes: int,
                 example_input, pool: int = 4) -> BranchyNet:
    """Wrap ``backbone`` with a :func:`make_head` after each block index in ``after``, sized by
    running ``example_input`` (a tensor or a shape) through the backbone prefix."""
    blocks = list(backbone)
    if num_classes < 1:
        raise ExitError(f"num_classes must be >= 1, got {num_classes}")
    after = list(after)
    if len(set(after)) != len(after):
        raise ExitError(f"after: duplicate exit index in {after}")
    for idx in after:
        if not isinstance(idx, int) or not 0 <= idx < len(blocks) - 1:
            raise ExitError(f"after: exit index {idx!r} out of range 0..{len(blocks) - 2} "
                            f"for a backbone of {len(blocks)} blocks")
    x = example_tensor(example_input)
    heads = {}
    with torch.no_grad():
        for i, block in enumerate(blocks):
            x = block(x)
            if i in after:
                heads[i] = make_head(x, num_classes, pool)
    return BranchyNet(blocks, heads)
