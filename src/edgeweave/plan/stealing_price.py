"""What work stealing sustains with several frames in flight: the fluid bound and Little's law.

The medium simulation (:mod:`edgeweave.plan.medium`) prices one frame whose tiles sit on fixed
devices, and a plan's throughput from it is its busiest resource for that assignment. Work
stealing with k frames in flight does not keep an assignment: an idle device takes whatever
tile is waiting, of whichever frame, so over many frames the work spreads across the devices
in any proportion. A grid of one tile (each device a whole frame's fused block) is then as
balanced as a grid of 36, without the halo's redundant work or the 36 crops on the air, which
the fixed assignment could never show (its one tile sat on one device, every frame).

So a stealing plan's time per frame is priced as the smallest period P such that the tiles,
split fractionally across the devices over many frames, fit: every device computes its share
(the gateway also the rest of the model) within P, and the medium carries the crops and maps
of every share off the gateway within P (a linear programme, solved by scipy's HiGHS). With k
frames in flight a frame cannot take longer than k periods either (Little's law: k frames
answered per frame latency at most), so the price is also at least a frame's latency / k,
that latency the single-frame schedule's (a lower bound: under load a frame waits more).

Frames may come from several data sources (DeepThings' multi-source setup): a tile's crop
then crosses the medium unless the device that runs it is its frame's source, so the
linear programme splits each source's frames on their own (a device runs its own frames'
tiles without their crops crossing); every result still goes to the gateway, which gathers
every frame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linprog

from edgeweave.plan.cluster_cost import ClusterModel, TileWork
from edgeweave.topology import serialize_ms


@dataclass(frozen=True)
class StealingPrice:
    """A fused block's time per frame under work stealing with frames in flight."""

    period_ms: float  # the fluid bound: tiles spread over the devices as they may be
    shares: dict[str, float]  # tiles per frame each device takes on average at that bound
    medium_ms: float  # the medium's busy time per frame at that split
    # what each tile (by index) costs each device, compute and the runtime's per-MiB cost:
    # the price's own figures, written to the plan so that the simulator (sim.stealing) can
    # run a tile on whichever device steals it, not only the one the plan assigned
    tile_ms: dict[str, list[float]] = field(default_factory=dict)

    def value(self, latency_ms: float, in_flight: int) -> float:
        """The price: the fluid bound, or a frame's latency over the frames in flight."""
        return max(self.period_ms, latency_ms / in_flight)


def stealers_of(allowed: Sequence[Sequence[str]]) -> list[str]:
    """The devices that may take every tile (memory allows it): only they can steal freely,
    since a stealing device takes whichever tile is waiting."""
    if not allowed:
        return []
    common = set(allowed[0]).intersection(*allowed[1:])
    return [d for d in allowed[0] if d in common]


def stealing_price(model: ClusterModel, work: Sequence[TileWork], devices: Sequence[str],
                   rest_gateway_ms: float, rest_other_ms: float,
                   origins: Mapping[str, float] | None = None) -> StealingPrice | None:
    """The fluid bound for ``work`` (one frame's tiles) spread over ``devices`` (module
    docstring); ``rest_gateway_ms``: what the rest of the model costs the gateway per frame,
    ``rest_other_ms``: its slowest stage elsewhere (edge, cloud, a hop); ``origins``: the
    share of the frames each data source produces (None: every frame from the gateway).
    None when no device may take every tile."""
    if not devices or not work:
        return None
    gateway = model.gateway
    mbps = model.medium.mbps
    weights = dict(origins) if origins else {gateway: 1.0}
    total = sum(weights.values())
    sources = list(weights)
    n_tiles, n_dev, n_src = len(work), len(devices), len(sources)
    cost = np.empty((n_tiles, n_dev))
    # x[k, j, s]: the share of the frames, from source s, whose tile k device j runs
    air = np.zeros((n_tiles, n_dev, n_src))
    for k, w in enumerate(work):
        nbytes = model.task_bytes(w)
        overhead = model.runtime_ms(*nbytes)
        crop, result = serialize_ms(nbytes[0], mbps), serialize_ms(nbytes[1], mbps)
        for j, d in enumerate(devices):
            cost[k, j] = model.compute_ms(d, w.fractions) + overhead
            for s, src in enumerate(sources):
                air[k, j, s] = (crop if d != src else 0.0) + (result if d != gateway else 0.0)
    n = n_tiles * n_dev * n_src + 1  # x[k, j, s] row-major, then the period P
    c = np.zeros(n)
    c[-1] = 1.0
    a_eq = np.zeros((n_tiles * n_src, n))
    b_eq = np.empty(n_tiles * n_src)
    for k in range(n_tiles):
        for s, src in enumerate(sources):
            a_eq[k * n_src + s, [(k * n_dev + j) * n_src + s for j in range(n_dev)]] = 1.0
            b_eq[k * n_src + s] = weights[src] / total
    a_ub = np.zeros((n_dev + 1, n))
    b_ub = np.zeros(n_dev + 1)
    per_device = np.repeat(cost[:, :, None], n_src, axis=2)
    for j, d in enumerate(devices):
        row = np.zeros((n_tiles, n_dev, n_src))
        row[:, j, :] = per_device[:, j, :]
        a_ub[j, :-1] = row.reshape(-1)
        a_ub[j, -1] = -1.0
        b_ub[j] = -rest_gateway_ms if d == gateway else 0.0
    a_ub[n_dev, :-1] = air.reshape(-1)
    a_ub[n_dev, -1] = -1.0
    floor = max(rest_other_ms, 0.0 if gateway in devices else rest_gateway_ms)
    bounds = [(0.0, 1.0)] * (n - 1) + [(floor, None)]
    found = linprog(c, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, bounds=bounds,
                    method="highs")
    if found.status != 0:  # pragma: no cover - the programme is always feasible and bounded
        return None
    x = found.x[:-1].reshape(n_tiles, n_dev, n_src)
    shares = {d: float(x[:, j, :].sum()) for j, d in enumerate(devices)}
    by_index = [0] * n_tiles
    for k, w in enumerate(work):
        by_index[w.index] = k
    tile_ms = {d: [float(cost[k, j]) for k in by_index] for j, d in enumerate(devices)}
    return StealingPrice(float(found.x[-1]), shares, float((x * air).sum()), tile_ms)
