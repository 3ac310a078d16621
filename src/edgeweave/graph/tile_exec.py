"""Running one tile of a fused block on its crop, and stitching the tiles back together.

A :class:`TileModule` is built from a captured graph, a :class:`FusedBlock` and a :class:`Tile`
(all reproducible from a trusted model specifier, the fused depth and the grid), and keeps only
the block's own layers, so a device holds the block's weights and nothing else. Each window
layer runs with ``padding=0`` on an explicitly padded input: the padding (zeros for convolutions
and average pooling, minus infinity for max pooling) is added only where the tile's need extends
past the real feature map, i.e. where the tile touches the image border, which is exactly what
the unpartitioned layer saw there. Everywhere else the halo is real data.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from edgeweave.errors import GraphError
from edgeweave.graph.blocks import BlockNode, FusedBlock
from edgeweave.graph.capture import Graph
from edgeweave.graph.regions import Region, Window, clip
from edgeweave.graph.tiles import Tile, tile_grid

#: Out-of-place versions of in-place elementwise targets: a tile's operands are views of
#: values other layers may still read.
_OUT_OF_PLACE: dict[Any, Any] = {operator.iadd: operator.add, operator.imul: operator.mul}


class TileModule(nn.Module):
    """Computes one tile of a fused block: ``forward(crop, reused)`` -> ``(output, shares)``.

    ``crop`` is the block input over ``tile.input``; ``reused`` maps a layer to the tensors of
    ``tile.reused[layer]`` (data reuse; omit otherwise). ``shares`` maps a layer to the tensors
    of ``tile.shares[layer]``, for the tiles that will reuse them."""

    def __init__(self, graph: Graph, block: FusedBlock, tile: Tile) -> None:
        super().__init__()
        self.block = block
        self.tile = tile
        self.layers = nn.ModuleDict()
        fx_nodes = {n.name: n for n in graph.module.graph.nodes}
        self._steps: list[tuple[BlockNode, Callable[..., torch.Tensor]]] = []
        self._last_read = block.last_read
        # an in-place activation may overwrite its input only where nothing reads it afterwards
        # and it is not the caller's crop (checked as it runs: an identity or an eval-mode
        # dropout before it hands the crop itself on); elsewhere it runs out of place
        self._copying: dict[int, Callable[..., torch.Tensor]] = {}
        for i, node in enumerate(block.nodes):
            fx_node = fx_nodes[node.name]
            mutable = (len(node.inputs) == 1 and node.inputs[0] != block.input
                       and self._last_read[node.inputs[0]] == i)
            step = self._compile(graph, node, fx_node, mutable)
            if mutable and fx_node.op == "call_module" and getattr(
                    graph.module.get_submodule(str(fx_node.target)), "inplace", False):
                self._copying[i] = self._compile(graph, node, fx_node, False)
            self._steps.append((node, step))

    def _compile(self, graph: Graph, node: BlockNode, fx_node: fx.Node, mutable: bool
                 ) -> Callable[..., torch.Tensor]:
        if fx_node.op == "call_module":
            module = graph.module.get_submodule(str(fx_node.target))
            if getattr(module, "inplace", False) and not mutable:
                module = copy.copy(module)
                module.inplace = False  # type: ignore[assignment]
            key = f"m{len(self.layers)}"
            self.layers[key] = module
            if node.kind is not None:
                return _window_op(node.kind, module)
            return _call_with(fx_node, lambda *a, **k: self.layers[key](*a, **k))
        target = fx_node.target
        if fx_node.op == "call_method":
            name = str(target).rstrip("_")
            return _call_with(fx_node, lambda obj, *a, **k: getattr(obj, name)(*a, **k))
        function = _OUT_OF_PLACE.get(target, target)
        return _call_with(fx_node, function, drop_inplace=True)  # type: ignore[arg-type]

    def forward(self, crop: torch.Tensor,
                reused: Mapping[str, Sequence[torch.Tensor]] | None = None
                ) -> tuple[torch.Tensor, dict[str, list[torch.Tensor]]]:
        tile, block = self.tile, self.block
        _check(crop, block.input_shape[0], tile.input, f"input crop of tile {tile.index}")
        held: dict[str, torch.Tensor] = {block.input: crop}
        shares: dict[str, list[torch.Tensor]] = {}
        for i, (node, run) in enumerate(self._steps):
            hold, own = tile.holds[node.name], tile.computes[node.name]
            value = None
            if not own.empty:
                if node.window is not None:
                    source = node.inputs[0]
                    value = _windowed(run, node.kind, node.window, held[source],
                                      tile.holds[source], own, block.shape_of(source))
                else:
                    args = {p: _cut(held[p], tile.holds[p], own) for p in node.inputs}
                    if i in self._copying and any(_same_storage(a, crop)
                                                  for a in args.values()):
                        run = self._copying[i]
                    value = run(args)
            if own != hold:
                value = self._assemble(node, hold, own, value, (reused or {}).get(node.name, ()))
            if value is None:  # nothing of this layer is needed (every reader is reused)
                value = crop.new_zeros((crop.shape[0], node.shape[0], 0, 0))
            held[node.name] = value
            for region in tile.shares.get(node.name, ()):
                shares.setdefault(node.name, []).append(_cut(value, hold, region).clone())
            for producer in node.inputs:
                if self._last_read[producer] == i:
                    del held[producer]
        return held[block.output.name], shares

    def _assemble(self, node: BlockNode, hold: Region, own: Region, value: torch.Tensor | None,
                  pieces: Sequence[torch.Tensor]) -> torch.Tensor | None:
        """A held value made of reused pieces from other tiles plus the part computed here."""
        expected = self.tile.reused.get(node.name, ())
        if len(pieces) != len(expected):
            raise GraphError(f"tile {self.tile.index}, layer {node.name!r}: got {len(pieces)} "
                             f"reused piece(s), expected {len(expected)}")
        channels = node.shape[0]
        like = value if value is not None else pieces[0] if pieces else None
        if like is None:
            return None
        out = like.new_zeros((like.shape[0], channels, hold.height, hold.width))
        for piece, tensor in zip(expected, pieces, strict=True):
            _check(tensor, channels, piece.region, f"reused piece of layer {node.name!r}")
            rows, cols = piece.region.relative_to(hold)
            out[:, :, rows, cols] = tensor
        if value is not None:
            rows, cols = own.relative_to(hold)
            out[:, :, rows, cols] = value
        return out


def _check(tensor: torch.Tensor, channels: int, region: Region, what: str) -> None:
    expected = (channels, region.height, region.width)
    if tensor.dim() != 4 or tuple(tensor.shape[1:]) != expected:
        raise GraphError(f"{what} has shape {tuple(tensor.shape)}; expected (batch, "
                         f"{', '.join(str(d) for d in expected)})")


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr())


def _cut(value: torch.Tensor, holds: Region, region: Region) -> torch.Tensor:
    rows, cols = region.relative_to(holds)
    return value[:, :, rows, cols]


def _windowed(op: Callable[..., torch.Tensor], kind: str | None, window: Window,
              value: torch.Tensor, holds: Region, own: Region, shape: tuple[int, int, int]
              ) -> torch.Tensor:
    """A window layer's output over ``own``, from its input ``value`` held over ``holds``.

    Where the layer's own padding, applied to the part of the need inside the map, gives
    exactly ``own`` (the need reaches past the map at the top and left at least as far as at
    the bottom and right: a 1x1 grid, a full-width row strip, a stride-2 layer's border), the
    layer pads natively, as the unpartitioned one does. Padding a copy instead cost more than
    the layer for depthwise convolutions (a fill and a copy per layer; with glibc's default
    heap, page faults on both): mobilenet_v2's 1x1 tile took 1.9x the plain model's time on
    this host."""
    need = window.needed(own)
    inside = clip(need, shape[1], shape[2])
    pads = []
    for axis, (before, after, size, out) in enumerate((
            (inside.r0 - need.r0, need.r1 - inside.r1, inside.height, own.height),
            (inside.c0 - need.c0, need.c1 - inside.c1, inside.width, own.width))):
        span = window.dilation[axis] * (window.kernel[axis] - 1) + 1
        if before < after or (size + 2 * before - span) // window.stride[axis] + 1 != out or (
                kind != "conv" and 2 * before > span):  # pooling pads at most half a window
            break
        pads.append(before)
    if len(pads) == 2 and not inside.empty:
        # contiguous: convolutions on a strided view take a slower path
        return op(_cut(value, holds, inside).contiguous(), tuple(pads))
    fill = float("-inf") if window.fill == "min" else 0.0
    return op(_padded(value, holds, need, shape, fill).contiguous(), (0, 0))


def _padded(value: torch.Tensor, holds: Region, need: Region, shape: tuple[int, int, int],
            fill: float) -> torch.Tensor:
    """``need`` (which may reach past the map) of a value held over ``holds``: real data where
    the map has it, ``fill`` beyond the map's border (the layer's own padding)."""
    inside = clip(need, shape[1], shape[2])
    if inside == need:
        return _cut(value, holds, need)
    out = value.new_full((value.shape[0], shape[0], need.height, need.width), fill)
    if not inside.empty:
        rows, cols = inside.relative_to(need)
        out[:, :, rows, cols] = _cut(value, holds, inside)
    return out


def _window_op(kind: str, module: nn.Module) -> Callable[..., torch.Tensor]:
    """The layer with the padding the caller gives (``op(x, (rows, cols))``): the tile's own,
    which is the layer's only where the tile touches the border on both sides."""
    m: Any = module
    if kind == "conv":
        return lambda x, pad: F.conv2d(x, m.weight, m.bias, m.stride, pad, m.dilation, m.groups)
    stride = m.stride if m.stride is not None else m.kernel_size
    if kind == "max_pool":
        return lambda x, pad: F.max_pool2d(x, m.kernel_size, stride, pad, m.dilation)
    return lambda x, pad: F.avg_pool2d(x, m.kernel_size, stride, pad, False, True,
                                       m.divisor_override)


