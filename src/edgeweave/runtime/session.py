"""One co-inference run, as `edgeweave infer` and the benchmarks do it.

Only this host is real, so tiers are emulated honestly: a device slower than this host gets its
compute stretched by time dilation (host GFLOP/s / device GFLOP/s, printed), and the servers run
at this host's speed, so the profile the planner sees gives edge and cloud this host's measured
latencies ("measured" latency source, hardware profile `this-host`). Links are shaped to the
fleet's rates. What is predicted is then what can physically happen, and the benchmark's
"predicted vs measured" compares like with like.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from edgeweave import formats
from edgeweave.graph import Graph
from edgeweave.plan import Plan, plan
from edgeweave.profile import Profile, retarget
from edgeweave.runtime.client import ClientOptions, CoInferenceClient, Result
from edgeweave.runtime.shaper import TraceReplay
from edgeweave.security import ClientTLS
from edgeweave.topology import BandwidthTrace, Fleet, HardwareProfile, Node, TierPath


def host_tier_path(fleet: Fleet, device: str | None, host_gflops: float) -> TierPath:
    """The fleet's device-edge-cloud path with edge and cloud replaced by this host's speed
    (they run here, undilated); the device keeps its own profile (it is dilated)."""
    path = fleet.tier_path(device)
    nodes = [path.nodes[0], *(_on_host(node, host_gflops) for node in path.nodes[1:])]
    return path.model_copy(update={"nodes": nodes})


def _on_host(node: Node, host_gflops: float) -> Node:
    hw = node.hardware.model_copy(update={
        "name": "this-host", "gflops": host_gflops, "op_overhead_ms": 0.0,
        "description": f"this host, standing in for {node.hardware.name}",
    })
    return node.model_copy(update={"hardware": HardwareProfile(**hw.model_dump())})


def _host_gflops(profile: Profile) -> float:
    """The host speed a profile was measured at (``profile`` records it)."""
    return float((profile.model_extra or {})["host"]["gflops"])


def emulated_fleet(fleet: Fleet, profile: Profile) -> Fleet:
    """The fleet as a local lab runs it: end devices keep their hardware (they are dilated),
    edge and cloud servers run here at this host's speed (the profile's host GFLOP/s)."""
    host = _host_gflops(profile)
    nodes = [n if n.tier == "device" else _on_host(n, host) for n in fleet.nodes]
    return fleet.model_copy(update={"nodes": nodes})


def hardware_dilation(profile: Profile, hardware: HardwareProfile) -> float:
    """How much to stretch this host's compute to emulate ``hardware``: host GFLOP/s (recorded
    with the profile) over the hardware's, at least 1."""
    return max(1.0, _host_gflops(profile) / hardware.gflops)


def emulated_profile(profile: Profile, fleet: Fleet, device: str | None = None) -> Profile:
    host = _host_gflops(profile)
    prof = profile.model_copy(update={"latency_source": "measured"})
    return retarget(prof, host_tier_path(fleet, device, host), fleet.name)


def device_dilation(profile: Profile, fleet: Fleet, device: str | None = None) -> float:
    """How much to stretch this host's compute to emulate the fleet's device, from the host
    speed recorded with the profile. (Re-measuring the host's speed at run time was tried and
    made it worse: a convolution's speed does not track a memory-bound FC layer's.)"""
    return hardware_dilation(profile, fleet.tier_path(device).nodes[0].hardware)


@dataclass
class RunSummary:
    plan: Plan
    results: list[Result]
    dilation: float
    switches: list[dict[str, Any]] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(r.total_ms for r in self.results)

    @property
    def median_predicted_now_ms(self) -> float:
        """The runtime's own per-request predictions (load factors applied), median."""
        return statistics.median(r.predicted_now_ms for r in self.results)

    def median_segments(self) -> dict[str, float]:
        keys = {k for r in self.results for k in r.segments}
        return {k: statistics.median(r.segments.get(k, 0.0) for r in self.results)
                for k in sorted(keys)}

    def to_json(self) -> dict[str, Any]:
        last = self.results[-1].predicted if self.results else {}
        return {
            formats.FIELD: formats.RUNTIME_RUN,
            "model": self.plan.model, "fleet": self.plan.fleet, "mode": self.plan.mode,
            "device_dilation": self.dilation, "requests": len(self.results),
            "median_ms": self.median_ms, "predicted_ms": self.plan.predicted["total_ms"],
            "predicted_online_ms": self.median_predicted_now_ms,
            "median_segments": self.median_segments(),
            # what the plan in force at the last request predicted, per segment (as printed)
            "predicted_segments": {k: v for k, v in last.items() if k != "total_ms"},
            "fallbacks": sum(r.fallback for r in self.results),
            "fallback_notes": sorted({r.note for r in self.results if r.fallback and r.note}),
            "switches": self.switches,
            "per_request_ms": [r.total_ms for r in self.results],
            "per_request_mode": [r.plan_mode for r in self.results],
            "per_request_fallback": [r.fallback for r in self.results],
        }


def run(graph: Graph, chosen: Plan, edge_target: str | Sequence[str] | None,
        inputs: list[torch.Tensor], *,
        dilation: float, token: str | None = None, tls: ClientTLS | None = None,
        options: ClientOptions | None = None, profile: Profile | None = None,
        warmup: int = 2, trace: BandwidthTrace | None = None) -> RunSummary:
    """Deploy, warm up, then send `inputs` one by one; with `trace`, the first hop's emulated
    bandwidth follows it over wall-clock time while the requests run."""
    opts = options or ClientOptions()
    opts.device_dilation = dilation
    client = CoInferenceClient(graph, chosen, edge_target, token=token, tls=tls, options=opts,
                               profile=profile)
    if client.deployment.route:
        client.deploy(inputs[0])
    for _ in range(warmup):  # TorchScript specialises on its first calls
        client.infer(inputs[0])
    replay = None
    if trace is not None and chosen.hop_names():
        hop = chosen.hop_names()[0]
        replay = TraceReplay(trace, lambda mbps: client.set_link_mbps(hop, mbps))
    try:
        results = [client.infer(x) for x in inputs]
    finally:
        if replay is not None:
            replay.stop()
    return RunSummary(client.deployment.plan, results, dilation, client.switches)


def plan_for(profile: Profile, fleet: Fleet, objective: str = "latency",
             mbps: float | None = None, device: str | None = None,
             codecs: tuple[str, ...] = ("none",)) -> tuple[Profile, Plan]:
    prof = emulated_profile(profile, fleet, device)
    if mbps is not None:
        prof = prof.with_link(prof.hop_names()[0], mbps=mbps)
    return prof, plan(prof, objective, codecs=codecs)
