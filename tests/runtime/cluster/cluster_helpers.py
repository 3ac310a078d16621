"""Cluster test helpers: a three-device fleet, its plans, and in-process workers."""

from __future__ import annotations

from edgeweave.graph import capture_spec
from edgeweave.plan.multidevice import plan_cluster
from edgeweave.profile import analytic_profile
from edgeweave.runtime.cluster.worker import WorkerConfig, start_worker
from edgeweave.runtime.node import ServeOptions
from edgeweave.topology import Fleet

TOKEN = "cluster-test-token-0123456789ab"


def cluster_fleet(mbps: float = 10_000.0, size: int = 3) -> Fleet:
    """An rpi4 gateway ``a``, an rpi3 ``b`` and an rpi4 ``c`` on one fast medium; with ``size``
    4, four rpi4 ``a`` to ``d`` (the optimiser uses all four, a 2x2 grid for a 2-D split)."""
    nodes = [{"name": "a", "tier": "device", "hardware": "rpi4"},
             {"name": "b", "tier": "device", "hardware": "rpi3" if size < 4 else "rpi4"},
             {"name": "c", "tier": "device", "hardware": "rpi4"},
             {"name": "d", "tier": "device", "hardware": "rpi4"}][:size]
    names = [n["name"] for n in nodes]
    return Fleet.from_dict({
        "name": "test-cluster", "nodes": nodes, "links": [],
        "clusters": [{"name": "".join(names), "devices": names, "gateway": "a",
                      "medium": {"mbps": mbps, "rtt_ms": 0.01}}]})


_GRAPH = {}


def digits():
    if "g" not in _GRAPH:
        _GRAPH["g"] = capture_spec("digits-cnn")
    return _GRAPH["g"]


def digits_plan(method: str = "fused-tiles", size: int = 3, **options):
    """A plan on every device of ``cluster_fleet(size)``, pinned: the tests start a worker
    for each (unpinned, the planner would leave the rpi3 ``b`` out: plan.subclusters)."""
    graph = digits()
    fleet = cluster_fleet(size=size)
    options.setdefault("devices", list(fleet.cluster().devices))
    return plan_cluster(graph, analytic_profile(graph, fleet), fleet, methods=(method,),
                        **options)


class Workers:
    """In-process cluster workers on loopback (real gRPC): ``start(name) -> target``."""

    def __init__(self) -> None:
        self.servers: dict[str, object] = {}
        self.services: dict[str, object] = {}

    def start(self, name: str, dilation: float = 1.0, **config) -> str:
        server, service, port = start_worker(WorkerConfig(name, dilation=dilation, **config),
                                             ServeOptions("127.0.0.1:0", token=TOKEN))
        self.servers[name], self.services[name] = server, service
        return f"127.0.0.1:{port}"

    def stop(self, name: str) -> None:
        self.servers[name].stop(0)

    def close(self) -> None:
        for server in self.servers.values():
            server.stop(0)
