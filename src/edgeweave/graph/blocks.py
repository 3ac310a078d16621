"""The fused block: the longest prefix of a model that can be cut into spatial tiles.

DeepThings (Zhao et al. 2018) fuses the first convolution and pooling layers of a CNN and splits
their output into a grid of tiles, each computable from its own crop of the input. That works
for exactly the layers whose output pixel depends on a bounded window of input pixels:
convolutions, pooling with a fixed window, and elementwise layers (batch norm in eval mode,
activations, residual adds of two maps of the same size). This module finds that prefix of a
captured :class:`Graph`, the depths at which it can be cut (a cut must leave exactly one tensor
for the rest of the model: not inside a residual block), and describes a block as plain data so
tiles can be computed, priced and shipped without the model's code.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from edgeweave.errors import GraphError
from edgeweave.graph.capture import Graph, NodeInfo
from edgeweave.graph.regions import Window

#: Modules that act on each element (or each channel) independently, so a tile of their output
#: needs the same tile of their input. Dropout is the identity in eval mode.
ELEMENTWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.SiLU, nn.Hardswish, nn.Hardsigmoid,
    nn.GELU, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.Mish, nn.Identity, nn.Dropout,
    nn.Dropout2d, nn.BatchNorm2d,
)
#: Functions and tensor methods that are elementwise (with broadcasting over scalars only).
ELEMENTWISE_FUNCTIONS: frozenset[Any] = frozenset({
    operator.add, operator.iadd, operator.mul, operator.imul, operator.sub, torch.add, torch.mul,
    torch.sub, torch.relu, torch.sigmoid, torch.tanh, F.relu, F.relu6, F.hardtanh, F.silu,
    F.hardswish, F.gelu, F.leaky_relu,
})
ELEMENTWISE_METHODS = frozenset({"relu", "relu_", "add", "add_", "mul", "mul_", "sigmoid",
                                 "sigmoid_", "tanh", "tanh_"})
#: Kinds of window op a :class:`BlockNode` can be.
WINDOW_KINDS = ("conv", "max_pool", "avg_pool")


@dataclass(frozen=True)
class BlockNode:
    """One layer of a fused block, with what tiling and pricing need and nothing runnable.

    ``inputs`` are the tensor producers (earlier block nodes or the block's input);
    ``window``/``kind`` are set for convolutions and pooling, None for elementwise layers;
    ``shape`` is the output's (channels, height, width)."""

    name: str
    op: str
    inputs: tuple[str, ...]
    shape: tuple[int, int, int]
    flops: int
    param_bytes: int
    elem_bytes: int
    kind: str | None = None
    window: Window | None = None

    @property
    def map_area(self) -> int:
        return self.shape[1] * self.shape[2]

    def bytes_of(self, area: int) -> int:
        """Bytes of ``area`` pixels of this node's output, all channels (batch 1)."""
        return area * self.shape[0] * self.elem_bytes


@dataclass(frozen=True)
class FusedBlock:
    """A run of fusable layers from one input value to one output value.

    ``input`` names the value entering the block (the model's input for a prefix, any node for
    a single layer split layer-wise); ``depth`` counts its convolution and pooling layers, the
    unit DeepThings' fused depth is given in."""

    model: str
    input: str
    input_shape: tuple[int, int, int]
    input_elem_bytes: int
    nodes: tuple[BlockNode, ...]

    @property
    def output(self) -> BlockNode:
        return self.nodes[-1]

    @cached_property
    def depth(self) -> int:
        return sum(1 for n in self.nodes if n.window is not None)

    @cached_property
    def flops(self) -> int:
        return sum(n.flops for n in self.nodes)

    @cached_property
    def param_bytes(self) -> int:
        return sum(n.param_bytes for n in self.nodes)

    @cached_property
    def names(self) -> list[str]:
        return [n.name for n in self.nodes]

    @cached_property
    def _index(self) -> dict[str, BlockNode]:
        return {n.name: n for n in self.nodes}

    @cached_property
    def last_read(self) -> dict[str, int]:
        """Index of the last layer reading each value (the block's output: past the end)."""
        last = {self.input: -1}
        for i, node in enumerate(self.nodes):
            last[node.name] = len(self.nodes)
            for producer in node.inputs:
                last[producer] = i
        return last

    @cached_property
    def live_steps(self) -> tuple[tuple[str, Window | None, int, int, tuple[str, ...]], ...]:
        """Per layer, what walking a tile's live feature maps needs (graph.tiles.
        peak_activation_bytes; a planner walks thousands of tiles of one block): its name, its
        window, the bytes per pixel of the value its window reads and of its output, and the
        values read for the last time by it (once each)."""
        last = self.last_read
        steps = []
        for i, node in enumerate(self.nodes):
            frees = tuple(dict.fromkeys(p for p in node.inputs if last[p] == i))
            source = node.inputs[0] if node.window is not None else None
            steps.append((node.name, node.window, 0 if source is None else
                          self.shape_of(source)[0] * self.elem_bytes_of(source),
                          node.shape[0] * node.elem_bytes, frees))
        return tuple(steps)

    def node(self, name: str) -> BlockNode:
        try:
            return self._index[name]
        except KeyError:
            raise GraphError(f"fused block of model {self.model!r} has no layer {name!r}") \
                from None

    def shape_of(self, name: str) -> tuple[int, int, int]:
        return self.input_shape if name == self.input else self.node(name).shape

    def elem_bytes_of(self, name: str) -> int:
        return self.input_elem_bytes if name == self.input else self.node(name).elem_bytes


class NotFusable(Exception):
    """Internal: why one node cannot join a fused block (the message is user-facing)."""


def fusable_prefix(graph: Graph) -> tuple[list[BlockNode], str]:
    """The longest run of fusable nodes from the model's input, and why it stops there."""
    if not graph.traced or len(graph.placeholders) != 1:
        why = ("it could not be traced into layers" if not graph.traced
               else f"it takes {len(graph.placeholders)} inputs")
        return [], why
    fx_nodes = {n.name: n for n in graph.module.graph.nodes}
    inside = {graph.placeholders[0]}
    prefix: list[BlockNode] = []
    for info in graph.nodes:
        if info.kind == "placeholder":
            continue
        try:
            prefix.append(describe_node(graph, info, fx_nodes[info.name], inside))
        except NotFusable as exc:
            return prefix, str(exc)
        inside.add(info.name)
    return prefix, "it is fusable to its output"


def single_value_cuts(graph: Graph) -> list[str]:
    """Nodes after which only their own value is still needed: where a model can be cut with
    one tensor crossing (never inside a residual block)."""
    order = {info.name: i for i, info in enumerate(graph.nodes)}
    last_use = {info.name: order[info.name] for info in graph.nodes}
    for producer, consumer in graph.edges:
        last_use[producer] = max(last_use[producer], order[consumer])
    for out in graph.outputs:
        last_use[out] = len(graph.nodes)
    cuts = []
    alive: set[str] = set()
    for i, info in enumerate(graph.nodes):
        alive = {name for name in alive if last_use[name] > i}
        if last_use[info.name] > i:
            alive.add(info.name)
        if info.kind != "placeholder" and alive == {info.name}:
            cuts.append(info.name)
    return cuts


def cut_depths(graph: Graph) -> dict[int, int]:
    """Fused depth -> number of prefix nodes in the block of that depth.

    A depth is offered only where exactly one value crosses the cut; of the cuts with the same
    number of window layers the last is kept, so a block ends after the activation that follows
    its last convolution rather than before it."""
    prefix, _ = fusable_prefix(graph)
    cuts = set(single_value_cuts(graph))
    depths: dict[int, int] = {}
    depth = 0
    for count, block_node in enumerate(prefix, start=1):
        depth += block_node.window is not None
        if depth and block_node.name in cuts:
            depths[depth] = count
    return depths


def fused_block(graph: Graph, depth: int | None = None) -> FusedBlock:
    """The fused block of ``depth`` window layers (the deepest available when None).

    Raises :class:`GraphError` naming the model when it has no fusable prefix, or the valid
    depths when ``depth`` is not one of them."""
    if depth is None:
        depth = max(cut_depths(graph), default=0)  # none: fused_blocks says why
    return fused_blocks(graph, [depth])[0]


def fused_blocks(graph: Graph, ends: Sequence[int]) -> list[FusedBlock]:
    """Consecutive fused blocks ending at the fused depths ``ends`` (rising): DeeperThings
    (Stahl et al. 2021) splits the fusable prefix into several blocks, each tiled with its own
    grid, the tiles' outputs gathered and stitched between them, which bounds how far a
    tile's halo grows. Block b runs the layers from depth ``ends[b-1]`` to ``ends[b]`` on
    block b-1's output; a block's :attr:`~FusedBlock.depth` counts its own window layers.

    Raises :class:`GraphError` naming the model when it has no fusable prefix, or the valid
    depths when an end is not one of them."""
    depths = cut_depths(graph)
    if not depths:
        _, why = fusable_prefix(graph)
        raise GraphError(
            f"model {graph.name!r} has no fusable prefix for tile partitioning: {why}; fused "
            "tiles need the model to start with convolution or pooling layers"
        )
    for depth in ends:
        if depth not in depths:
            raise GraphError(
                f"fused depth {depth} is not available for model {graph.name!r}: a cut must "
                f"leave one tensor (not inside a residual block); valid fused depths: "
                f"{_ranges(depths)}")
    if not ends or any(b <= a for a, b in itertools.pairwise(ends)):
        raise GraphError(f"fused block ends {list(ends)} of model {graph.name!r}: expected "
                         "one or more fused depths, each deeper than the one before")
    prefix, _ = fusable_prefix(graph)
    source = graph.node(graph.placeholders[0])
    blocks, start = [], 0
    for depth in ends:
        stop = depths[depth]
        blocks.append(_block(graph.name, source, prefix[start:stop]))
        source, start = graph.node(prefix[stop - 1].name), stop
    return blocks


def chain_block(graph: Graph, names: Sequence[str]) -> FusedBlock:
    """A block of the named consecutive nodes fed by one outside value (a layer-wise unit)."""
    fx_nodes = {n.name: n for n in graph.module.graph.nodes}
    first = graph.node(names[0])
    if len(first.inputs) != 1:
        raise GraphError(f"layer {names[0]!r} of model {graph.name!r} has {len(first.inputs)} "
                         "tensor inputs; a split layer needs exactly one")
    inside = {first.inputs[0]}
    nodes = []
    for name in names:
        try:
            nodes.append(describe_node(graph, graph.node(name), fx_nodes[name], inside))
        except NotFusable as exc:
            raise GraphError(
                f"cannot split model {graph.name!r} at layer {name!r}: {exc}") from None
        inside.add(name)
    return _block(graph.name, graph.node(first.inputs[0]), nodes)


def _block(model: str, source: NodeInfo, nodes: list[BlockNode]) -> FusedBlock:
    shape = _map_shape(source)
    if shape is None:
        raise GraphError(f"value {source.name!r} of model {model!r} is not a 4-D feature map")
    numel = shape[0] * shape[1] * shape[2]
    batch = (source.out_shape or (1,))[0]
    return FusedBlock(model, source.name, shape, source.out_bytes // max(1, numel * batch),
                      tuple(nodes))


def describe_node(graph: Graph, info: NodeInfo, node: fx.Node, inside: set[str]) -> BlockNode:
    """``info`` as a :class:`BlockNode` if it can join a block whose values so far are
    ``inside``; else :class:`NotFusable` saying why, in the model's words."""
    label = f"layer {info.name!r} ({info.op})"
    shape = _map_shape(info)
    if shape is None:
        raise NotFusable(f"{label} does not produce a 4-D feature map")
    outside = [p for p in info.inputs if p not in inside]
    if outside:
        raise NotFusable(f"{label} reads {outside[0]!r}, which is outside the block")
    elem = info.out_bytes // max(1, (info.out_shape or (1,))[0] * shape[0] * shape[1] * shape[2])
    base = BlockNode(name=info.name, op=info.op, inputs=tuple(info.inputs), shape=shape,
                     flops=info.flops, param_bytes=info.param_bytes, elem_bytes=elem)
    if node.op == "call_module":
        module = graph.module.get_submodule(str(node.target))
        window = _window(module, label)
        if window is not None:
            return replace(base, kind=window[0], window=window[1])
        if not isinstance(module, ELEMENTWISE_MODULES):
            raise NotFusable(f"{label} is not a convolution, pooling, batch-norm or "
                             "elementwise layer")
        if isinstance(module, nn.BatchNorm2d) and module.running_mean is None:
            raise NotFusable(f"{label} is a batch norm without running statistics")
        inplace = bool(getattr(module, "inplace", False))
    elif node.op == "call_function" and node.target in ELEMENTWISE_FUNCTIONS:
        _scalar_operands(node, label)
        inplace = node.target in (operator.iadd, operator.imul) or bool(
            node.kwargs.get("inplace", False))
    elif node.op == "call_method" and node.target in ELEMENTWISE_METHODS:
        _scalar_operands(node, label)
        inplace = str(node.target).endswith("_")
    else:
        raise NotFusable(f"{label} is not a convolution, pooling, batch-norm or elementwise layer")
    for producer in info.inputs:
        producer_shape = _map_shape(graph.node(producer))
        if producer_shape is None or producer_shape[1:] != shape[1:]:
            raise NotFusable(f"{label} combines maps of different sizes")
    if inplace and any(len(graph.consumers(p)) > 1 for p in info.inputs[:1]):
        raise NotFusable(f"{label} overwrites {info.inputs[0]!r} in place, which other layers "
                         "also read")
    return base


def _scalar_operands(node: fx.Node, label: str) -> None:
    """Elementwise calls may mix maps with Python scalars, not with anything else."""
    for arg in (*node.args, *node.kwargs.values()):
        if not isinstance(arg, fx.Node | int | float | bool | type(None)):
            raise NotFusable(f"{label} takes a {type(arg).__name__} operand")


def _window(module: nn.Module, label: str) -> tuple[str, Window] | None:
    """(kind, geometry) of a window module; None if it is not one; NotFusable if it is one
    whose padding a tile cannot reproduce."""
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros":
            raise NotFusable(f"{label} pads with {module.padding_mode!r}, not zeros")
        if isinstance(module.padding, str) and module.padding != "valid":
            raise NotFusable(f"{label} uses padding={module.padding!r}")
        pad = (0, 0) if isinstance(module.padding, str) else _pair(module.padding)
        return "conv", Window(_pair(module.kernel_size), _pair(module.stride), pad,
                              _pair(module.dilation))
    if isinstance(module, nn.MaxPool2d):
        if module.return_indices:
            raise NotFusable(f"{label} returns indices")
        stride = module.stride if module.stride is not None else module.kernel_size
        return "max_pool", Window(_pair(module.kernel_size), _pair(stride),
                                  _pair(module.padding), _pair(module.dilation), fill="min")
    if isinstance(module, nn.AvgPool2d):
        if module.ceil_mode:
            raise NotFusable(f"{label} is a ceil-mode average pool")
        if not module.count_include_pad and _pair(module.padding) != (0, 0):
            raise NotFusable(f"{label} averages without counting its padding")
        stride = module.stride if module.stride is not None else module.kernel_size
        return "avg_pool", Window(_pair(module.kernel_size), _pair(stride),
                                  _pair(module.padding), (1, 1))
    return None


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    items = tuple(int(v) for v in value)
    return (items[0], items[0]) if len(items) == 1 else (items[0], items[1])


def _map_shape(info: NodeInfo) -> tuple[int, int, int] | None:
    shape = info.out_shape
    if shape is None or len(shape) != 4:
        return None
    return shape[1], shape[2], shape[3]


def _ranges(depths: dict[int, int]) -> str:
    return ", ".join(str(k) for k in sorted(depths))
