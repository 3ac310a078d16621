"""Edgent's dynamic mode in the runtime: switch (exit, cut) as the measured bandwidth moves.

The configuration map (:mod:`edgeweave.plan.edgent_dynamic`) is built offline; here each of its
configurations becomes an ordinary co-inference client running that exit's graph under that
cut's plan (created and deployed on first use, then kept: switching back is free). All of them
share one bandwidth estimator, fed by the real transfers of whichever configuration is serving,
and the selector turns its estimate into a state and a configuration.

How the link is observed (``observe``):

* ``"probe"`` (default): after each request a small heartbeat crosses the emulated link and
  its throughput is measured (a real device would time its keep-alives). The runtime client's
  own estimate from a request subtracts the server's timings and the RTT from the wall time,
  but gRPC and (de)serialisation overheads stay in, so a 4 KB activation at 80 Mbit/s (0.4 ms
  on the wire) reads as a few Mbit/s on a busy host; fed with that, the selector flapped
  between states (7 switches over a 20 s trace with 3 bandwidth steps).
* ``"transfers"``: the requests' own uploads (the runtime's estimator, as the client's
  ``adapt`` mode uses it), with the heartbeat only while a device-only configuration sends
  nothing; right when payloads are large next to the per-call overhead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from edgeweave.errors import EdgeWeaveError
from edgeweave.graph import Graph
from edgeweave.plan.branchy import exit_graph
from edgeweave.plan.edgent import ExitBranch, option_plan
from edgeweave.plan.edgent_dynamic import PROBE_BYTES, ConfigMap, EdgentSelector, MapEntry
from edgeweave.runtime.bandwidth import BandwidthEstimator
from edgeweave.runtime.client import ClientOptions, CoInferenceClient, Result
from edgeweave.runtime.shaper import LinkShaper
from edgeweave.security import ClientTLS

OBSERVE = ("probe", "transfers")


class EdgentClient:
    """Serve requests with the configuration the selector holds; see module doc."""

    def __init__(self, graph: Graph, branches: Sequence[ExitBranch], cmap: ConfigMap,
                 edge_target: str | None, *, link_mbps: float, confirm: int = 2,
                 token: str | None = None, tls: ClientTLS | None = None,
                 options: ClientOptions | None = None, observe: str = "probe") -> None:
        if observe not in OBSERVE:
            raise EdgeWeaveError(f"observe: expected one of {OBSERVE}, got {observe!r}")
        self.observe = observe
        self.graph = graph
        self.branches = list(branches)
        self.cmap = cmap
        self.edge_target = edge_target
        self.token, self.tls = token, tls
        # the per-configuration clients must not re-plan on their own: Edgent decides
        self.opts = replace(options or ClientOptions(), adapt=False)
        self.estimator = BandwidthEstimator()
        self.selector = EdgentSelector(cmap, initial_mbps=link_mbps, confirm=confirm)
        hop = self.branches[0].profile.hop_names()[0]
        self.hop = hop
        self.link_mbps = float(link_mbps)
        self._probe = LinkShaper(link_mbps, 0.0, burst_bytes=1)
        self._clients: dict[tuple[int, int], CoInferenceClient] = {}

    @property
    def switches(self) -> list[dict[str, Any]]:
        return self.selector.switches

    def set_link_mbps(self, mbps: float) -> None:
        """The emulated link's real bandwidth (a step or a trace sample); the selector learns
        of it only through what it observes (see module doc)."""
        self.link_mbps = float(mbps)
        self._probe.set_mbps(mbps)
        for client in self._clients.values():
            client.set_link_mbps(self.hop, mbps)

    def client_for(self, entry: MapEntry, example: torch.Tensor) -> CoInferenceClient:
        key = entry.option.key
        if key not in self._clients:
            branch = self.branches[entry.option.exit]
            chosen = option_plan(branch, entry.option, entry.state.plan_mbps, self.cmap.slo_ms)
            client = CoInferenceClient(exit_graph(self.graph, branch), chosen, self.edge_target,
                                       token=self.token, tls=self.tls, options=self.opts)
            if self.observe == "transfers":  # one view of the link for every configuration
                client.estimator = self.estimator
            client.set_link_mbps(self.hop, self.link_mbps)
            if client.deployment.route:
                client.deploy(example)
            self._clients[key] = client
        return self._clients[key]

    def infer(self, x: torch.Tensor) -> Result:
        entry = self.selector.current
        result = self.client_for(entry, x).infer(x)
        observed = self.observe == "transfers" and result.bytes_up and not result.fallback
        if not observed:
            self.estimator.observe(PROBE_BYTES, self._probe.transmit(PROBE_BYTES))
        if self.estimator.mbps is not None:
            self.selector.update(self.estimator.mbps)
        return result
