"""What each weight codec (`codec.weights`: raw, fp16, per-channel int8) costs a model: every
layer's bytes as uploaded, and the top-1 agreement of the model with its weights dequantized
against the exact model, which is what `plan.upload_codec` weighs against the upload time.

Agreement is measured, not assumed: on ``samples`` random inputs (seeded normal draws at the
model's input shape, one batch), the fraction whose top-1 class (argmax of the first output,
flattened per sample) is the exact model's. Random inputs are harder than real images (their
logits are closer together), so this errs on the pessimistic side.
"""

from __future__ import annotations

import copy

import torch

from edgeweave.codec.weights import WEIGHT_CODECS, encoded_nbytes, roundtrip
from edgeweave.codec.wire import dtype_name
from edgeweave.graph import Graph

#: Random inputs agreement is measured on (one batch).
SAMPLES = 64


def node_weights(graph: Graph) -> dict[str, list[str]]:
    """The state-dict names of each node's weights (a module's parameters and buffers, or the
    tensor a get_attr reads): what uploading that layer means."""
    names = list(graph.module.state_dict())
    out: dict[str, list[str]] = {}
    for node in graph.module.graph.nodes:
        if node.op in ("call_module", "get_attr"):
            target = str(node.target)
            out[node.name] = [n for n in names if n == target or n.startswith(target + ".")]
    return out


def upload_bytes(graph: Graph, codec: str) -> dict[str, int]:
    """Each node's weights' bytes on the link when uploaded as ``codec``."""
    state = graph.module.state_dict()
    return {node: sum(encoded_nbytes(codec, dtype_name(state[w].dtype), tuple(state[w].shape))
                      for w in weights)
            for node, weights in node_weights(graph).items()}


def weight_agreement(graph: Graph, codecs: tuple[str, ...] = WEIGHT_CODECS[1:],
                     samples: int = SAMPLES, seed: int = 0) -> dict[str, float]:
    """Top-1 agreement with the exact model of the model with its weights as each codec
    delivers them (see module doc)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((samples, *graph.input_shape[1:]), generator=gen)
    exact = _top1(graph.module, x)
    out = {}
    for codec in codecs:
        module = copy.deepcopy(graph.module)
        module.load_state_dict({k: roundtrip(codec, v)
                                for k, v in graph.module.state_dict().items()})
        out[codec] = float((_top1(module, x) == exact).float().mean())
        del module
    return out


def _top1(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        y = module.eval()(x)
    first = y[0] if isinstance(y, (tuple, list)) else y
    return first.flatten(1).argmax(dim=1)
