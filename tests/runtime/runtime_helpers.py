"""Runtime test helpers (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import torch

from edgeweave.plan import plan
from edgeweave.profile import profile_graph
from edgeweave.topology import load_fleet
from helpers import calibration

TOKEN = "test-token-0123456789abcdef"


_PROFILES: dict = {}  # id(graph) -> (graph, profile): profiling is the slow part


def three_tier_plan(graph, fractions=(0.3, 0.7), mbps=1000.0):
    """A monotone device/edge/cloud placement cutting the topological order at `fractions`."""
    if id(graph) not in _PROFILES:
        _PROFILES[id(graph)] = (graph, profile_graph(graph, load_fleet("pi4-wifi-edge-cloud"),
                                                     warmup=0, repeats=1,
                                                     calibration=calibration()))
    prof = _PROFILES[id(graph)][1]
    prof = prof.with_link("device-edge", mbps=mbps).with_link("edge-cloud", mbps=mbps, rtt_ms=0)
    prof = prof.with_link("device-edge", rtt_ms=0)
    base = plan(prof, "latency")
    n = len(graph.nodes)
    tier = {node.name: (0 if i < fractions[0] * n else 1 if i < fractions[1] * n else 2)
            for i, node in enumerate(graph.nodes)}
    for node in graph.nodes:
        for p in node.inputs:
            tier[node.name] = max(tier[node.name], tier[p])
    placement = {k: ("device", "edge", "cloud")[v] for k, v in tier.items()}
    return prof, base.model_copy(update={"placement": placement})


def local_output(graph, x):
    with torch.no_grad():
        return graph.module(x)
