"""The fleet: which machines exist, on which tier, and how fast the links between them are.

Everything downstream (planning, simulation, running) asks the fleet the same few questions:
what hardware is on each tier, how long does it take to ship N bytes across a hop, and which chain
of device -> edge -> cloud nodes does one inference travel. Keeping those answers here, validated
once at load time, means a typo in a YAML file fails with a pointed message instead of as a
KeyError deep inside a planner.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import networkx as nx
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from edgeweave.errors import FleetError
from edgeweave.topology.cluster import Cluster, cluster_edges, cluster_problem
from edgeweave.topology.error_paths import fleet_error_from_validation
from edgeweave.topology.hardware import CATALOG, HardwareProfile
from edgeweave.topology.trace import BandwidthTrace, load_trace

if TYPE_CHECKING:
    import numpy as np

# one byte count, or an array of them: the planner prices many placements at once
ByteCount = TypeVar("ByteCount", float, "np.ndarray")

Tier = Literal["device", "edge", "cloud"]
# Ordered low to high: a co-inference plan always moves data up this order.
TIERS: tuple[Tier, ...] = ("device", "edge", "cloud")

DEFAULT_FLEET = "pi4-wifi-edge-cloud"
BUILTIN_FLEETS_DIR = Path(__file__).parent / "fleets"


class Node(BaseModel):
    """One machine in the fleet; ``hardware`` may be given as a catalog name such as ``rpi4``.

    ``edge`` (device nodes only) names the edge server this device trains under in hierarchical
    federated learning; without it the device belongs to the edge it has the fastest link to
    (:meth:`Fleet.edge_of`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    tier: Tier
    hardware: HardwareProfile
    edge: str | None = Field(None, min_length=1)

    @field_validator("tier", mode="before")
    @classmethod
    def _known_tier(cls, value: Any) -> Any:
        if value not in TIERS:
            raise ValueError(f"unknown tier {value!r} (expected one of {', '.join(TIERS)})")
        return value

    @field_validator("hardware", mode="before")
    @classmethod
    def _resolve_catalog_name(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value not in CATALOG:
                raise ValueError(f"unknown hardware {value!r} (known: {', '.join(CATALOG)})")
            return CATALOG[value]
        return value


class Link(BaseModel):
    """A network link; bandwidth is used for transfers in either direction.

    Co-inference ships activations upward and only a small result back, so the uplink figure
    (what the fleet files record) is the one that matters. With a ``trace``, ``mbps`` is the
    nominal bandwidth (it defaults to the trace's time-weighted mean) and ``mbps_at`` replays the
    trace.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    src: str = Field(alias="from", min_length=1)
    dst: str = Field(alias="to", min_length=1)
    mbps: float = Field(gt=0)
    rtt_ms: float = Field(ge=0)
    trace: BandwidthTrace | None = None

    @model_validator(mode="before")
    @classmethod
    def _mbps_from_trace(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or "mbps" in data:
            return data
        trace = data.get("trace")
        if isinstance(trace, str | Path):
            try:
                trace = load_trace(trace)
            except FleetError:
                # The ``trace`` field validator re-reads the file and reports the problem under
                # ``links[i].trace``; a placeholder mbps keeps a bogus "mbps missing" out of it.
                return {**data, "mbps": 1.0}
        if isinstance(trace, BandwidthTrace):
            return {**data, "trace": trace, "mbps": trace.mean_mbps}
        return data

    @field_validator("trace", mode="before")
    @classmethod
    def _load_trace_file(cls, value: Any) -> Any:
        # A path is read here so that a bad CSV is reported under this link's field path.
        if isinstance(value, str | Path):
            try:
                return load_trace(value)
            except FleetError as exc:
                raise ValueError(str(exc)) from None
        return value

    def joins(self, a: str, b: str) -> bool:
        """True if this link connects ``a`` and ``b`` (in either direction)."""
        return {self.src, self.dst} == {a, b}

    def other_end(self, name: str) -> str:
        """The node at the far end of this link from ``name``."""
        return self.dst if name == self.src else self.src

    def mbps_at(self, t: float) -> float:
        """Bandwidth at time ``t`` seconds: the trace if the link has one, else ``mbps``."""
        return self.trace.mbps_at(t) if self.trace is not None else self.mbps

    def transfer_ms(self, nbytes: float, mbps: float | None = None) -> float:
        """Milliseconds to ship ``nbytes`` across this link: half an RTT plus serialisation.

        This is the single definition of transfer time in EdgeWeave; planners, simulators and
        reports all call it so they cannot disagree. ``mbps`` overrides the link's nominal
        bandwidth (e.g. with ``mbps_at(t)``).
        """
        rate = self.mbps if mbps is None else mbps
        if rate <= 0:
            raise FleetError(f"link {self.src}-{self.dst}: mbps must be > 0, got {rate}")
        if nbytes < 0:
            raise FleetError(f"link {self.src}-{self.dst}: nbytes must be >= 0, got {nbytes}")
        return transfer_ms(nbytes, rate, self.rtt_ms)


def serialize_ms(nbytes: ByteCount, mbps: float | ByteCount) -> ByteCount:
    """Milliseconds a link is busy pushing ``nbytes`` at ``mbps`` (what caps a pipeline's rate;
    propagation delay does not)."""
    return nbytes * 8 / (mbps * 1000)


def transfer_ms(nbytes: ByteCount, mbps: float, rtt_ms: float) -> ByteCount:
    """Per-hop transfer cost of the co-inference cost model: rtt/2 + bytes*8/(mbps*1000) ms."""
    return rtt_ms / 2 + serialize_ms(nbytes, mbps)


class TierPath(BaseModel):
    """The chain one co-inference runs on: ``nodes`` ascend by tier, ``links[k]`` joins k, k+1."""

    model_config = ConfigDict(frozen=True)

    nodes: list[Node]
    links: list[Link]

    @model_validator(mode="after")
    def _check_shape(self) -> TierPath:
        if not self.nodes:
            raise ValueError("a tier path needs at least a device node")
        if len(self.links) != len(self.nodes) - 1:
            raise ValueError(
                f"{len(self.nodes)} nodes need {len(self.nodes) - 1} links, got {len(self.links)}"
            )
        for k, link in enumerate(self.links):
            if not link.joins(self.nodes[k].name, self.nodes[k + 1].name):
                raise ValueError(
                    f"links[{k}] joins {link.src}-{link.dst}, expected "
                    f"{self.nodes[k].name}-{self.nodes[k + 1].name}"
                )
        return self

    @property
    def hop_names(self) -> list[str]:
        """Hop labels built from tiers, e.g. ``["device-edge", "edge-cloud"]``."""
        return [f"{a.tier}-{b.tier}" for a, b in pairwise(self.nodes)]

    @property
    def tiers(self) -> list[Tier]:
        return [n.tier for n in self.nodes]

    @property
    def device(self) -> Node:
        return self.nodes[0]


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
        problem = _consistency_problem(self)
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
            data["links"] = [_anchor_trace_path(link, base_dir) for link in links]
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
                f"expected {tier!r} (candidates: {_names(self.nodes_in(tier))})"
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


def _names(nodes: list[Node]) -> str:
    return ", ".join(n.name for n in nodes) or "none"


def _anchor_trace_path(link: Any, base_dir: Path) -> Any:
    """Make a link's relative trace path relative to the YAML file, not the working directory."""
    if isinstance(link, Mapping) and isinstance(link.get("trace"), str):
        trace = Path(link["trace"])
        if not trace.is_absolute():
            return {**link, "trace": str(base_dir / trace)}
    return link


def _consistency_problem(fleet: Fleet) -> str | None:
    """The first cross-field problem in ``fleet`` as ``field.path: message``, or None."""
    first_index: dict[str, int] = {}
    for i, node in enumerate(fleet.nodes):
        if node.name in first_index:
            return (
                f"nodes[{i}].name: duplicate node name {node.name!r} "
                f"(already nodes[{first_index[node.name]}]); expected unique names"
            )
        first_index[node.name] = i

    devices = [n for n in fleet.nodes if n.tier == "device"]
    if not devices:
        return "nodes: no node has tier 'device'; expected at least one device node"

    known = _names(fleet.nodes)
    seen: dict[frozenset[str], int] = {}
    for i, link in enumerate(fleet.links):
        if link.src not in first_index:
            return f"links[{i}].from: unknown node {link.src!r} (known: {known})"
        if link.dst not in first_index:
            return f"links[{i}].to: unknown node {link.dst!r} (known: {known})"
        if link.src == link.dst:
            return f"links[{i}].to: link from {link.src!r} to itself; expected a different node"
        key = frozenset((link.src, link.dst))
        if key in seen:
            return (
                f"links[{i}]: duplicate link between {link.src!r} and {link.dst!r} "
                f"(already links[{seen[key]}]; links are undirected)"
            )
        seen[key] = i

    problem = _edge_problem(fleet)
    if problem is not None:
        return problem

    problem = cluster_problem(fleet.clusters, {n.name: n for n in fleet.nodes})
    if problem is not None:
        return problem

    graph = nx.Graph()
    graph.add_nodes_from(first_index)
    graph.add_edges_from((link.src, link.dst) for link in fleet.links)
    graph.add_edges_from(cluster_edges(fleet.clusters))
    reachable = nx.node_connected_component(graph, devices[0].name)
    stranded = [n.name for n in fleet.nodes if n.name not in reachable]
    if stranded:
        return (
            f"links: fleet is not connected: {', '.join(stranded)} cannot be reached from "
            f"{devices[0].name!r}; expected every node linked into one network"
        )
    return None


def _edge_problem(fleet: Fleet) -> str | None:
    """A device's ``edge`` must name an edge node it is linked to; other tiers have none."""
    tiers = {n.name: n.tier for n in fleet.nodes}
    for i, node in enumerate(fleet.nodes):
        if node.edge is None:
            continue
        where = f"nodes[{i}].edge"
        if node.tier != "device":
            return f"{where}: only device nodes name their edge; {node.name!r} is {node.tier!r}"
        if tiers.get(node.edge) != "edge":
            edges = _names(fleet.nodes_in("edge"))
            return f"{where}: {node.edge!r} is not an edge node (edge nodes: {edges})"
        if fleet.link(node.name, node.edge) is None:
            return f"{where}: device {node.name!r} has no link to edge {node.edge!r}"
    return None


def list_builtin_fleets() -> list[str]:
    """Names of the fleets shipped with EdgeWeave (usable wherever a fleet file is accepted)."""
    return sorted(p.stem for p in BUILTIN_FLEETS_DIR.glob("*.yaml"))


def _resolve_spec(spec: str | Path) -> Path:
    path = Path(spec)
    if path.is_file():
        return path
    if isinstance(spec, str) and spec in list_builtin_fleets():
        return BUILTIN_FLEETS_DIR / f"{spec}.yaml"
    if path.is_dir():
        raise FleetError(f"{spec}: is a directory, expected a fleet YAML file")
    looks_like_path = (
        isinstance(spec, Path) or path.suffix in (".yaml", ".yml") or len(path.parts) > 1
    )
    if looks_like_path:
        raise FleetError(f"{spec}: fleet file not found")
    raise FleetError(
        f"unknown fleet {spec!r}: no such file and no built-in fleet of that name "
        f"(built-in: {', '.join(list_builtin_fleets())})"
    )


def load_fleet(spec: str | Path) -> Fleet:
    """Load a fleet from a YAML file path or a built-in fleet name (see list_builtin_fleets)."""
    path = _resolve_spec(spec)
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FleetError(f"{file}: cannot read fleet file ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = exc.problem or exc.context or "syntax error"
        raise FleetError(f"{file}: {where}invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise FleetError(f"{file}: invalid YAML: {exc}") from None
    return Fleet.from_dict(data, source=file, base_dir=path.parent)
