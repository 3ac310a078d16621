"""Cache keys: a cheap embedding of the input in which similar inputs lie close together.

Cachier and FoggyCache key their caches on a feature vector of the input; Shadow Puppets
showed a small network's features beat hand-made ones. Two members here: the input itself
(``pixels``, the cheapest, area-downsampled) and the served model's own first layers
(``prefix:<node>``, any fx-traceable classifier from the zoo or the user's file), randomly
projected to a fixed dimension (Johnson-Lindenstrauss keeps distances). Every key is centred
and scaled to unit length, so a global lighting change (gain and offset) does not move it and
distances lie in [0, 2] whatever the embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch import nn

from edgeweave.errors import ServeError

#: Most values a ``pixels`` key keeps; larger inputs are area-downsampled to fit.
PIXEL_DIM = 256


class Embedder(Protocol):
    """``__call__(x)`` maps a batch ``(N, *input_shape[1:])`` to unit keys ``(N, dim)``."""

    name: str
    dim: int

    def __call__(self, x: torch.Tensor) -> np.ndarray: ...


def unit_keys(flat: np.ndarray) -> np.ndarray:
    """Centre each row and scale it to unit length (a constant row becomes all zeros)."""
    centred = flat - flat.mean(axis=1, keepdims=True)
    norm = np.sqrt(np.einsum("ij,ij->i", centred, centred))[:, None]
    centred /= np.maximum(norm, 1e-12)
    return centred.astype(np.float32, copy=False)


class PixelEmbedder:
    """The input, area-downsampled to at most :data:`PIXEL_DIM` values."""

    def __init__(self, input_shape: Sequence[int]):
        c, *spatial = input_shape[1:]
        factor = 1
        while c * int(np.prod([s // factor for s in spatial])) > PIXEL_DIM and \
                min(spatial) // (factor * 2) >= 1:
            factor *= 2
        self.factor = factor
        self.dim = c * int(np.prod([s // factor for s in spatial]))
        self.name = "pixels" if factor == 1 else f"pixels/{factor}"

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        if self.factor > 1:
            x = nn.functional.avg_pool2d(x.float(), self.factor)
        return unit_keys(x.detach().reshape(len(x), -1).numpy().astype(np.float32, copy=False))


class PrefixEmbedder:
    """The model's output at fx node ``node``, flattened and projected to ``dim`` values."""

    def __init__(self, module: nn.Module, node: str, input_shape: Sequence[int],
                 dim: int = 64, seed: int = 0):
        from torchvision.models.feature_extraction import (
            create_feature_extractor,
            get_graph_node_names,
        )

        names = get_graph_node_names(module)[1]
        if node not in names:
            raise ServeError(f"cache.embed names node {node!r}, which the model does not have; "
                             f"its first nodes are {', '.join(names[:8])}")
        self.prefix = create_feature_extractor(module, return_nodes={node: "key"}).eval()
        with torch.inference_mode():
            width = int(np.prod(self.prefix(torch.zeros(tuple(input_shape)))["key"].shape[1:]))
        self.dim = min(dim, width)
        rng = np.random.default_rng(seed)
        self.projection = (None if self.dim == width else
                           rng.normal(size=(width, self.dim)).astype(np.float32))
        self.name = f"prefix:{node}"

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            flat = self.prefix(x.float())["key"].reshape(len(x), -1).numpy()
        if self.projection is not None:
            flat = flat @ self.projection
        return unit_keys(flat)


def make_embedder(spec: str, module: nn.Module | None, input_shape: Sequence[int],
                  dim: int = 64, seed: int = 0) -> Embedder:
    """``pixels`` or ``prefix:<fx node name>`` (the served model's layers up to that node)."""
    if spec == "pixels":
        return PixelEmbedder(input_shape)
    if spec.startswith("prefix:") and module is not None:
        return PrefixEmbedder(module, spec.removeprefix("prefix:"), input_shape, dim, seed)
    raise ServeError(f"cache.embed must be 'pixels' or 'prefix:<node>' (a node of the served "
                     f"model), got {spec!r}")
