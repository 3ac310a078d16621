"""Local clusters: end devices near each other that share one inference (DeepThings, MoDNN).

A cluster names its devices, the gateway among them (the data source: it partitions a frame,
gathers and stitches the results and runs or forwards the rest of the model), and the one
medium they share. Devices on one Wi-Fi share its airtime: transfers of different devices do not
run in parallel but one after another, so the medium is a single link all of them queue on, not
a private link per device. A cluster may also cap the memory a model may use on a device (an
IoT board's free RAM is far below its total).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # fleet.py imports this module
    from edgeweave.topology.node import Node


class Medium(BaseModel):
    """The shared network of a cluster: its bandwidth is shared by every transfer on it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = Field(default="wifi", min_length=1)
    mbps: float = Field(gt=0)
    rtt_ms: float = Field(ge=0)


class Cluster(BaseModel):
    """Devices of one fleet that split inferences between them over a shared ``medium``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    devices: list[str] = Field(min_length=1)
    gateway: str | None = None
    medium: Medium
    memory_mb: dict[str, float] = Field(default_factory=dict)

    @property
    def gateway_name(self) -> str:
        """The gateway: the named one, else the first device."""
        return self.gateway or self.devices[0]

    def limit_mb(self, device: Node) -> float:
        """Memory a model may use on ``device``: the cluster's cap, else its hardware's."""
        return self.memory_mb.get(device.name, device.hardware.memory_mb)


def cluster_problem(clusters: Sequence[Cluster], nodes: Mapping[str, Node]) -> str | None:
    """The first cross-field problem of the ``clusters`` section as ``field.path: message``."""
    known = ", ".join(nodes) or "none"
    named: dict[str, int] = {}
    member: dict[str, int] = {}
    for i, cluster in enumerate(clusters):
        where = f"clusters[{i}]"
        if cluster.name in named:
            return (f"{where}.name: duplicate cluster name {cluster.name!r} (already "
                    f"clusters[{named[cluster.name]}])")
        named[cluster.name] = i
        for j, name in enumerate(cluster.devices):
            problem = _device_problem(name, nodes, known)
            if problem is not None:
                return f"{where}.devices[{j}]: {problem}"
            if cluster.devices.index(name) != j:
                return f"{where}.devices[{j}]: {name!r} is listed twice"
            if name in member and member[name] != i:
                return (f"{where}.devices[{j}]: {name!r} is already in clusters[{member[name]}]; "
                        "a device belongs to at most one cluster")
            member[name] = i
        if cluster.gateway is not None and cluster.gateway not in cluster.devices:
            return (f"{where}.gateway: {cluster.gateway!r} is not one of the cluster's devices "
                    f"({', '.join(cluster.devices)})")
        for name, mb in cluster.memory_mb.items():
            if name not in cluster.devices:
                return (f"{where}.memory_mb.{name}: {name!r} is not one of the cluster's devices "
                        f"({', '.join(cluster.devices)})")
            hardware = nodes[name].hardware
            if not 0 < mb <= hardware.memory_mb:
                return (f"{where}.memory_mb.{name}: {mb:g} MiB is not within the device's "
                        f"memory (its hardware {hardware.name!r} has {hardware.memory_mb:g} MiB)")
    return None


def _device_problem(name: str, nodes: Mapping[str, Node], known: str) -> str | None:
    if name not in nodes:
        return f"unknown node {name!r} (known: {known})"
    if nodes[name].tier != "device":
        return f"{name!r} is on tier {nodes[name].tier!r}; a cluster holds end devices only"
    return None


def cluster_edges(clusters: Sequence[Cluster]) -> list[tuple[str, str]]:
    """Pairs of devices joined by a cluster's medium (for the fleet's connectivity check)."""
    return [(c.devices[0], other) for c in clusters for other in c.devices[1:]]
