"""The fleet: which machines exist, on which tier, and how fast the links between them are.

Everything downstream (planning, simulation, running) asks the fleet the same few questions:
what hardware is on each tier, how long does it take to ship N bytes across a hop, and which chain
of device -> edge -> cloud nodes does one inference travel. Keeping those answers here, validated
once at load time, means a typo in a YAML file fails with a pointed message instead of as a
KeyError deep inside a planner.

The parts live beside it: :mod:`~edgeweave.topology.node` (tiers and nodes),
:mod:`~edgeweave.topology.link` (links and the transfer cost model),
:mod:`~edgeweave.topology.tier_path`, :mod:`~edgeweave.topology.fleet_checks` (cross-field
checks) and :mod:`~edgeweave.topology.fleet_files` (built-in fleets, reading YAML); their public
names are re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgeweave.errors import FleetError
from edgeweave.topology.cluster import Cluster
from edgeweave.topology.error_paths import fleet_error_from_validation
from edgeweave.topology.fleet_checks import consistency_problem, node_names
from edgeweave.topology.fleet_files import (
    BUILTIN_FLEETS_DIR,
    DEFAULT_FLEET,
    anchor_trace_path,
    list_builtin_fleets,
    read_fleet_yaml,
    resolve_fleet_spec,
)
from edgeweave.topology.link import ByteCount, Link, serialize_ms, transfer_ms
from edgeweave.topology.node import TIERS, Node, Tier
from edgeweave.topology.tier_path import TierPath

# the names this module has always offered; the parts now live in the modules imported above
__all__ = [
    "BUILTIN_FLEETS_DIR",
    "DEFAULT_FLEET",
    "TIERS",
    "ByteCount",
    "Fleet",
    "Link",
    "Node",
    "Tier",
    "TierPath",
    "list_builtin_fleets",
    "load_fleet",
    "serialize_ms",
    "transfer_ms",
]


class Fleet(BaseModel):
    """A validated fleet: unique names, links between known nodes, connected, has a device;
    ``clusters`` group devices that share inferences over one medium (topology.cluster)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    nodes: list[Node]
    links: list[Link] = Field(default_factory=list)
    clusters: list[Cluster] = Field(default_factory=list)
    source: str | None = None

    @model_validator(mode="after")
    def _check_consistency(self) -> Fleet:
        # Raised as FleetError (not ValueError) so pydantic passes it through untouched: these
        # problems span several fields and already carry their own field path.
        problem = consistency_problem(self)
        if problem is not None:
            raise FleetError(f"{self._where}: {problem}")
        return self

    @classmethod
    def from_dict(
        cls, data: Any, *, source: str | None = None, base_dir: Path | None = None
    ) -> Fleet:
        """Build a fleet from parsed YAML, turning every validation problem into a FleetError.

        ``base_dir`` anchors relative trace paths (the YAML file's directory).
        """
        where = source or "<fleet>"
        if not isinstance(data, Mapping):
            got = "an empty file" if data is None else f"a {type(data).__name__}"
            raise FleetError(
                f"{where}: expected a mapping with keys name, nodes, links at the top level, "
                f"got {got}"
            )
        data = dict(data)
        if source is not None:
            data["source"] = source
        links = data.get("links")
        if base_dir is not None and isinstance(links, list):
            data["links"] = [anchor_trace_path(link, base_dir) for link in links]
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise fleet_error_from_validation(exc, where) from None

    @property
    def _where(self) -> str:
        return self.source or f"fleet {self.name!r}"

    def node(self, name: str) -> Node:
        """The node called ``name``; FleetError listing the known names if there is none."""
        for node in self.nodes:
            if node.name == name:
                return node
        known = ", ".join(n.name for n in self.nodes)
        raise FleetError(f"{self._where}: no node named {name!r} (known: {known})")

    def cluster(self, name: str | None = None) -> Cluster:
        """The cluster called ``name`` (the first one when None); FleetError if there is none."""
        if not self.clusters:
            raise FleetError(f"{self._where}: has no clusters; add a 'clusters:' section naming "
                             "the devices that share inferences and their medium")
        if name is None:
            return self.clusters[0]
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        known = ", ".join(c.name for c in self.clusters)
        raise FleetError(f"{self._where}: no cluster named {name!r} (known: {known})")

    def nodes_in(self, tier: str) -> list[Node]:
        """Nodes on ``tier``, in file order."""
        if tier not in TIERS:
            raise FleetError(f"unknown tier {tier!r} (expected one of {', '.join(TIERS)})")
        return [n for n in self.nodes if n.tier == tier]

    def edge_of(self, device: str) -> Node | None:
        """The edge node device ``device`` reports to: its ``edge`` field, else the edge it has
        the fastest link to (the first of equals in file order); None when it has no edge."""
        node = self.node(device)
        if node.edge is not None:
            return self.node(node.edge)
        return self._best_neighbour(node, "edge")

    def link(self, a: str, b: str) -> Link | None:
        """The link between ``a`` and ``b`` in either direction, or None."""
        return next((link for link in self.links if link.joins(a, b)), None)

    def with_link_mbps(self, a: str, b: str, mbps: float) -> Fleet:
        """A copy with the a-b link's bandwidth set to ``mbps``, for bandwidth sweeps.

        The copy's link drops any trace: a sweep point means "this link runs at exactly mbps",
        and a trace would otherwise override it in ``mbps_at``.
        """
        if not mbps > 0:
            raise FleetError(f"{self._where}: bandwidth for {a}-{b} must be > 0, got {mbps}")
        if self.link(a, b) is None:
            raise FleetError(f"{self._where}: no link between {a!r} and {b!r}")
        links = [
            link.model_copy(update={"mbps": float(mbps), "trace": None})
            if link.joins(a, b)
            else link
            for link in self.links
        ]
        return self.model_copy(update={"nodes": list(self.nodes), "links": links})

    def tier_path(
        self, device: str | None = None, edge: str | None = None, cloud: str | None = None
    ) -> TierPath:
        """The device -> edge -> cloud chain a co-inference plan runs on.

        Defaults: the first device in file order; its edge (:meth:`edge_of`: the one it names,
        else the one linked to it with the highest mbps; none if no edge is linked); the cloud
        linked to that edge (or to the device when there is no edge) with the highest mbps.
        Named nodes must exist, be on the right tier and be directly linked to the previous hop.
        """
        dev = self._named(device, "device") if device is not None else self.nodes_in("device")[0]
        if edge is not None:
            edge_node: Node | None = self._named(edge, "edge")
            self._require_link(dev, edge_node)
        else:
            edge_node = self.edge_of(dev.name)
        anchor = edge_node or dev
        if cloud is not None:
            cloud_node: Node | None = self._named(cloud, "cloud")
            self._require_link(anchor, cloud_node)
        else:
            cloud_node = self._best_neighbour(anchor, "cloud")
        chain = [n for n in (dev, edge_node, cloud_node) if n is not None]
        hops = [self.link(a.name, b.name) for a, b in pairwise(chain)]
        return TierPath(nodes=chain, links=[h for h in hops if h is not None])

    def _named(self, name: str, tier: Tier) -> Node:
        node = self.node(name)
        if node.tier != tier:
            raise FleetError(
                f"{self._where}: tier_path: {tier} node {name!r} is on tier {node.tier!r}, "
                f"expected {tier!r} (candidates: {node_names(self.nodes_in(tier))})"
            )
        return node

    def _require_link(self, lower: Node, upper: Node | None) -> None:
        if upper is not None and self.link(lower.name, upper.name) is None:
            raise FleetError(
                f"{self._where}: tier_path: {upper.tier} node {upper.name!r} is not directly "
                f"linked to {lower.tier} node {lower.name!r}"
            )

    def _best_neighbour(self, node: Node, tier: Tier) -> Node | None:
        candidates = [
            (link, self.node(link.other_end(node.name)))
            for link in self.links
            if node.name in (link.src, link.dst)
        ]
        on_tier = [(link, other) for link, other in candidates if other.tier == tier]
        if not on_tier:
            return None
        # max() keeps the first of equal maxima, so ties go to the earlier link in the file.
        return max(on_tier, key=lambda pair: pair[0].mbps)[1]



def load_fleet(spec: str | Path) -> Fleet:
    """Load a fleet from a YAML file path or a built-in fleet name (see list_builtin_fleets)."""
    path = resolve_fleet_spec(spec)
    return Fleet.from_dict(read_fleet_yaml(path), source=str(path), base_dir=path.parent)