class _Ref:
    """A producer's value in an argument template (the fx node itself is not kept: it would
    keep the whole model alive through its graph)."""

    def __init__(self, name: str) -> None:
        self.name = name


def _call_with(fx_node: fx.Node, function: Callable[..., Any], drop_inplace: bool = False
               ) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    """Call ``function`` with the fx node's arguments, its tensor operands replaced by the
    values given by producer name."""

    def template(a: Any) -> Any:
        return _Ref(a.name) if isinstance(a, fx.Node) else a

    args = fx.node.map_aggregate(fx_node.args, template)
    kwargs = dict(fx.node.map_aggregate(dict(fx_node.kwargs), template))
    if drop_inplace and kwargs.get("inplace"):
        kwargs["inplace"] = False

    def call(values: dict[str, torch.Tensor]) -> torch.Tensor:
        def fetch(a: Any) -> Any:
            return values[a.name] if isinstance(a, _Ref) else a

        return function(*fx.node.map_aggregate(args, fetch),
                        **fx.node.map_aggregate(kwargs, fetch))

    return call


def run_tiles(graph: Graph, block: FusedBlock, tiles: Sequence[Tile], x: torch.Tensor
              ) -> torch.Tensor:
    """Run every tile in-process, level by level, keeping shared halo pieces where results are
    gathered, and stitch: the reference the distributed runtime must agree with."""
    store = ShareStore(tiles)
    outputs: dict[int, torch.Tensor] = {}
    for level in sorted({t.level for t in tiles}):
        for tile in (t for t in tiles if t.level == level):
            rows, cols = tile.input.relative_to(Region(0, x.shape[2], 0, x.shape[3]))
            out, shares = TileModule(graph, block, tile)(x[:, :, rows, cols], store.pieces(tile))
            outputs[tile.index] = out
            store.keep(tile.index, shares)
    return stitch(block, tiles, outputs)


