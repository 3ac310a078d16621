"""What fused tiles and layer-wise splits cost on a cluster, from the same profile the
single-device planner uses.

Each cluster device gets every node's latency on its own hardware (the profile's host figures
scaled by the device's effective GFLOP/s, as :func:`edgeweave.profile.retarget` does for tiers).
A tile or a layer part computes a fraction of each layer's output pixels (or neurons), and is
priced as that fraction of the layer's latency: the rule behind the FLOPs of every fusable layer
(graph.costs), applied to time. Transfers and their contention are the shared medium's
(:mod:`edgeweave.plan.medium`). Memory is what a device must hold: the weights of the layers it
computes and the largest feature maps alive while it runs one task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edgeweave.graph.blocks import FusedBlock
from edgeweave.graph.capture import Graph
from edgeweave.graph.layerwise import LayerSplit
from edgeweave.graph.regions import EMPTY
from edgeweave.graph.tiles import (
    Tile,
    peak_activation_bytes,
    received_bytes,
    sent_bytes,
)
from edgeweave.plan.medium import Schedule, Task, simulate
from edgeweave.profile.build import latencies_on
from edgeweave.profile.schema import Profile
from edgeweave.topology import Cluster, Fleet

MIB = 2**20


def mib(nbytes: float) -> str:
    """Bytes as MiB for a message, to three significant digits."""
    return f"{nbytes / MIB:.3g} MiB"


@dataclass(frozen=True)
class ClusterDevice:
    """One device as priced: its layer latencies and the memory a model may use on it."""

    name: str
    hardware: str
    gflops: float
    node_ms: dict[str, float]
    limit_bytes: float


@dataclass(frozen=True)
class TileWork:
    """A tile's device-independent cost: the share of each layer it computes, its traffic,
    the tiles whose shared halo it waits for, and its peak feature-map bytes."""

    index: int
    level: int
    fractions: dict[str, float]
    in_bytes: int
    out_bytes: int
    after: tuple[int, ...]
    peak_bytes: int


class ClusterModel:
    """A fleet's cluster with every device's layer latencies, ready to price tasks."""

    def __init__(self, profile: Profile, fleet: Fleet, cluster: Cluster) -> None:
        self.cluster = cluster
        self.gateway = cluster.gateway_name
        self.medium = cluster.medium
        self.devices: dict[str, ClusterDevice] = {}
        for name in cluster.devices:
            node = fleet.node(name)
            self.devices[name] = ClusterDevice(
                name, node.hardware.name, node.hardware.gflops,
                latencies_on(profile, node.hardware), cluster.limit_mb(node) * MIB)

    @property
    def names(self) -> list[str]:
        return list(self.devices)

    def compute_ms(self, device: str, fractions: Mapping[str, float]) -> float:
        node_ms = self.devices[device].node_ms
        return sum(node_ms[name] * share for name, share in fractions.items())

    def simulate(self, tasks: Sequence[Task]) -> Schedule:
        return simulate(tasks, self.gateway, self.medium.mbps, self.medium.rtt_ms)


def tile_work(block: FusedBlock, tiles: Sequence[Tile]) -> list[TileWork]:
    """Every tile's :class:`TileWork`, level-0 tiles first (the order devices run them)."""
    work = []
    for tile in sorted(tiles, key=lambda t: (t.level, t.index)):
        sources = sorted({p.source for pieces in tile.reused.values() for p in pieces})
        work.append(TileWork(
            tile.index, tile.level,
            {n.name: tile.computes.get(n.name, EMPTY).area / n.map_area for n in block.nodes},
            received_bytes(block, tile), sent_bytes(block, tile), tuple(sources),
            peak_activation_bytes(block, tile.holds, tile.computes)))
    return work


def tile_tasks(model: ClusterModel, work: Sequence[TileWork], assignment: Sequence[str],
               table: Mapping[tuple[int, str], float] | None = None) -> list[Task]:
    """Tasks for ``work`` (in its order) with ``assignment[k]`` the device of ``work[k]``;
    ``table`` holds ``(k, device) -> compute ms`` when the caller prices many assignments."""
    position = {w.index: k for k, w in enumerate(work)}
    return [Task(device, table[(k, device)] if table is not None
                 else model.compute_ms(device, w.fractions), w.in_bytes, w.out_bytes,
                 tuple(position[s] for s in w.after))
            for k, (w, device) in enumerate(zip(work, assignment, strict=True))]


def compute_table(model: ClusterModel, work: Sequence[TileWork],
                  allowed: Sequence[Sequence[str]]) -> dict[tuple[int, str], float]:
    """Each tile's compute time on each device it may run on."""
    return {(k, name): model.compute_ms(name, w.fractions)
            for k, (w, options) in enumerate(zip(work, allowed, strict=True))
            for name in options}


def layer_tasks(model: ClusterModel, split: LayerSplit, devices: Sequence[str]) -> list[Task]:
    """One split layer's parts as tasks; ``devices[p.device]`` runs part ``p``."""
    return [Task(devices[p.device], model.compute_ms(devices[p.device], p.fractions),
                 p.in_bytes, p.out_bytes) for p in split.parts]


def layer_memory(graph: Graph, splits: Sequence[LayerSplit], devices: Sequence[str]
                 ) -> dict[str, int]:
    """Bytes each device holds for a layer-wise split: the whole kernel of every convolution
    it computes rows of, its share of every fully connected layer's neurons, and its largest
    part's input and output."""
    weights = dict.fromkeys(devices, 0)
    largest = dict.fromkeys(devices, 0)
    for split in splits:
        params = sum(graph.node(u).param_bytes for u in split.unit)
        for part in split.parts:
            name = devices[part.device]
            share = part.fractions[split.unit[0]] if split.kind == "neurons" else 1.0
            weights[name] += int(params * share)
            largest[name] = max(largest[name], part.in_bytes + part.out_bytes)
    return {name: weights[name] + largest[name] for name in devices}
