"""The record of a compressed variant (how it was derived, what it costs: nonzero weights,
serialized bytes, FLOPs) and the layer lookups every compression step shares."""

from __future__ import annotations

import copy
import io
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

from edgeweave.errors import EdgeWeaveError

# --------------------------------------------------------------------------------------------
# The record and its measurements
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Variant:
    """One compressed (or baseline) model.

    ``params`` counts nonzero weights (so it drops with unstructured pruning); ``size_bytes``
    is the length of the serialized ``state_dict`` (int8 weights are counted packed, as stored);
    ``zipped_bytes`` is that after zlib, which is where unstructured sparsity pays off on disk.
    """

    name: str
    recipe: dict[str, Any]
    module: nn.Module = field(repr=False, compare=False)
    params: int
    size_bytes: int
    zipped_bytes: int

    @classmethod
    def of(cls, name: str, module: nn.Module, recipe: dict[str, Any] | None = None) -> Variant:
        module.eval()
        blob = serialized(module)
        return cls(name, dict(recipe or {}), module, nonzero_params(module), len(blob),
                   len(zlib.compress(blob, 6)))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.module(x)

    def flops(self, input_shape: Sequence[int]) -> int:
        return count_flops(self.module, input_shape)


def baseline(model: nn.Module, name: str = "fp32") -> Variant:
    """The uncompressed model as a variant (a copy), to compare the others against."""
    return Variant.of(name, copy.deepcopy(model), {"method": "none"})


def serialized(module: nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    return buf.getvalue()


def _weights_of(module: nn.Module) -> list[torch.Tensor]:
    """Weight and bias tensors of every submodule, float or quantized (packed ones unpacked)."""
    seen: set[int] = set()
    alive: list[torch.Tensor] = []
    out = []
    for m in module.modules():
        tensors: list[torch.Tensor] = list(m.parameters(recurse=False))
        for attr in ("weight", "bias"):
            if attr in m._parameters:
                continue
            value = getattr(m, attr, None)
            if callable(value) and not isinstance(value, nn.Module):
                try:
                    value = value()
                except Exception:  # not an accessor after all
                    value = None
            if isinstance(value, torch.Tensor):
                tensors.append(value)
        for t in tensors:
            if id(t) not in seen:
                seen.add(id(t))
                alive.append(t)  # ids are only unique while the objects live
                out.append(t.dequantize() if t.is_quantized else t.detach())
    return out


def nonzero_params(module: nn.Module) -> int:
    return sum(int(torch.count_nonzero(t)) for t in _weights_of(module))


def total_params(module: nn.Module) -> int:
    return sum(t.numel() for t in _weights_of(module))


def count_flops(module: nn.Module, input_shape: Sequence[int]) -> int:
    """Dense FLOPs (2 x multiply-accumulates) of conv- and linear-like layers, float or
    quantized, for one forward pass on a zero input of ``input_shape``."""
    total = 0

    def hook(m: Any, _inp: Any, out: torch.Tensor) -> None:  # duck-typed: float or quantized
        nonlocal total
        out = out.dequantize() if out.is_quantized else out
        if hasattr(m, "in_channels") and hasattr(m, "kernel_size"):
            k = math.prod(m.kernel_size) if isinstance(m.kernel_size, tuple) else m.kernel_size
            total += 2 * out.numel() * (m.in_channels // m.groups) * k
        elif hasattr(m, "in_features") and hasattr(m, "out_features"):
            total += 2 * (out.numel() // m.out_features) * m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in module.modules()
               if hasattr(m, "in_features") or hasattr(m, "in_channels")]
    try:
        with torch.no_grad():
            module.eval()(torch.zeros(tuple(input_shape)))
    finally:
        for h in handles:
            h.remove()
    return total


_Layer = TypeVar("_Layer", bound=nn.Module)


def resolve_layer(model: nn.Module, layer: str, kinds: tuple[type[_Layer], ...], what: str
                  ) -> _Layer:
    try:
        m = model.get_submodule(layer)
    except AttributeError as exc:
        names = [n for n, mm in model.named_modules() if isinstance(mm, kinds)]
        raise EdgeWeaveError(f"layer {layer!r} not found in the model; {what} layers: {names}"
                             ) from exc
    if not isinstance(m, kinds):
        raise EdgeWeaveError(f"layer {layer!r} is a {type(m).__name__}, not a {what} layer")
    return m


def replace_layer(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)



def check_sparsity(sparsity: float, arg: str = "sparsity") -> None:
    if not isinstance(sparsity, int | float) or not 0 <= sparsity < 1:
        raise EdgeWeaveError(f"{arg} must be in [0, 1), got {sparsity!r}")
