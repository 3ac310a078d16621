"""What a lossy activation codec at the cuts does to a model's answers (JALAD, Ko et al.).

Runs the split model in-process exactly as the runtime would ship it: every value crossing a
hop is encoded and decoded with that hop's codec (again at each further hop it crosses, as the
forwarding node re-encodes), and compares the final answers with the uncompressed model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from edgeweave.codec import get_codec
from edgeweave.graph.capture import Graph
from edgeweave.graph.split import Stage, split

TIERS = ("device", "edge", "cloud")


def run_with_codecs(graph: Graph, placement: Mapping[str, str], cuts: Mapping[str, str],
                    x: torch.Tensor, order: Sequence[str] = TIERS) -> Any:
    """The model's output when the values crossing each hop go through that hop's codec."""
    return _run(graph, split(graph, placement, order), placement, cuts, x, order)


def _run(graph: Graph, stages: list[Stage], placement: Mapping[str, str],
         cuts: Mapping[str, str], x: torch.Tensor, order: Sequence[str]) -> Any:
    level = {n: order.index(t) for n, t in placement.items()}
    env: dict[str, Any] = {graph.placeholders[0]: x}
    at: dict[str, int] = {graph.placeholders[0]: 0}
    with torch.inference_mode():
        for stage in stages:
            target = order.index(stage.key)
            for name in stage.inputs:
                while at.get(name, level[name]) < target:
                    k = at.get(name, level[name])
                    codec = get_codec(cuts.get(f"{order[k]}-{order[k + 1]}", "none"))
                    env[name] = codec.decode(codec.encode(env[name]))
                    at[name] = k + 1
            out = stage.module(*(env[n] for n in stage.inputs))
            env.update(zip(stage.outputs, out, strict=True))
            at.update({n: target for n in stage.outputs})
    outs = [env[o] for o in graph.outputs]
    return outs[0] if len(outs) == 1 else tuple(outs)


@dataclass(frozen=True)
class Fidelity:
    agreement: float  # top-1 agreement with the uncompressed model
    accuracy: float | None  # top-1 accuracy against labels, when given
    max_abs_error: float  # largest output difference


def fidelity(graph: Graph, placement: Mapping[str, str], cuts: Mapping[str, str],
             inputs: torch.Tensor, labels: torch.Tensor | None = None) -> Fidelity:
    """Agreement over a batch, one sample at a time (captured graphs may fix the batch size)."""
    agree, correct, worst = 0, 0, 0.0
    stages = split(graph, placement, TIERS)
    with torch.inference_mode():
        for i in range(len(inputs)):
            x = inputs[i : i + 1]
            ref = graph.module(x)
            got = _run(graph, stages, placement, cuts, x, TIERS)
            agree += int(ref.argmax(1).item() == got.argmax(1).item())
            if labels is not None:
                correct += int(got.argmax(1).item() == int(labels[i]))
            worst = max(worst, float((ref - got).abs().max()))
    n = max(1, len(inputs))
    return Fidelity(agree / n, None if labels is None else correct / n, worst)
