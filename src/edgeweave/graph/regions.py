"""Rectangles of a feature map and how a sliding window maps them back to its input.

Everything a tile partitioner needs is interval arithmetic done separately on rows and columns:
which output interval a tile owns, which input interval a window op needs for it (kernel,
stride, padding and dilation), and how much of that need falls outside the real input (the
zero padding the unpartitioned layer would have used). Intervals are half-open ``[start, end)``
in the coordinates of the whole, unpartitioned feature map, so regions from different tiles and
layers can be compared, intersected and unioned directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Region:
    """Rows ``[r0, r1)`` by columns ``[c0, c1)`` of a feature map; empty when either is."""

    r0: int
    r1: int
    c0: int
    c1: int

    @property
    def empty(self) -> bool:
        return self.r1 <= self.r0 or self.c1 <= self.c0

    @property
    def height(self) -> int:
        return max(0, self.r1 - self.r0)

    @property
    def width(self) -> int:
        return max(0, self.c1 - self.c0)

    @property
    def area(self) -> int:
        return self.height * self.width

    def contains(self, other: Region) -> bool:
        """True when ``other`` lies inside this region (an empty region lies inside any)."""
        if other.empty:
            return True
        return (self.r0 <= other.r0 and other.r1 <= self.r1
                and self.c0 <= other.c0 and other.c1 <= self.c1)

    def intersect(self, other: Region) -> Region:
        return Region(max(self.r0, other.r0), min(self.r1, other.r1),
                      max(self.c0, other.c0), min(self.c1, other.c1))

    def relative_to(self, outer: Region) -> tuple[slice, slice]:
        """Row and column slices that cut this region out of a tensor holding ``outer``."""
        return (slice(self.r0 - outer.r0, self.r1 - outer.r0),
                slice(self.c0 - outer.c0, self.c1 - outer.c0))

    def as_list(self) -> list[int]:
        return [self.r0, self.r1, self.c0, self.c1]


EMPTY = Region(0, 0, 0, 0)


def full(height: int, width: int) -> Region:
    return Region(0, height, 0, width)


def bbox(regions: Iterable[Region]) -> Region:
    """The smallest region holding every non-empty one of ``regions`` (EMPTY if none)."""
    boxes = [r for r in regions if not r.empty]
    if not boxes:
        return EMPTY
    return Region(min(r.r0 for r in boxes), max(r.r1 for r in boxes),
                  min(r.c0 for r in boxes), max(r.c1 for r in boxes))


def uncovered_bbox(region: Region, cover: Sequence[Region]) -> Region:
    """Bounding box of the part of ``region`` that no rectangle of ``cover`` contains.

    DeepThings' data reuse computes only what neighbouring tiles have not: the remainder may be
    an L or a frame, and a convolution needs a rectangle, so the tile computes its bounding box.
    Exact on the grid of every rectangle edge (coordinate compression)."""
    if region.empty:
        return EMPTY
    parts = [c.intersect(region) for c in cover]
    parts = [p for p in parts if not p.empty]
    if not parts:
        return region
    rows = np.unique([region.r0, region.r1, *(p.r0 for p in parts), *(p.r1 for p in parts)])
    cols = np.unique([region.c0, region.c1, *(p.c0 for p in parts), *(p.c1 for p in parts)])
    covered = np.zeros((len(rows) - 1, len(cols) - 1), dtype=bool)
    for p in parts:
        a, b = np.searchsorted(rows, [p.r0, p.r1])
        c, d = np.searchsorted(cols, [p.c0, p.c1])
        covered[a:b, c:d] = True
    free_r, free_c = np.nonzero(~covered)
    if len(free_r) == 0:
        return EMPTY
    return Region(int(rows[free_r.min()]), int(rows[free_r.max() + 1]),
                  int(cols[free_c.min()]), int(cols[free_c.max() + 1]))


@dataclass(frozen=True)
class Window:
    """A sliding-window op's geometry per axis (rows, columns), and what its padding holds:
    ``"zero"`` for convolutions and average pooling, ``"min"`` (minus infinity) for max
    pooling, which PyTorch never lets a padded element win."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    fill: str = "zero"

    def needed(self, out: Region) -> Region:
        """The input region (unclipped: it may extend into the padding, or past the input for
        a ceil-mode pool) whose windows produce ``out``."""
        if out.empty:
            return EMPTY
        r0, r1 = needed_interval(out.r0, out.r1, self.kernel[0], self.stride[0],
                                 self.padding[0], self.dilation[0])
        c0, c1 = needed_interval(out.c0, out.c1, self.kernel[1], self.stride[1],
                                 self.padding[1], self.dilation[1])
        return Region(r0, r1, c0, c1)


def needed_interval(o0: int, o1: int, kernel: int, stride: int, padding: int,
                    dilation: int) -> tuple[int, int]:
    """Input interval read by output positions ``[o0, o1)``: window ``o`` starts at
    ``o * stride - padding`` and spans ``dilation * (kernel - 1) + 1`` elements."""
    return o0 * stride - padding, (o1 - 1) * stride - padding + dilation * (kernel - 1) + 1


def clip(region: Region, height: int, width: int) -> Region:
    """The part of ``region`` inside a ``height x width`` map (keeps an empty result empty)."""
    inside = region.intersect(full(height, width))
    return EMPTY if inside.empty else inside


def even_bounds(size: int, parts: int) -> list[int]:
    """``parts + 1`` boundaries splitting ``size`` into near-equal intervals (sizes differ by at
    most one, the larger ones last)."""
    return [i * size // parts for i in range(parts + 1)]


def proportional_bounds(size: int, weights: Sequence[float]) -> list[int]:
    """Boundaries splitting ``size`` in proportion to ``weights`` (MoDNN's biased partition by
    device speed), rounding by largest remainder so the sizes add up exactly."""
    total = float(sum(weights))
    if total <= 0 or any(w < 0 for w in weights):
        raise ValueError(f"weights must be non-negative with a positive sum, got {list(weights)}")
    exact = [size * w / total for w in weights]
    sizes = [int(np.floor(e)) for e in exact]
    order = sorted(range(len(weights)), key=lambda i: (sizes[i] - exact[i], i))
    for i in order[: size - sum(sizes)]:
        sizes[i] += 1
    bounds = [0]
    for s in sizes:
        bounds.append(bounds[-1] + s)
    return bounds
