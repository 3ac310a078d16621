"""Rectangles of a feature map and how a sliding window maps them back to its input.

Everything a tile partitioner needs is interval arithmetic done separately on rows and columns:
which output interval a tile owns, which input interval a window op needs for it (kernel,
stride, padding and dilation), and how much of that need falls outside the real input (the
zero padding the unpartitioned layer would have used). Intervals are half-open ``[start, end)``
in the coordinates of the whole, unpartitioned feature map, so regions from different tiles and
layers can be compared, intersected and unioned directly.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple


class Region(NamedTuple):
    """Rows ``[r0, r1)`` by columns ``[c0, c1)`` of a feature map; empty when either is.

    A named tuple (not a dataclass) because planners build millions of them; in JSON it is
    the list ``[r0, r1, c0, c1]``."""

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
        height, width = self.r1 - self.r0, self.c1 - self.c0  # height * width, inlined (hot)
        return height * width if height > 0 and width > 0 else 0

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
    Exact: the region is cut into bands at every rectangle edge, and the first and last bands
    (rows, then columns) not fully covered bound the remainder."""
    if region.empty:
        return EMPTY
    r0, r1, c0, c1 = region
    parts = []
    for a0, a1, b0, b1 in cover:  # the cover's parts inside the region (a hot loop)
        a0, a1, b0, b1 = max(a0, r0), min(a1, r1), max(b0, c0), min(b1, c1)
        if a0 < a1 and b0 < b1:
            parts.append((a0, a1, b0, b1))
    if not parts:
        return region
    if len(parts) == 1:  # one rectangle (the common case): what it leaves, without bands
        a0, a1, b0, b1 = parts[0]
        if b0 == c0 and b1 == c1:  # it spans the region's width: rows above or below it
            if a0 == r0:
                return EMPTY if a1 == r1 else Region(a1, r1, c0, c1)
            return Region(r0, a0, c0, c1) if a1 == r1 else region
        if a0 == r0 and a1 == r1:  # its height: columns left or right of it
            if b0 == c0:
                return Region(r0, r1, b1, c1)
            return Region(r0, r1, c0, b0) if b1 == c1 else region
        return region  # every row and every column keeps an uncovered pixel
    rows = _free_span(r0, r1, c0, c1, parts)
    if rows is None:
        return EMPTY
    cols = _free_span(c0, c1, r0, r1, [(p[2], p[3], p[0], p[1]) for p in parts])
    assert cols is not None
    return Region(rows[0], rows[1], cols[0], cols[1])


def _free_span(lo: int, hi: int, across_lo: int, across_hi: int,
               parts: list[tuple[int, int, int, int]]) -> tuple[int, int] | None:
    """Along one axis: the first and last positions of ``[lo, hi)`` whose band across
    ``[across_lo, across_hi)`` the parts (along start/end, across start/end) leave uncovered."""
    edges = sorted({lo, hi, *(p[0] for p in parts), *(p[1] for p in parts)})
    bands = list(itertools.pairwise(edges))

    def free(band: tuple[int, int]) -> bool:
        spans = sorted((p[2], p[3]) for p in parts if p[0] <= band[0] and p[1] >= band[1])
        reach = across_lo
        for start, end in spans:
            if start > reach:
                return True
            reach = max(reach, end)
        return reach < across_hi

    first = next((b for b in bands if free(b)), None)
    if first is None:
        return None
    last = next(b for b in reversed(bands) if free(b))
    return first[0], last[1]


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
    sizes = [math.floor(e) for e in exact]
    order = sorted(range(len(weights)), key=lambda i: (sizes[i] - exact[i], i))
    for i in order[: size - sum(sizes)]:
        sizes[i] += 1
    bounds = [0]
    for s in sizes:
        bounds.append(bounds[-1] + s)
    return bounds