class ShareStore:
    """Where results are gathered (DeepThings' gateway): keeps the halo pieces level-0 tiles
    share and cuts out the pieces a level-1 tile reuses."""

    def __init__(self, tiles: Sequence[Tile]) -> None:
        self.tiles = {t.index: t for t in tiles}
        self.kept: dict[tuple[int, str], list[torch.Tensor]] = {}

    def keep(self, source: int, shares: Mapping[str, Sequence[torch.Tensor]]) -> None:
        tile = self.tiles[source]
        for name, tensors in shares.items():
            regions = tile.shares.get(name, ())
            if len(tensors) != len(regions):
                raise GraphError(f"tile {source} sent {len(tensors)} piece(s) of layer "
                                 f"{name!r}; its plan shares {len(regions)}")
            self.kept[(source, name)] = list(tensors)

    def pieces(self, tile: Tile) -> dict[str, list[torch.Tensor]]:
        out: dict[str, list[torch.Tensor]] = {}
        for name, pieces in tile.reused.items():
            for piece in pieces:
                regions = self.tiles[piece.source].shares.get(name, ())
                k = next((k for k, r in enumerate(regions) if r.contains(piece.region)), None)
                if k is None or (piece.source, name) not in self.kept:
                    raise GraphError(f"tile {tile.index} reuses layer {name!r} of tile "
                                     f"{piece.source}, which has not shared it")
                value = self.kept[(piece.source, name)][k]
                out.setdefault(name, []).append(_cut(value, regions[k], piece.region))
        return out


