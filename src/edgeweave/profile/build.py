"""Graph + fleet -> Profile: measure on this host, regress, scale to each tier's hardware.

Tier latency = host-predicted latency x (host GFLOP/s / tier GFLOP/s) + the tier's per-operator
overhead (for operators that compute). Both GFLOP/s figures are effective speeds on the same
reference convolution, so the ratio is like for like. Host-predicted latency comes from the
per-layer-type regression (Neurosurgeon) by default, or from the direct measurement
(`latency_source="measured"`) when the host itself is one of the tiers.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeweave.errors import ProfileError
from edgeweave.graph import Graph, NodeInfo, capture
from edgeweave.heap import keep_heap
from edgeweave.profile.activations import codec_bytes
from edgeweave.profile.measure import IDLE_S, PROFILE_THREADS, measure, measure_calibrated
from edgeweave.profile.regression import LatencyModel, Sample, mape
from edgeweave.profile.schema import DevicePower, LinkSpec, NodeCost, Profile
from edgeweave.topology import Fleet, HardwareProfile, TierPath

LATENCY_SOURCES = ("regression", "measured")


def _calibration_layers() -> list[tuple[nn.Module, tuple[int, ...]]]:
    """A sweep of single layers spanning the sizes of the model zoo, so each layer type's
    regression sees more than one model's worth of shapes."""
    convs = [(3, 32, 3, 112, 2, 1), (16, 32, 3, 56, 1, 1), (32, 64, 3, 28, 1, 1),
             (64, 64, 3, 56, 1, 1), (64, 128, 1, 28, 1, 1), (128, 128, 3, 14, 1, 1),
             (256, 256, 3, 7, 1, 1), (32, 32, 3, 56, 1, 32), (96, 96, 3, 28, 1, 96),
             (64, 192, 5, 14, 1, 1), (512, 512, 1, 7, 1, 1), (3, 64, 7, 112, 2, 1)]
    layers: list[tuple[nn.Module, tuple[int, ...]]] = [
        (nn.Conv2d(ci, co, k, stride=s, padding=k // 2, groups=g), (1, ci, hw, hw))
        for ci, co, k, hw, s, g in convs
    ]
    layers += [(nn.Linear(i, o), (1, i)) for i, o in [(256, 128), (1024, 1000), (4096, 1024),
                                                        (512, 10), (2048, 2048)]]
    for c, hw in [(64, 56), (128, 28), (256, 14), (32, 112)]:
        layers += [
            (nn.MaxPool2d(3, 2, 1), (1, c, hw, hw)),
            (nn.BatchNorm2d(c), (1, c, hw, hw)),
            (nn.ReLU(), (1, c, hw, hw)),
            (_Residual(), (1, c, hw, hw)),
        ]
    layers += [(nn.AdaptiveAvgPool2d(1), (1, 512, 7, 7)), (nn.AvgPool2d(2), (1, 64, 28, 28))]
    return layers


class _Residual(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + x


def _samples(graph: Graph, times: dict[str, float], gflops: float) -> list[Sample]:
    """Latencies normalised to a 1 GFLOP/s reference machine (ms x the host's GFLOP/s measured
    alongside), so samples taken under different load on a shared host are comparable."""
    return [
        Sample(n.op, n.flops, n.in_bytes, n.out_bytes, times[n.name] * gflops)
        for n in graph.nodes
        if n.kind != "placeholder"
    ]


def calibration_samples(warmup: int = 2, repeats: int = 7) -> list[Sample]:
    out: list[Sample] = []
    for layer, shape in _calibration_layers():
        # wrapped so the layer is a leaf call_module, exactly as it appears inside a model
        g = capture(nn.Sequential(layer).eval(), shape, name=type(layer).__name__)
        times, gflops = measure(g, warmup, repeats)
        out += _samples(g, times, gflops)
    return out


def fit_latency_model(
    graph: Graph, times: dict[str, float], gflops: float, seed: int = 0, holdout: float = 0.3,
    calibration: list[Sample] | None = None,
) -> tuple[LatencyModel, dict[str, Any]]:
    """Fit on the calibration sweep plus 70% of the model's layers, report error on the other
    30%, then refit on everything for use. The model predicts ms on a 1 GFLOP/s reference
    machine (divide by a tier's GFLOP/s for its latency)."""
    calib = calibration_samples() if calibration is None else calibration
    own = _samples(graph, times, gflops)
    rng = np.random.default_rng(seed)
    test_mask = rng.random(len(own)) < holdout
    train = calib + [s for s, t in zip(own, test_mask, strict=True) if not t]
    test = [s for s, t in zip(own, test_mask, strict=True) if t]
    heldout = LatencyModel.fit(train)
    per_class: dict[str, dict[str, float]] = {}
    for cls in sorted({s.cls for s in own}):
        cls_test = [s for s in test if s.cls == cls]
        per_class[cls] = {
            "n_train": sum(1 for s in train if s.cls == cls),
            "n_test": len(cls_test),
            "mape_pct": mape(heldout, cls_test),
        }
    computing = [s for s in test if s.cls != "shape"]
    report = {
        "method": "per-layer-type non-negative least squares on (FLOPs, in/out bytes), "
                  "relative-error weighted (Neurosurgeon-style)",
        "heldout_fraction": holdout,
        "heldout_layers": len(computing),
        "heldout_mape_pct": mape(heldout, computing),
        "heldout_total_error_pct": _total_error(heldout, computing),
        "per_class": per_class,
        "calibration_layers": len(calib),
    }
    return LatencyModel.fit(calib + own), report


def _total_error(model: LatencyModel, samples: list[Sample]) -> float:
    """Error of the SUM over held-out layers: what a split decision actually depends on."""
    true = sum(s.ms for s in samples)
    if true <= 0:
        return float("nan")
    pred = sum(model.predict(s.op, s.flops, s.in_bytes, s.out_bytes) for s in samples)
    return abs(pred - true) / true * 100.0


def profile_graph(
    graph: Graph,
    fleet: Fleet,
    device: str | None = None,
    warmup: int = 3,
    repeats: int = 10,
    latency_source: str = "regression",
    seed: int = 0,
    calibration: list[Sample] | None = None,
    idle_s: float = IDLE_S,
) -> Profile:
    """Measure `graph` here and predict it on each tier of `fleet`'s device-edge-cloud path.
    `calibration` reuses a :func:`calibration_samples` sweep (profiling several models);
    `idle_s` is the idle gap before each timed run (see :mod:`edgeweave.profile.measure`)."""
    if latency_source not in LATENCY_SOURCES:
        raise ProfileError(
            f"latency source {latency_source!r}: expected one of {', '.join(LATENCY_SOURCES)}"
        )
    if warmup < 0 or repeats < 1 or idle_s < 0:
        raise ProfileError(f"need warmup >= 0, repeats >= 1 and idle_s >= 0, got {warmup}, "
                           f"{repeats} and {idle_s}")
    path = fleet.tier_path(device)
    keep_heap()  # as the runtime's processes do: the profile and the runtime agree
    started = time.perf_counter()
    times, gflops, whole_ms = measure_calibrated(graph, warmup, repeats, seed, idle_s=idle_s)
    wire = codec_bytes(graph, seed)
    model, report = fit_latency_model(graph, times, gflops, seed, calibration=calibration)
    elapsed = time.perf_counter() - started
    node_sum = sum(times[n.name] for n in graph.nodes if n.kind != "placeholder")
    # node times scaled so they add up to the compiled whole-model run the runtime executes
    scale = whole_ms / node_sum if whole_ms and node_sum > 0 else 1.0
    host_ms = {}
    for n in graph.nodes:
        predicted = model.predict(n.op, n.flops, n.in_bytes, n.out_bytes) / gflops
        host_ms[n.name] = {"measured": times[n.name] * scale, "regression": predicted * scale}
    return assemble_profile(
        graph, fleet, path,
        {n.name: host_ms[n.name]["measured"] for n in graph.nodes},
        {n.name: 0.0 if n.kind == "placeholder" else host_ms[n.name]["regression"]
         for n in graph.nodes},
        wire_bytes=wire,
        host={
            "gflops": gflops,
            "torch_threads": PROFILE_THREADS,
            "node_sum_ms": node_sum,
            "whole_model_ms": whole_ms,
            "whole_model_scale": scale,
            "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
        },
        latency_source=latency_source,
        regression=report,
        measurement={"warmup": warmup, "repeats": repeats, "statistic": "median",
                     "seed": seed, "idle_s": idle_s, "profiling_s": elapsed},
    )


def _node_extras(n: NodeInfo, host_ms: Mapping[str, float], host_pred_ms: Mapping[str, float],
                 wire_bytes: Mapping[str, Any] | None) -> dict[str, Any]:
    """A NodeCost's fields beyond the schema's declared ones (it allows extras)."""
    return {"kind": n.kind, "out_shape": None if n.out_shape is None else list(n.out_shape),
            "host_ms": host_ms[n.name], "host_pred_ms": host_pred_ms[n.name],
            **({} if wire_bytes is None else {"codec_bytes": wire_bytes.get(n.name)})}


def assemble_profile(graph: Graph, fleet: Fleet, path: TierPath, host_ms: Mapping[str, float],
                     host_pred_ms: Mapping[str, float], *,
                     wire_bytes: Mapping[str, Any] | None = None, **fields: Any) -> Profile:
    """``graph``'s Profile on ``path`` from each node's host latency (``host_ms``) and the
    regression's prediction of it (``host_pred_ms``): the one place graph nodes become
    NodeCosts, for measured and analytic profiles alike. ``fields``: the profile's ``host``,
    ``latency_source`` and what produced it."""
    nodes = [
        NodeCost(
            name=n.name,
            op=n.op,
            flops=n.flops,
            param_bytes=n.param_bytes,
            out_bytes=n.out_bytes,
            latency_ms={},
            energy_j={},
            **_node_extras(n, host_ms, host_pred_ms, wire_bytes),
        )
        for n in graph.nodes
    ]
    # fields beyond the schema's declared ones (Profile and NodeCost allow extras)
    capture: dict[str, Any] = {
        "capture": {"traced": graph.traced, "fallback_reason": graph.fallback_reason}}
    prof = Profile(
        model=graph.name,
        fleet=fleet.name,
        input_bytes=sum(n.out_bytes for n in graph.nodes if n.kind == "placeholder"),
        tiers=[nd.tier for nd in path.nodes],
        nodes=nodes,
        edges=graph.edges,
        output=graph.outputs[0] if len(graph.outputs) == 1 else list(graph.outputs),
        links={},
        device_power=DevicePower(compute_w=0, idle_w=0, tx_w=0, rx_w=0),
        inputs=graph.placeholders,
        **fields,
        **capture,
    )
    return retarget(prof, path)


def retarget(profile: Profile, path: TierPath, fleet_name: str | None = None) -> Profile:
    """The same measured model on another fleet: recompute tier latencies, energies and links
    from the stored host figures, without running anything."""
    host_of = host_latencies(profile)
    nodes = []
    for n in profile.nodes:
        lat, energy = {}, {}
        for tier_node in path.nodes:
            hw = tier_node.hardware
            ms = node_latency_ms(host_of[n.name], profile, hw, n.op, n.flops)
            lat[tier_node.tier] = ms
            energy[tier_node.tier] = ms * hw.power_compute_w / 1000.0
        nodes.append(n.model_copy(update={"latency_ms": lat, "energy_j": energy}))
    dev = path.nodes[0].hardware
    return profile.model_copy(
        update={
            "nodes": nodes,
            "fleet": fleet_name or profile.fleet,
            "tiers": [nd.tier for nd in path.nodes],
            "tier_nodes": {nd.tier: nd.name for nd in path.nodes},
            "links": {
                h: LinkSpec(mbps=lk.mbps, rtt_ms=lk.rtt_ms)
                for h, lk in zip(path.hop_names, path.links, strict=True)
            },
            "device_power": DevicePower(
                compute_w=dev.power_compute_w, idle_w=dev.power_idle_w,
                tx_w=dev.power_tx_w, rx_w=dev.power_rx_w,
            ),
        }
    ).check()


def host_latencies(profile: Profile) -> dict[str, float]:
    """Each node's latency on the profiling host, from the source the profile was built with
    (measured, or the per-layer-type regression)."""
    extra = profile.model_extra or {}
    if "host" not in extra:
        raise ProfileError(f"profile of {profile.model}: no host measurements to retarget from")
    key = "host_ms" if extra.get("latency_source", "regression") == "measured" else "host_pred_ms"
    return {n.name: float((n.model_extra or {}).get(key, 0.0)) for n in profile.nodes}


def node_latency_ms(host_ms: float, profile: Profile, hardware: HardwareProfile, op: str,
                    flops: int) -> float:
    """A node's latency on ``hardware``: host latency x (host GFLOP/s / its GFLOP/s) plus its
    per-operator overhead for operators that compute (the rule in this module's docstring)."""
    if op == "placeholder":
        return 0.0
    host = float((profile.model_extra or {})["host"]["gflops"])
    return host_ms * host / hardware.gflops + (hardware.op_overhead_ms if flops > 0 else 0.0)


def latencies_on(profile: Profile, hardware: HardwareProfile) -> dict[str, float]:
    """Every node's latency on ``hardware`` (a device of a cluster that is not the tier the
    profile's device column describes)."""
    host_of = host_latencies(profile)
    return {n.name: node_latency_ms(host_of[n.name], profile, hardware, n.op, n.flops)
            for n in profile.nodes}
