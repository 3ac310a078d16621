"""Helpers around model selection: what one big/little inference costs on the fleet (for
:func:`edgeweave.adapt.biglittle.biglittle_report`), and profiling a model's variants so that
they compare (one shared regression, packed int8 weights counted)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgeweave.errors import PlanError
from edgeweave.plan.costs import Breakdown, CostModel
from edgeweave.plan.planner import plan
from edgeweave.plan.within import device_only, energy_j, total_ms
from edgeweave.profile.schema import Profile


@dataclass(frozen=True)
class EscalationCosts:
    """What one big/little inference costs on the fleet, per the planner's cost model:
    the little model on the device, and one escalation to the big model in ``big_mode``."""

    little_ms: float
    little_energy_j: float
    big_mode: str
    big_ms: float          #: the big model's compute
    transfer_ms: float     #: input up and answer down (0 when the big model is on the device)
    big_energy_j: float    #: the device's energy for one escalation
    big_placement: dict[str, str]


def big_little_costs(little: Profile, big: Profile, big_mode: str = "edge-only"
                     ) -> EscalationCosts:
    """Costs for :func:`edgeweave.adapt.biglittle.biglittle_report`: the little model
    device-only, the big one in ``big_mode`` (an inference mode, e.g. ``device-only`` or
    ``edge-only``), each the planner's best placement in that mode, priced by the cost model."""
    lp = plan(device_only(little), "latency")
    alt = plan(big, "latency").alternative(big_mode)
    if not alt.available or alt.placement is None:
        raise PlanError(f"{big.model}: mode {big_mode} is not available ({alt.note})")
    cm = CostModel(big)
    bd: Breakdown = cm.evaluate(cm.labels_of(alt.placement).tolist())
    return EscalationCosts(total_ms(lp), energy_j(lp), big_mode, bd.compute_ms, bd.transfer_ms,
                           bd.energy_j, dict(alt.placement))


def _packed_costs(module: Any, info: Any) -> tuple[int, int]:
    """FLOPs and parameter bytes of a node, counting the packed weights of dynamically
    quantized Linear layers (``torch.ao.nn.quantized.dynamic.Linear``), which the graph's cost
    rules see as parameter-free elementwise ops (their weights are not ``nn.Parameter``s)."""
    import torch

    flops, param_bytes = int(info.flops), int(info.param_bytes)
    if module is None or param_bytes or isinstance(module, torch.nn.Linear) \
            or not hasattr(module, "in_features") or not hasattr(module, "out_features"):
        return flops, param_bytes
    tensors = []
    for attr in ("weight", "bias"):
        value = getattr(module, attr, None)
        if callable(value) and not isinstance(value, torch.nn.Module):
            try:
                value = value()
            except Exception:  # not a packed-weight accessor after all
                value = None
        if isinstance(value, torch.Tensor):
            tensors.append(value)
    if not tensors:
        return flops, param_bytes
    batch = math.prod(info.out_shape[:-1]) if info.out_shape else 1
    out_f, in_f = int(module.out_features), int(module.in_features)
    has_bias = len(tensors) > 1
    return (2 * batch * in_f * out_f + (batch * out_f if has_bias else 0),
            sum(t.numel() * t.element_size() for t in tensors))


def profile_variants(modules: Mapping[str, Any], input_shape: Sequence[int], fleet: Any,
                     device: str | None = None, warmup: int = 1, repeats: int = 5,
                     seed: int = 0) -> dict[str, Profile]:
    """Profile variants of one model (name -> ``nn.Module``) on ``fleet`` so that they compare.

    Each variant is captured and profiled by :func:`edgeweave.profile.profile_graph`; then
    every node's host latency is re-predicted by ONE per-layer-type regression fitted on the
    calibration sweep (measured once, shared) plus all the variants' measured layers, at one
    host speed and one node-to-whole-model scale (the medians over the variants), and the tier
    latencies are recomputed with
    :func:`edgeweave.profile.retarget`. Profiled one by one on a shared host, identical layers
    of two variants can come out 2x apart (the host's load changes between them); with the
    shared regression they get identical predictions and variants differ only by what they
    compute. Packed int8 Linear weights are counted (see :func:`_packed_costs`).
    """
    from edgeweave.graph import capture
    from edgeweave.profile.build import calibration_samples, profile_graph, retarget
    from edgeweave.profile.regression import LatencyModel, Sample

    if not modules:
        raise PlanError("profile_variants: no modules given")
    shape = tuple(int(d) for d in input_shape)
    graphs = {name: capture(m, shape, name) for name, m in modules.items()}
    samples = calibration_samples()
    raw = {name: profile_graph(g, fleet, device, warmup, repeats, "regression", seed,
                               calibration=samples)
           for name, g in graphs.items()}
    samples = list(samples)
    speeds: dict[str, float] = {}
    scales: dict[str, float] = {}
    costs: dict[str, list[tuple[int, int]]] = {}
    for name, g in graphs.items():
        prof = raw[name]
        host = (prof.model_extra or {})["host"]
        speeds[name] = float(host["gflops"])
        scales[name] = float(host.get("whole_model_scale", 1.0))
        subs = dict(g.module.named_modules())
        costs[name] = []
        for info, node in zip(g.nodes, prof.nodes, strict=True):
            flops, pbytes = _packed_costs(subs.get(info.target) if info.kind == "call_module"
                                          else None, info)
            costs[name].append((flops, pbytes))
            if info.kind != "placeholder":
                # the interpreter's node time (before scaling to the whole-model run), at
                # 1 GFLOP/s, as the calibration samples are
                host_ms = float((node.model_extra or {})["host_ms"]) / scales[name]
                samples.append(Sample(info.op, flops, info.in_bytes, info.out_bytes,
                                      host_ms * speeds[name]))
    shared = LatencyModel.fit(samples)
    ref = statistics.median(speeds.values())
    ref_scale = statistics.median(scales.values())
    path = fleet.tier_path(device)
    out = {}
    for name, g in graphs.items():
        prof = raw[name]
        nodes = []
        for info, node, (flops, pbytes) in zip(g.nodes, prof.nodes, costs[name], strict=True):
            pred = 0.0 if info.kind == "placeholder" else \
                shared.predict(info.op, flops, info.in_bytes, info.out_bytes) / ref * ref_scale
            nodes.append(node.model_copy(update={"flops": flops, "param_bytes": pbytes,
                                                 "host_pred_ms": pred}))
        host = dict((prof.model_extra or {})["host"], gflops=ref)
        prof = prof.model_copy(update={
            "nodes": nodes, "host": host, "latency_source": "regression",
            "shared_regression": {"variants": list(graphs), "host_gflops": ref,
                                  "host_gflops_each": speeds, "whole_model_scale": ref_scale,
                                  "whole_model_scale_each": scales},
        })
        out[name] = retarget(prof, path, fleet.name)
    return out
