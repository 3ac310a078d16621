"""The backbone tenants are fine-tuned from, cut into blocks at its candidate sharing depths.

Mainstream (Jiang et al., ATC 2018) shares a tenant's frozen prefix with every other tenant
frozen at least as deep. A "depth" here is a number of whole blocks: depth 0 freezes nothing
(the tenant runs its own copy of everything, no sharing), depth :data:`STEM_BLOCKS` freezes
everything but the tenant's classifier head (maximal sharing). Each block ends where an
activation is complete (after its ReLU / pooling), so cutting there changes nothing numerically.

The layout is the zoo's ``digits-cnn`` made one conv stage and one hidden layer deeper, so that
there are five candidate depths instead of three, and at ``side`` x ``side`` input (sklearn's
8x8 digits upsampled) so that the convolutions, not Python's per-layer overhead, dominate the
cost, as in a real video stem. This module imports only torch: node servers build the served
model (:mod:`edgeweave.serve.stems.spec`) from it without pulling in the training stack.
"""

from __future__ import annotations

from torch import nn

from edgeweave.serve.stems.errors import TenancyError

#: Number of blocks before the head; candidate depths are 0..STEM_BLOCKS.
STEM_BLOCKS = 5
#: Width of the hidden layers after the convolutions (blocks 4 and 5).
HIDDEN = (128, 64)


def check_depth(depth: int, where: str) -> int:
    if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= STEM_BLOCKS:
        raise TenancyError(f"{where}: expected a depth in 0..{STEM_BLOCKS} (blocks shared), "
                           f"got {depth!r}")
    return depth


def check_geometry(side: int, width: int) -> None:
    """``side`` must survive two 2x2 poolings exactly; ``width`` is the first conv's channels."""
    if not isinstance(side, int) or side < 4 or side % 4:
        raise TenancyError(f"side: expected a multiple of 4 that is >= 4, got {side!r}")
    if not isinstance(width, int) or width < 1:
        raise TenancyError(f"width: expected >= 1 channel, got {width!r}")


def stem_blocks(side: int = 16, width: int = 16) -> list[nn.Sequential]:
    """The backbone's :data:`STEM_BLOCKS` blocks, freshly initialised: conv(w)-relu,
    conv(2w)-relu-pool, conv(4w)-relu-pool-flatten, linear(128)-relu, linear(64)-relu."""
    check_geometry(side, width)
    w1, w2, w3 = width, 2 * width, 4 * width
    flat = w3 * (side // 4) ** 2
    return [
        nn.Sequential(nn.Conv2d(1, w1, 3, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(w1, w2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(w2, w3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Flatten()),
        nn.Sequential(nn.Linear(flat, HIDDEN[0]), nn.ReLU()),
        nn.Sequential(nn.Linear(HIDDEN[0], HIDDEN[1]), nn.ReLU()),
    ]


def head(classes: int) -> nn.Linear:
    """A tenant's own classifier on the last block's features."""
    if not isinstance(classes, int) or classes < 2:
        raise TenancyError(f"classes: expected an integer >= 2, got {classes!r}")
    return nn.Linear(HIDDEN[-1], classes)


def stem_backbone(side: int = 16, width: int = 16, classes: int = 10) -> nn.Sequential:
    """Blocks and a head as one ``nn.Sequential`` (block ``i`` is ``model[i]``, the head is
    ``model[STEM_BLOCKS]``): what the source task is trained as."""
    return nn.Sequential(*stem_blocks(side, width), head(classes))
