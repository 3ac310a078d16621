"""A profile from FLOPs alone: no measurement, for tests and for planning sweeps over many
fleets where measuring every model would dominate.

The host is a notional 1 GFLOP/s machine, so each node's host latency is its MFLOPs in ms, and
:func:`edgeweave.profile.build.retarget` scales it to every tier's effective GFLOP/s as it does a
measured profile. Memory-bound layers (activations, batch norm, adds) are priced as their FLOPs
only, so this profile underestimates them; it is labelled ``latency_source: analytic`` and a
benchmark using it must say so.
"""

from __future__ import annotations

from edgeweave.graph import Graph
from edgeweave.profile.build import retarget
from edgeweave.profile.schema import DevicePower, NodeCost, Profile
from edgeweave.topology import Fleet

#: The notional host's speed: 1 GFLOP/s, so 1 MFLOP costs 1 ms on it.
REFERENCE_GFLOPS = 1.0


def analytic_profile(graph: Graph, fleet: Fleet, device: str | None = None) -> Profile:
    """``graph`` priced by FLOPs on ``fleet``'s device-edge-cloud path from ``device``."""
    path = fleet.tier_path(device)
    nodes = [
        NodeCost(
            name=n.name, op=n.op, flops=n.flops, param_bytes=n.param_bytes,
            out_bytes=n.out_bytes, latency_ms={}, energy_j={}, kind=n.kind,
            out_shape=None if n.out_shape is None else list(n.out_shape),
            host_ms=n.flops / (REFERENCE_GFLOPS * 1e6), host_pred_ms=n.flops / 1e6,
        )
        for n in graph.nodes
    ]
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
        host={"gflops": REFERENCE_GFLOPS, "machine": "notional 1 GFLOP/s reference"},
        latency_source="analytic",
        capture={"traced": graph.traced, "fallback_reason": graph.fallback_reason},
    )
    return retarget(prof, path)
