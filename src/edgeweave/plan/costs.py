"""The co-inference cost model, in one place, so every planner and every check agrees.

Placement gives each node a tier index (0 = device, rising). Placement is monotone: along every
data edge the index never goes down. For each hop k (between tier k and k+1) used upward, the cost
is rtt/2 + bytes*8/(mbps*1000) ms, where bytes is the sum of the distinct tensors produced below
the hop and consumed above it; the model's output returns down each hop it crossed at the same
per-hop cost. Total latency = node compute times at their tiers + transfers.

Energy is the end device's (Neurosurgeon's objective): its compute power while it computes, its
radio transmit/receive power on the first hop, and idle power while it waits for higher tiers.
Both objectives are linear in the same indicator terms, so one min-cut construction serves both
(and any weighted sum, which the SLO search uses).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from edgeweave.errors import PlanError
from edgeweave.profile.schema import Profile
from edgeweave.topology import serialize_ms

OBJECTIVES = ("latency", "energy", "throughput")


@dataclass(frozen=True)
class Weights:
    """A linear objective over placements, in the terms the min-cut construction understands.

    unary[u, l]        cost of running node u on tier l
    per_byte_up[k]     cost per byte of a distinct tensor crossing hop k upward
    fixed_up[k]        cost paid once if anything runs above hop k
    per_byte_down[k]   cost per output byte returning down hop k
    fixed_down[k]      cost paid once if an output sits above hop k
    """

    unary: np.ndarray
    per_byte_up: np.ndarray
    fixed_up: np.ndarray
    per_byte_down: np.ndarray
    fixed_down: np.ndarray

    def __add__(self, other: Weights) -> Weights:
        return Weights(*(a + b for a, b in zip(self.fields(), other.fields(), strict=True)))

    def scaled(self, c: float) -> Weights:
        return Weights(*(a * c for a in self.fields()))

    def fields(self) -> tuple[np.ndarray, ...]:
        return (self.unary, self.per_byte_up, self.fixed_up, self.per_byte_down, self.fixed_down)


@dataclass(frozen=True)
class Evaluation:
    """Costs of many placements (one row each), as arrays."""

    total_ms: np.ndarray
    energy_j: np.ndarray
    fleet_energy_j: np.ndarray
    tier_compute_ms: np.ndarray
    up_bytes: np.ndarray
    down_bytes: np.ndarray
    hop_up_ms: np.ndarray
    hop_down_ms: np.ndarray
    stages: np.ndarray
    stage_names: list[str]
    device_param_bytes: np.ndarray

    @property
    def bottleneck_ms(self) -> np.ndarray:
        return self.stages.max(axis=1)

    def value(self, objective: str) -> np.ndarray:
        return {"latency": self.total_ms, "energy": self.energy_j,
                "throughput": self.bottleneck_ms}[objective]


@dataclass
class Breakdown:
    """A placement's predicted cost, split the way the plan JSON reports it."""

    total_ms: float
    compute_ms: float
    transfer_ms: float
    energy_j: float
    fleet_energy_j: float
    tier_compute_ms: list[float]
    up_bytes: list[int]
    down_bytes: list[int]
    hop_up_ms: list[float]
    hop_down_ms: list[float]
    bottleneck_ms: float
    bottleneck: str
    device_param_bytes: int

    @property
    def throughput_fps(self) -> float:
        return 1000.0 / self.bottleneck_ms if self.bottleneck_ms > 0 else float("inf")

    def value(self, objective: str) -> float:
        """The number an objective minimises (throughput: the slowest pipeline stage)."""
        if objective == "latency":
            return self.total_ms
        if objective == "energy":
            return self.energy_j
        if objective == "throughput":
            return self.bottleneck_ms
        raise PlanError(f"unknown objective {objective!r} (expected one of {OBJECTIVES})")


def _wire_bytes(node, codec: str) -> float:
    table = (node.model_extra or {}).get("codec_bytes") or {}
    if codec != "none" and codec not in table and table:
        raise PlanError(f"codec {codec!r} was not measured for node {node.name!r} "
                        f"(measured: {', '.join(table)})")
    return float(table.get(codec, node.out_bytes))


