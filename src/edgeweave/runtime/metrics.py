"""Prometheus metrics of one node: what an operator watches on a dashboard. One process is one
node, so the node's role comes from the scrape target, not from a label."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.requests = Counter("edgeweave_requests", "Infer requests served, by outcome",
                                ["outcome"], registry=reg)
        self.rejected = Counter("edgeweave_rejected", "Requests refused, by reason",
                                ["reason"], registry=reg)
        self.latency = Histogram("edgeweave_stage_seconds", "Seconds per phase of a request",
                                 ["phase"], buckets=_BUCKETS, registry=reg)
        self.bytes = Counter("edgeweave_tensor_bytes", "Tensor payload bytes",
                             ["direction"], registry=reg)
        self.queue_depth = Gauge("edgeweave_queue_depth", "Requests waiting for a slot",
                                 registry=reg)

    def serve_http(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)

    def snapshot(self) -> dict[str, float]:
        """Flat name -> value view of every sample, for the Stats RPC."""
        out: dict[str, float] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name.endswith(("_bucket", "_created")):
                    continue
                tags = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{tags}}}" if tags else sample.name] = float(sample.value)
        return out