def stitch(block: FusedBlock, tiles: Sequence[Tile], outputs: Mapping[int, torch.Tensor]
           ) -> torch.Tensor:
    """Place each tile's output at its grid position: the block's output."""
    channels, height, width = block.output.shape
    first = outputs[tiles[0].index]
    out = first.new_empty((first.shape[0], channels, height, width))
    for tile in tiles:
        _check(outputs[tile.index], channels, tile.output, f"output of tile {tile.index}")
        out[:, :, tile.output.r0:tile.output.r1, tile.output.c0:tile.output.c1] = \
            outputs[tile.index]
    return out


def run_block(graph: Graph, block: FusedBlock, x: torch.Tensor) -> torch.Tensor:
    """The unpartitioned block's output on input ``x`` (running the model up to it)."""
    interpreter = _UpTo(graph.module, block.output.name)
    with torch.no_grad():
        try:
            interpreter.run(x)
        except _Reached as reached:
            return reached.value
    raise GraphError(f"model {graph.name!r} never computed layer {block.output.name!r}")


class _Reached(Exception):
    def __init__(self, value: torch.Tensor) -> None:
        self.value = value


class _UpTo(fx.Interpreter):
    def __init__(self, module: fx.GraphModule, stop: str) -> None:
        super().__init__(module)
        self.stop = stop

    def run_node(self, n: fx.Node) -> Any:
        value = super().run_node(n)
        if n.name == self.stop:
            raise _Reached(value)
        return value


def run_blocks(graph: Graph, blocks: Sequence[FusedBlock], grids: Sequence[tuple[int, int]],
               x: torch.Tensor, tile_maker: Callable[[FusedBlock, tuple[int, int]],
                                                     Sequence[Tile]] | None = None
               ) -> torch.Tensor:
    """Consecutive fused blocks (DeeperThings), each cut into its grid's tiles, run and
    stitched before the next block's tiles are cropped from the stitched map: the reference
    for a multi-block plan. ``tile_maker(block, grid)`` makes the tiles (plain grids when
    None; graph.reuse.reuse_tiles for data reuse)."""
    make = tile_maker or tile_grid
    for block, grid in zip(blocks, grids, strict=True):
        x = run_tiles(graph, block, make(block, grid), x)
    return x
