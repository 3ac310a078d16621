"""What each node's output costs on the wire under each activation codec (JALAD, Ko et al.).

Lossless compression ratios depend on the data (a ReLU output full of zeros shrinks, a
logit vector does not), so they are measured on the model's real activations for the profiled
input rather than assumed; fp16 and int8 sizes follow from the dtype but are measured the same
way, through the very codecs the runtime uses.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

from edgeweave.codec import get_codec
from edgeweave.graph import Graph

#: Activation codecs a plan may choose per cut; the first is the identity.
CUT_CODECS = ("none", "fp16", "int8", "zstd", "fp16+zstd", "int8+zstd")


class _Recorder(fx.Interpreter):
    def __init__(self, module: fx.GraphModule):
        super().__init__(module)
        self.values: dict[str, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.values[n.name] = out
        return out


def activations(graph: Graph, x: torch.Tensor) -> dict[str, Any]:
    """Every node's output value for input `x`, by node name."""
    rec = _Recorder(graph.module)
    with torch.inference_mode():
        rec.run(x)
    return rec.values


def codec_bytes(graph: Graph, seed: int = 0, codecs: tuple[str, ...] = CUT_CODECS
                ) -> dict[str, dict[str, int]]:
    """node -> codec -> payload bytes of its output (only for nodes with one float tensor
    output; other values travel uncompressed)."""
    x = torch.randn(graph.input_shape, generator=torch.Generator().manual_seed(seed))
    values = activations(graph, x)
    table: dict[str, dict[str, int]] = {}
    for node in graph.nodes:
        value = values.get(node.name)
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            table[node.name] = {c: get_codec(c).encode(value).nbytes for c in codecs}
    return table
