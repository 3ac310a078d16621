"""Random small profiles, for checking planners against brute force (tests and benchmarks).

Shapes follow real DNNs loosely: one input on the device, later nodes consuming one or two
earlier ones (skip connections, branches), costs falling from device to cloud, activations that
may shrink or grow, so optimal cuts land anywhere, including mid-branch.
"""

from __future__ import annotations

import itertools

import numpy as np

from edgeweave.profile.schema import DevicePower, LinkSpec, NodeCost, Profile

TIERS = ("device", "edge", "cloud")


def random_profile(
    seed: int,
    n_nodes: int,
    chain: bool = False,
    tiers: tuple[str, ...] = TIERS,
    max_fan_in: int = 2,
) -> Profile:
    rng = np.random.default_rng(seed)
    names = ["input"] + [f"n{i}" for i in range(1, n_nodes)]
    edges: list[tuple[str, str]] = []
    for i in range(1, n_nodes):
        if chain:
            producers = [i - 1]
        else:
            k = int(rng.integers(1, max_fan_in + 1))
            producers = sorted(set(rng.integers(0, i, size=k).tolist()) | {i - 1}
                               if rng.random() < 0.6 else set(rng.integers(0, i, size=k)))
        edges += [(names[p], names[i]) for p in producers]
    speed = np.array([1.0, 6.0, 40.0])[: len(tiers)]
    nodes = []
    for i, name in enumerate(names):
        base = 0.0 if i == 0 else float(rng.uniform(0.5, 30.0))
        lat = {t: base / speed[j] * float(rng.uniform(0.7, 1.3)) for j, t in enumerate(tiers)}
        nodes.append(
            NodeCost(
                name=name,
                op="placeholder" if i == 0 else "synthetic",
                flops=int(base * 1e7),
                param_bytes=0 if i == 0 else int(rng.integers(0, 5_000_000)),
                out_bytes=int(rng.integers(1_000, 2_000_000)),
                latency_ms=lat,
                energy_j={t: lat[t] * 5.0 / 1000 for t in tiers},
            )
        )
    hops = [f"{a}-{b}" for a, b in itertools.pairwise(tiers)]
    links = {
        h: LinkSpec(mbps=float(rng.choice([1, 5, 20, 100])), rtt_ms=float(rng.uniform(0, 60)))
        for h in hops
    }
    return Profile(
        model=f"random-{'chain' if chain else 'dag'}-{seed}",
        fleet="synthetic",
        input_bytes=nodes[0].out_bytes,
        tiers=list(tiers),
        tier_nodes={t: t for t in tiers},
        nodes=nodes,
        edges=edges,
        output=names[-1],
        links=links,
        device_power=DevicePower(compute_w=5.0, idle_w=1.5, tx_w=2.5, rx_w=1.8),
        inputs=["input"],
    ).check()
