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
from edgeweave.profile.build import assemble_profile
from edgeweave.profile.schema import Profile
from edgeweave.topology import Fleet

#: The notional host's speed: 1 GFLOP/s, so 1 MFLOP costs 1 ms on it.
REFERENCE_GFLOPS = 1.0


def analytic_profile(graph: Graph, fleet: Fleet, device: str | None = None) -> Profile:
    """``graph`` priced by FLOPs on ``fleet``'s device-edge-cloud path from ``device``."""
    path = fleet.tier_path(device)
    host_ms = {n.name: n.flops / (REFERENCE_GFLOPS * 1e6) for n in graph.nodes}
    return assemble_profile(
        graph, fleet, path, host_ms, {n.name: n.flops / 1e6 for n in graph.nodes},
        host={"gflops": REFERENCE_GFLOPS, "machine": "notional 1 GFLOP/s reference"},
        latency_source="analytic")
