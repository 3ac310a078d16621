"""Resident rows for a layer-wise split: each device keeps the rows it computed for the next
split layer, and only the halo rows cross the medium.

MoDNN (Mao et al. 2017) scatters every split layer's input rows from the group owner and
gathers the output rows back, so each layer's whole feature map crosses the medium twice. On a
shared 18.88 Mbit/s Wi-Fi that costs more than the split saves: VGG-16's first layers move
several megabytes a frame. When a split convolution or pooling layer reads only the output of
the split layer before it, both split along rows alone, the rows a device computed are most of
the rows its next part reads: it keeps them (its *band*), and receives only the few rows above
and below that its neighbours computed (the halo), through the gateway, which forwards each
device's edge rows. The gathered map is needed only where a run of such layers ends (a fully
connected layer, a residual add, the cut). The parts, their outputs and the stitched result are
exactly the scatter/gather split's; only what crosses changes.

A :class:`Hop` is plain geometry recomputed from the split's grid lines on both sides of the
wire: the gateway uses it to forward halos, a worker to check what it was sent.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from edgeweave.graph.blocks import chain_block
from edgeweave.graph.capture import Graph
from edgeweave.graph.layerwise import LayerSplit, SplitRunner, row_split, unit_tiles
from edgeweave.graph.tile_exec import TileModule, stitch

Rows = tuple[int, int]


@dataclass(frozen=True)
class Hop:
    """How split layer ``i`` reads the output of split ``i - 1`` left on the devices.

    For each part ``p`` of split ``i``: ``keep[p]`` is the rows of its device's band it uses
    (absolute rows of the map between the two splits; None when the device holds none of
    them) and ``halo[p]`` the rows it receives, the ones above the band first. For each part
    ``q`` of split ``i - 1``: ``back[q]`` is the rows of its band that other parts read, the
    only ones its device returns."""

    keep: tuple[Rows | None, ...]
    halo: tuple[tuple[Rows, ...], ...]
    back: tuple[tuple[Rows, ...], ...]


def stays(graph: Graph, before: LayerSplit, after: LayerSplit) -> bool:
    """Whether ``after`` can read ``before``'s output where the devices left it: both split
    by rows alone, ``after`` reads that output and nothing outside it does."""
    if before.kind != "rows" or after.kind != "rows":
        return False
    if len(before.col_bounds) != 2 or len(after.col_bounds) != 2:  # a 2-D grid: halo columns
        return False
    value = before.unit[-1]
    # (a residual block's unit reads it twice: both branches, graph.layerwise.residual_blocks)
    return (graph.node(after.unit[0]).inputs == (value,) and value not in graph.outputs
            and set(graph.consumers(value)) <= set(after.unit))


def hops(graph: Graph, splits: Sequence[LayerSplit]) -> list[Hop | None]:
    """Each split's :class:`Hop`, or None where its input is scattered from the gateway (the
    first split, and any that does not :func:`stay`)."""
    out: list[Hop | None] = [None]
    for before, after in itertools.pairwise(splits):
        out.append(_hop(graph, before, after) if stays(graph, before, after) else None)
    return out[:len(splits)]


def _hop(graph: Graph, before: LayerSplit, after: LayerSplit) -> Hop:
    band = {p.device: p.rows for p in before.parts}
    needs = [(part.device, (t.input.r0, t.input.r1))
             for part, t in zip(after.parts, unit_tiles(graph, after), strict=True)]
    keep: list[Rows | None] = []
    halo: list[tuple[Rows, ...]] = []
    for device, rows in needs:
        k, h = kept_and_halo(rows, band.get(device))
        keep.append(k)
        halo.append(h)
    back = []
    for part in before.parts:
        a, b = part.rows
        wanted = [(max(a, r0), min(b, r1)) for device, (r0, r1) in needs
                  if device != part.device and min(b, r1) > max(a, r0)]
        back.append(merge(wanted))
    return Hop(tuple(keep), tuple(halo), tuple(back))


def kept_and_halo(needed: Rows, own: Rows | None) -> tuple[Rows | None, tuple[Rows, ...]]:
    """Of the input rows ``needed``, the ones a device holds in its band ``own`` (None when it
    holds none of them) and the rest it receives, above then below (the halo)."""
    r0, r1 = needed
    k = None if own is None else (max(r0, own[0]), min(r1, own[1]))
    if k is None or k[0] >= k[1]:
        return None, (needed,)
    return k, tuple(r for r in ((r0, k[0]), (k[1], r1)) if r[1] > r[0])


def merge(ranges: Sequence[Rows]) -> tuple[Rows, ...]:
    """Row ranges sorted, the overlapping and touching ones joined."""
    out: list[Rows] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return tuple(out)


def rows_count(ranges: Sequence[Rows]) -> int:
    return sum(b - a for a, b in ranges)


def aligned(graph: Graph, splits: Sequence[LayerSplit]) -> list[LayerSplit]:
    """``splits`` with the rows before a pooling layer whose windows do not overlap (kernel =
    stride, no padding: VGG's and most 2x2 max pools) cut where the pool's own rows begin, so
    the pool needs no halo: each band holds exactly the windows of its device's pool rows.
    Only the cut before such a pool moves (by a row or two), and not where the pool has too
    few rows to give every device a part; elsewhere the bands keep the devices' speed
    shares."""
    out = list(splits)
    for i in range(len(out) - 2, -1, -1):
        before, after = out[i], out[i + 1]
        if not stays(graph, before, after):
            continue
        window = chain_block(graph, after.unit).nodes[0].window
        if window is None or window.kernel[0] != window.stride[0] or window.padding[0] or \
                window.dilation[0] != 1:
            continue
        height = chain_block(graph, before.unit).output.shape[1]
        bounds = [min(height, window.stride[0] * b) for b in after.row_bounds[:-1]]
        split = row_split(graph, before.unit, [*bounds, height], before.col_bounds)
        if split.devices == before.devices:  # not where a small pool leaves a device out
            out[i] = split
    return out


def resident_splits(graph: Graph, splits: Sequence[LayerSplit]) -> list[LayerSplit]:
    """``splits`` :func:`aligned`, with what each part puts on the medium when bands stay
    resident (``LayerPart.medium_in`` / ``medium_out``, in raw bytes as ``in_bytes``): a part
    whose input stays receives its halo rows only, a part whose output stays returns the rows
    others read."""
    out = aligned(graph, splits)
    for i, hop in enumerate(hops(graph, out)):
        if hop is None:
            continue
        before, after = out[i - 1], out[i]
        block = chain_block(graph, after.unit)
        channels = block.input_shape[0]
        # a part reads the columns its tile does (a strided window may leave the last out)
        out[i] = replace(after, resident=True, parts=tuple(
            replace(p, medium_in=rows_count(h) * channels * t.input.width
                    * block.input_elem_bytes)
            for p, h, t in zip(after.parts, hop.halo, unit_tiles(graph, after), strict=True)))
        prev = chain_block(graph, before.unit)
        out_width = prev.output.shape[2]
        out[i - 1] = replace(before, parts=tuple(
            replace(p, medium_out=prev.output.bytes_of(rows_count(b) * out_width))
            for p, b in zip(before.parts, hop.back, strict=True)))
    return out


def run_resident(graph: Graph, splits: Sequence[LayerSplit], x: torch.Tensor) -> Any:
    """Run the model in-process as the devices would with resident rows: a part whose input
    stays is built from its device's own band and the rows the others returned, the rest of
    the map left NaN, so a row the geometry forgot to send poisons the output (the reference
    the runtime's halo forwarding is checked against)."""
    with torch.no_grad():
        return _ResidentRunner(graph, splits).run(x)


class _ResidentRunner(SplitRunner):
    def __init__(self, graph: Graph, splits: Sequence[LayerSplit]) -> None:
        super().__init__(graph, splits)
        self.hop = {s.unit[0]: h for s, h in zip(splits, hops(graph, splits), strict=True)}
        self.before: LayerSplit | None = None
        self.bands: dict[int, torch.Tensor] = {}  # device -> its rows of the last split

    def _parts(self, split: LayerSplit, source: torch.Tensor) -> torch.Tensor:
        hop = self.hop[split.unit[0]]
        if split.kind != "rows":
            self.before = None
            return super()._parts(split, source)
        if hop is not None:
            assert self.before is not None
            sent = torch.full_like(source, float("nan"))  # only the rows devices returned
            for part, back in zip(self.before.parts, hop.back, strict=True):
                for a, b in back:
                    sent[:, :, a:b] = self.bands[part.device][:, :, a - part.rows[0]:
                                                             b - part.rows[0]]
        block = chain_block(self.graph_, split.unit)
        tiles = unit_tiles(self.graph_, split)
        outputs, bands = {}, {}
        for p, (part, tile) in enumerate(zip(split.parts, tiles, strict=True)):
            r = tile.input
            if hop is None:
                crop = source[:, :, r.r0:r.r1, r.c0:r.c1]
            else:
                crop = _assemble(sent, self.bands.get(part.device), self.before, part.device,
                                 hop.keep[p], hop.halo[p])[:, :, :, r.c0:r.c1]
            outputs[tile.index], _ = TileModule(self.graph_, block, tile)(crop)
            bands[part.device] = outputs[tile.index]
        self.before, self.bands = split, bands
        return stitch(block, tiles, outputs)


def _assemble(sent: torch.Tensor, band: torch.Tensor | None, before: LayerSplit | None,
              device: int, keep: Rows | None, halo: Sequence[Rows]) -> torch.Tensor:
    pieces = [sent[:, :, a:b] for a, b in halo]
    if keep is None:
        return torch.cat(pieces, dim=2)
    assert band is not None and before is not None
    r0 = next(p.rows[0] for p in before.parts if p.device == device)
    kept = band[:, :, keep[0] - r0:keep[1] - r0]
    above = [piece for (a, _), piece in zip(halo, pieces, strict=True) if a < keep[0]]
    below = [piece for (a, _), piece in zip(halo, pieces, strict=True) if a >= keep[1]]
    return torch.cat([*above, kept, *below], dim=2)
