"""A fleet's cross-field checks: what no single node or link can validate on its own.

Unique names, links between known nodes, a device to start from, ``edge`` fields that name a
linked edge, valid clusters and one connected network. Each check returns the first problem as
``field.path: message`` (or None), so :class:`~edgeweave.topology.fleet.Fleet` raises it once
with the file name in front.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import networkx as nx

from edgeweave.topology.cluster import cluster_edges, cluster_problem
from edgeweave.topology.node import Node

if TYPE_CHECKING:
    from edgeweave.topology.fleet import Fleet


def node_names(nodes: list[Node]) -> str:
    """Node names for a message, comma-separated ("none" for an empty list)."""
    return ", ".join(n.name for n in nodes) or "none"


def consistency_problem(fleet: Fleet) -> str | None:
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

    known = node_names(fleet.nodes)
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
            edges = node_names(fleet.nodes_in("edge"))
            return f"{where}: {node.edge!r} is not an edge node (edge nodes: {edges})"
        if fleet.link(node.name, node.edge) is None:
            return f"{where}: device {node.name!r} has no link to edge {node.edge!r}"
    return None