class CostModel:
    """Profile numbers laid out as arrays, with the evaluator and the linear weights."""

    def __init__(self, profile: Profile, cuts: Mapping[str, str] | None = None):
        self.profile = profile
        self.tiers = list(profile.tiers)
        self.names = [n.name for n in profile.nodes]
        self.index = {n: i for i, n in enumerate(self.names)}
        self.n = len(self.names)
        self.n_tiers = len(self.tiers)
        self.lat = np.array(
            [[node.latency_ms[t] for t in self.tiers] for node in profile.nodes], dtype=float
        )
        self.out_bytes = np.array([n.out_bytes for n in profile.nodes], dtype=float)
        self.param_bytes = np.array([n.param_bytes for n in profile.nodes], dtype=float)
        self.fleet_energy = np.array(
            [[node.energy_j.get(t, 0.0) for t in self.tiers] for node in profile.nodes]
        )
        self.consumers: list[list[int]] = [[] for _ in range(self.n)]
        self.producers: list[list[int]] = [[] for _ in range(self.n)]
        for a, b in profile.edges:
            ia, ib = self.index[a], self.index[b]
            if ib not in self.consumers[ia]:
                self.consumers[ia].append(ib)
                self.producers[ib].append(ia)
        self.outputs = [self.index[o] for o in profile.outputs]
        self.inputs = [self.index[i] for i in profile.inputs if i in self.index]
        self.links = profile.hop_links()
        self.power = profile.device_power
        self.order = self._topological_order()
        pairs = [(u, v) for u in range(self.n) for v in self.consumers[u]]
        self.edge_src = np.array([u for u, _ in pairs], dtype=int)
        self.edge_dst = np.array([v for _, v in pairs], dtype=int)
        self.cache: dict[str, object] = {}  # per-model structures planners reuse across calls
        self.cuts = {h: (cuts or {}).get(h, "none") for h in profile.hop_names()}
        measured = any((n.model_extra or {}).get("codec_bytes") for n in profile.nodes)
        if not measured and any(c != "none" for c in self.cuts.values()):
            raise PlanError(f"profile of {profile.model} has no activation codec measurements; "
                            "re-run `edgeweave profile` to plan with codecs")
        # bytes each node's output puts on each hop: its codec's measured payload when the
        # profile has one, else the raw tensor
        self.hop_bytes = np.array([
            [_wire_bytes(node, self.cuts[h]) for node in profile.nodes]
            for h in profile.hop_names()
        ], dtype=float).reshape(len(self.links), self.n)

    def _topological_order(self) -> list[int]:
        indeg = [len(p) for p in self.producers]
        ready = [i for i in range(self.n) if indeg[i] == 0]
        order: list[int] = []
        while ready:
            u = ready.pop()
            order.append(u)
            for v in self.consumers[u]:
                indeg[v] -= 1
                if indeg[v] == 0:
                    ready.append(v)
        if len(order) != self.n:
            raise PlanError(f"{self.profile.model}: the profile's edges contain a cycle")
        return order

    def is_chain(self) -> bool:
        return all(len(c) <= 1 for c in self.consumers) and all(
            len(p) <= 1 for p in self.producers
        )

    # ---- evaluation -------------------------------------------------------------------------

    def labels_of(self, placement: Mapping[str, str]) -> np.ndarray:
        rank = {t: i for i, t in enumerate(self.tiers)}
        try:
            return np.array([rank[placement[n]] for n in self.names], dtype=int)
        except KeyError as e:
            raise PlanError(
                f"placement: node or tier {e.args[0]!r} is not in the profile"
            ) from None

    def placement_of(self, labels: Sequence[int] | np.ndarray) -> dict[str, str]:
        return {n: self.tiers[int(lab)] for n, lab in zip(self.names, labels, strict=True)}

    def is_monotone(self, labels: Sequence[int]) -> bool:
        return all(labels[v] >= labels[u] for u in range(self.n) for v in self.consumers[u])

    def evaluate(self, labels: Sequence[int] | np.ndarray) -> Breakdown:
        """The cost model for one placement, broken down the way the plan JSON reports it."""
        ev = self.evaluate_many(np.asarray(labels, dtype=int)[None, :])
        names = ev.stage_names
        worst = int(ev.stages[0].argmax())
        return Breakdown(
            total_ms=float(ev.total_ms[0]),
            compute_ms=float(ev.tier_compute_ms[0].sum()),
            transfer_ms=float(ev.hop_up_ms[0].sum() + ev.hop_down_ms[0].sum()),
            energy_j=float(ev.energy_j[0]),
            fleet_energy_j=float(ev.fleet_energy_j[0]),
            tier_compute_ms=ev.tier_compute_ms[0].tolist(),
            up_bytes=[int(b) for b in ev.up_bytes[0]],
            down_bytes=[int(b) for b in ev.down_bytes[0]],
            hop_up_ms=ev.hop_up_ms[0].tolist(),
            hop_down_ms=ev.hop_down_ms[0].tolist(),
            bottleneck_ms=float(ev.stages[0, worst]),
            bottleneck=names[worst],
            device_param_bytes=int(ev.device_param_bytes[0]),
        )

    def evaluate_many(self, labels: np.ndarray) -> Evaluation:
        """The cost model for many placements at once (rows of `labels`), so exhaustive scans
        and brute force price thousands of placements with array operations, and with the
        very same arithmetic as a single plan."""
        lab = np.asarray(labels, dtype=int)
        m, hops = lab.shape[0], self.n_tiers - 1
        rows = np.arange(self.n)
        tier_ms = np.stack([(self.lat[:, t] * (lab == t)).sum(axis=1)
                            for t in range(self.n_tiers)], axis=1)
        # highest tier any consumer of u sits on (u's own tier when it has no consumer)
        top_t = lab.T.copy()
        np.maximum.at(top_t, self.edge_src, lab.T[self.edge_dst])
        top_consumer = top_t.T
        out_lab = lab[:, self.outputs]
        out_size = self.out_bytes[self.outputs]
        up_bytes = np.zeros((m, hops))
        down_bytes = np.zeros((m, hops))
        hop_up = np.zeros((m, hops))
        hop_down = np.zeros((m, hops))
        up_ser = np.zeros((m, hops))
        down_ser = np.zeros((m, hops))
        for k, link in enumerate(self.links):
            up_bytes[:, k] = ((lab <= k) & (top_consumer > k)) @ self.hop_bytes[k]
            down_bytes[:, k] = (out_lab > k) @ out_size
            hop_up[:, k] = np.where(lab.max(axis=1) > k, link.transfer_ms(up_bytes[:, k]), 0.0)
            hop_down[:, k] = np.where(
                out_lab.max(axis=1) > k, link.transfer_ms(down_bytes[:, k]), 0.0
            )
            up_ser[:, k] = link.serialize_ms(up_bytes[:, k])
            down_ser[:, k] = link.serialize_ms(down_bytes[:, k])
        p = self.power
        energy_mj = tier_ms[:, 0] * p.compute_w + tier_ms[:, 1:].sum(axis=1) * p.idle_w
        if hops:
            energy_mj += hop_up[:, 0] * p.tx_w + hop_down[:, 0] * p.rx_w
            energy_mj += (hop_up[:, 1:].sum(axis=1) + hop_down[:, 1:].sum(axis=1)) * p.idle_w
        return Evaluation(
            total_ms=tier_ms.sum(axis=1) + hop_up.sum(axis=1) + hop_down.sum(axis=1),
            energy_j=energy_mj / 1000.0,
            fleet_energy_j=self.fleet_energy[rows, lab].sum(axis=1),
            tier_compute_ms=tier_ms,
            up_bytes=up_bytes,
            down_bytes=down_bytes,
            hop_up_ms=hop_up,
            hop_down_ms=hop_down,
            stages=np.hstack([tier_ms, up_ser, down_ser]),
            stage_names=self._stage_names(),
            device_param_bytes=(lab == 0) @ self.param_bytes,
        )

    def _stage_names(self) -> list[str]:
        """Pipeline stages (throughput): each tier's compute, each hop's uplink and downlink;
        a link's RTT delays a request but does not occupy the link, so only serialisation."""
        hops = [f"{a}-{b}" for a, b in zip(self.tiers, self.tiers[1:], strict=False)]
        return ([f"{t} compute" for t in self.tiers] + [f"{h} uplink" for h in hops]
                + [f"{h} downlink" for h in hops])

    # ---- linear weights ---------------------------------------------------------------------

    def weights(self, objective: str) -> Weights:
        """Latency or device energy as a linear function of placement indicators."""
        hops = self.n_tiers - 1
        mbps = np.array([lk.mbps for lk in self.links], dtype=float)
        half_rtt = np.array([lk.rtt_ms / 2.0 for lk in self.links], dtype=float)
        ms_per_byte = serialize_ms(np.ones(hops), mbps) if hops else np.zeros(0)
        if objective == "latency":
            unary = self.lat.copy()
            w_up = np.ones(hops)
            w_down = np.ones(hops)
        elif objective == "energy":
            p = self.power
            unary = self.lat * p.idle_w / 1000.0
            unary[:, 0] = self.lat[:, 0] * p.compute_w / 1000.0
            w_up = np.full(hops, p.idle_w / 1000.0)
            w_down = np.full(hops, p.idle_w / 1000.0)
            if hops:
                w_up[0], w_down[0] = p.tx_w / 1000.0, p.rx_w / 1000.0
        else:
            raise PlanError(f"objective {objective!r} has no linear form (latency or energy)")
        return Weights(
            unary=unary,
            per_byte_up=ms_per_byte * w_up,
            fixed_up=half_rtt * w_up,
            per_byte_down=ms_per_byte * w_down,
            fixed_down=half_rtt * w_down,
        )

    def device_memory_weights(self, per_byte: float) -> Weights:
        """A penalty on parameter bytes kept on the device (Lagrangian for a memory limit)."""
        hops = self.n_tiers - 1
        unary = np.zeros((self.n, self.n_tiers))
        unary[:, 0] = self.param_bytes * per_byte
        z = np.zeros(hops)
        return Weights(unary, z, z.copy(), z.copy(), z.copy())
