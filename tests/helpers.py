"""Shared fixtures: tiny profiles built in a few lines, so planner tests need no torch model."""

from __future__ import annotations

import functools
import itertools

from hypothesis import strategies as st

from edgeweave.profile.regression import Sample
from edgeweave.profile.schema import DevicePower, LinkSpec, NodeCost, Profile

TIERS = ("device", "edge", "cloud")


def make_profile(
    latencies: list[tuple[float, ...]],
    out_bytes: list[int],
    edges: list[tuple[int, int]],
    links: list[tuple[float, float]],
    output: int | None = None,
    param_bytes: list[int] | None = None,
    tiers: tuple[str, ...] = TIERS,
) -> Profile:
    """Node 0 is the input placeholder; node names are n0..n{k}."""
    names = [f"n{i}" for i in range(len(latencies))]
    nodes = [
        NodeCost(
            name=names[i],
            op="placeholder" if i == 0 else "op",
            flops=0,
            param_bytes=(param_bytes or [0] * len(names))[i],
            out_bytes=out_bytes[i],
            latency_ms=dict(zip(tiers, lat, strict=True)),
            energy_j={t: 0.0 for t in tiers},
        )
        for i, lat in enumerate(latencies)
    ]
    hops = [f"{a}-{b}" for a, b in itertools.pairwise(tiers)]
    return Profile(
        model="toy",
        fleet="toy",
        input_bytes=out_bytes[0],
        tiers=list(tiers),
        nodes=nodes,
        edges=[(names[a], names[b]) for a, b in edges],
        output=names[len(names) - 1 if output is None else output],
        links={h: LinkSpec(mbps=m, rtt_ms=r) for h, (m, r) in zip(hops, links, strict=True)},
        device_power=DevicePower(compute_w=4.0, idle_w=1.0, tx_w=2.0, rx_w=1.5),
        inputs=[names[0]],
    ).check()


@st.composite
def dag_profiles(draw, max_nodes: int = 8, chain: bool = False, n_tiers: int = 3):
    """Random DAG profiles: node i > 0 consumes a non-empty set of earlier nodes."""
    tiers = TIERS[:n_tiers]
    n = draw(st.integers(2, max_nodes))
    edges = []
    for i in range(1, n):
        if chain:
            producers = {i - 1}
        else:
            producers = draw(st.sets(st.integers(0, i - 1), min_size=1, max_size=3))
        edges += [(p, i) for p in sorted(producers)]
    lat = st.floats(0.0, 50.0, allow_nan=False)
    latencies = [tuple(0.0 for _ in tiers)] + [
        tuple(draw(lat) for _ in tiers) for _ in range(1, n)
    ]
    out_bytes = [draw(st.integers(0, 3_000_000)) for _ in range(n)]
    params = [draw(st.integers(0, 10_000_000)) for _ in range(n)]
    links = [
        (draw(st.sampled_from([1.0, 5.0, 20.0, 100.0])), draw(st.floats(0.0, 80.0)))
        for _ in range(n_tiers - 1)
    ]
    return make_profile(latencies, out_bytes, edges, links, param_bytes=params, tiers=tiers)


@functools.cache
def calibration() -> list[Sample]:
    """The profiler's calibration sweep (``profile_graph(calibration=None)`` measures it,
    with these defaults, on every call), measured once per test process: it is most of
    profiling a small model, several seconds a call on a loaded two-core host."""
    from edgeweave.profile.build import calibration_samples

    return calibration_samples()
