"""The simulated infrastructure of a scenario: access points, edge and cloud servers, and the
links between them as queues (built once per run from the Scenario and its Fleet).

Every fleet link becomes two :class:`~edgeweave.sim.links.LinkQueue` (one per direction: links
are full duplex); every access point becomes an uplink and a downlink queue to its edge, shared
by the devices attached or one per device. Every edge and cloud node becomes a server with its
hardware's cores and the runtime server's admission limits, unless the scenario overrides them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import simpy

from edgeweave.runtime.server import NodeConfig
from edgeweave.sim.clock import Clock
from edgeweave.sim.jitter import jitter
from edgeweave.sim.links import LinkQueue
from edgeweave.sim.scenario import AccessPoint, Scenario, ServerSpec
from edgeweave.sim.servers import BatchServer, PSServer
from edgeweave.sim.workload import STREAM_SERVICE, rng_for
from edgeweave.topology import Fleet, Link, Node

Server = PSServer | BatchServer


@dataclass
class AccessPointQueues:
    spec: AccessPoint
    index: int
    up: LinkQueue
    down: LinkQueue

    @property
    def edge(self) -> str:
        return self.spec.edge


@dataclass
class World:
    env: Clock
    access_points: list[AccessPointQueues]
    servers: dict[str, Server]
    wan: dict[str, tuple[str, LinkQueue, LinkQueue]]  # edge -> (cloud, up, down)
    man: dict[tuple[str, str], LinkQueue] = field(default_factory=dict)  # (from, to) edge pair

    def neighbours(self, edge: str) -> list[str]:
        """Edges one MAN link away from ``edge``."""
        return [b for (a, b) in self.man if a == edge]


def edge_cloud(fleet: Fleet, edge: str) -> tuple[Node, Link] | None:
    """The cloud an edge forwards to: its fastest link to a cloud node (`Fleet.tier_path`'s
    rule), or None when the edge has no cloud."""
    best = None
    for link in fleet.links:
        if edge in (link.src, link.dst):
            other = fleet.node(link.other_end(edge))
            if other.tier == "cloud" and (best is None or link.mbps > best[1].mbps):
                best = (other, link)
    return best


def _server_spec(scn: Scenario, node: Node) -> ServerSpec:
    spec = scn.servers.get(node.name) or scn.servers.get(node.tier)
    return spec or ServerSpec.model_validate({})


def make_server(env: simpy.Environment, scn: Scenario, node: Node, on_done,  # type: ignore[no-untyped-def]
                index: int = 0) -> Server:
    """Node ``node``'s server; ``index`` numbers its random stream (its service jitter)."""
    spec = _server_spec(scn, node)
    jit = jitter(spec.service_cv, rng_for(scn, STREAM_SERVICE, 1000 + index))
    cores = spec.cores or node.hardware.cores
    defaults = NodeConfig(role=node.tier, name=node.name)
    slots = spec.slots or max(cores, defaults.max_concurrency)
    queue = defaults.max_queue if spec.queue is None else spec.queue
    if spec.discipline == "batch":
        return BatchServer(env, node.name, cores, queue, spec.max_batch,
                           spec.max_delay_ms / 1000.0, spec.marginal, on_done,
                           speed=spec.speed, jitter=jit)
    return PSServer(env, node.name, cores, slots, queue, on_done, speed=spec.speed, jitter=jit)


def _radio(ap: AccessPoint, down: bool) -> Link:
    mbps = (ap.downlink_mbps or ap.uplink_mbps) if down else ap.uplink_mbps
    data = {"from": ap.name, "to": ap.edge, "mbps": mbps, "rtt_ms": ap.rtt_ms}
    if ap.trace is not None and not (down and ap.downlink_mbps is not None):
        data["trace"] = ap.trace
    return Link.model_validate(data)


def build_world(scn: Scenario, on_done) -> World:  # type: ignore[no-untyped-def]
    env = Clock()
    buffer = None if scn.link_buffer_ms is None else scn.link_buffer_ms / 1000.0
    aps = [AccessPointQueues(ap, i,
                             LinkQueue(_radio(ap, False), f"{ap.name} up", buffer, not ap.shared),
                             LinkQueue(_radio(ap, True), f"{ap.name} down", buffer,
                                       not ap.shared))
           for i, ap in enumerate(scn.access_points)]
    fleet = scn.fleet
    servers = {n.name: make_server(env, scn, n, on_done, i)
               for i, n in enumerate(fleet.nodes) if n.tier in ("edge", "cloud")}
    wan: dict[str, tuple[str, LinkQueue, LinkQueue]] = {}
    man: dict[tuple[str, str], LinkQueue] = {}
    for edge in fleet.nodes_in("edge"):
        for link in fleet.links:
            other = link.other_end(edge.name) if edge.name in (link.src, link.dst) else None
            if other is not None and fleet.node(other).tier == "edge":
                man[(edge.name, other)] = LinkQueue(link, f"{edge.name}->{other}", buffer)
        best = edge_cloud(fleet, edge.name)
        if best is not None:
            wan[edge.name] = (best[0].name, LinkQueue(best[1], f"{edge.name} up", buffer),
                              LinkQueue(best[1], f"{edge.name} down", buffer))
    return World(env, aps, servers, wan, man)
