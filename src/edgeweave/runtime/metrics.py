"""Prometheus metrics of one node: what an operator watches on a dashboard. One process is one
node, so the node's role comes from the scrape target, not from a label.

The serving engine reports through `ServeMetrics` (per served model: requests by outcome,
batch sizes, time in the queue, compute time per batch, end-to-end time, deadlines met, and
every rejection and drop by reason). A model's label is the name it was deployed under, which a
peer chooses, so at most `MAX_MODEL_LABELS` distinct names are kept as labels; later ones are
counted as "other" (a peer must not grow the scrape without bound).
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: every size up to 8 its own bucket: a batch-size distribution explains a node's refusals
_BATCH_BUCKETS = (1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 24, 32, 48, 64, 128)
MAX_MODEL_LABELS = 64
BATCH_BUCKET = "edgeweave_serve_batch_size_bucket"


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
        self.serve = ServeMetrics(reg)

    def serve_http(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)

    def snapshot(self) -> dict[str, float]:
        """Flat name -> value view of every sample, for the Stats RPC (histograms as count and
        sum, but the batch sizes with their buckets too: how many batches of each size)."""
        out: dict[str, float] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name.endswith("_created") or (
                        sample.name.endswith("_bucket") and sample.name != BATCH_BUCKET):
                    continue
                tags = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{tags}}}" if tags else sample.name] = float(sample.value)
        return out


class ServeMetrics:
    """The serving engine's observer (`edgeweave.serve.events.ServeObserver`), per model."""

    def __init__(self, reg: CollectorRegistry):
        def hist(name: str, doc: str, buckets: tuple[float, ...] = _BUCKETS) -> Histogram:
            return Histogram(name, doc, ["model"], buckets=buckets, registry=reg)

        self.outcomes = Counter("edgeweave_serve_requests", "Requests per served model, by "
                                "outcome (ok, cached, skipped, rejected, dropped)",
                                ["model", "outcome"], registry=reg)
        self.shed_reasons = Counter("edgeweave_serve_shed", "Requests rejected on arrival or "
                                    "dropped from a queue, by reason", ["model", "stage",
                                                                        "reason"], registry=reg)
        self.batch_size = hist("edgeweave_serve_batch_size", "Requests per batch",
                               _BATCH_BUCKETS)
        self.queue_s = hist("edgeweave_serve_queue_seconds", "Seconds a request waited for "
                            "its batch")
        self.compute_s = hist("edgeweave_serve_compute_seconds", "Seconds a batch computed")
        self.e2e_s = hist("edgeweave_serve_e2e_seconds", "Seconds from receipt to reply")
        self.slo = Counter("edgeweave_serve_slo", "Requests with a deadline, by whether it was "
                           "met (a shed request did not meet it)", ["model", "met"],
                           registry=reg)
        self.attainment = Gauge("edgeweave_serve_slo_attainment", "Share of requests with a "
                                "deadline answered within it", ["model"], registry=reg)
        self.depth_g = Gauge("edgeweave_serve_queue_depth", "Requests waiting", ["model"],
                             registry=reg)
        self.limit_g = Gauge("edgeweave_serve_batch_limit", "The batch size a model may run "
                             "now (adaptive batching moves it)", ["model"], registry=reg)
        self.front = Counter("edgeweave_serve_front", "Requests a served model's front stages "
                             "saw, by result (cache_hit, cache_miss, filtered), and cache "
                             "entries pushed to devices (pushed)", ["model", "result"],
                             registry=reg)
        self._labels: set[str] = set()
        self._slo: dict[str, list[int]] = {}  # label -> [met, total]
        self._lock = threading.Lock()

    def label(self, model: str) -> str:
        with self._lock:
            if model in self._labels:
                return model
            if len(self._labels) < MAX_MODEL_LABELS:
                self._labels.add(model)
                return model
        return "other"

    # ---- the engine's events --------------------------------------------------------------

    def batch(self, model: str, size: int, queue_s: list[float], compute_s: float,
              limit: int) -> None:
        m = self.label(model)
        self.batch_size.labels(m).observe(size)
        self.compute_s.labels(m).observe(compute_s)
        for q in queue_s:
            self.queue_s.labels(m).observe(q)
        self.limit_g.labels(m).set(limit)

    def shed(self, model: str, stage: str, reason: str) -> None:
        m = self.label(model)
        self.shed_reasons.labels(m, stage, reason).inc()
        self.outcomes.labels(m, stage).inc()

    def depth(self, model: str, queued: int) -> None:
        self.depth_g.labels(self.label(model)).set(queued)

    # ---- the node's view of an answered request -------------------------------------------

    def answered(self, model: str, source: str, e2e_s: float, met: bool | None) -> None:
        """A request answered (`source`: the model, or a front stage); `met`: whether within
        its deadline (None: it had none)."""
        m = self.label(model)
        outcome = "ok" if source == "model" else ("skipped" if source == "skipped"
                                                  else "cached")
        self.outcomes.labels(m, outcome).inc()
        self.e2e_s.labels(m).observe(e2e_s)
        if met is not None:
            self._deadline(m, met)

    def fronted(self, model: str, source: str, cached: bool, pushed: int) -> None:
        """A request to a model with front stages: answered by ``source`` (the model, the
        cache, or the filter), whether the model has a cache, and entries pushed with it."""
        m = self.label(model)
        if source == "filter":
            self.front.labels(m, "filtered").inc()
        elif cached:
            self.front.labels(m, "cache_hit" if source == "cache" else "cache_miss").inc()
        if pushed:
            self.front.labels(m, "pushed").inc(pushed)

    def missed(self, model: str) -> None:
        """A request with a deadline was shed: it did not meet it."""
        self._deadline(self.label(model), False)

    def _deadline(self, m: str, met: bool) -> None:
        self.slo.labels(m, "yes" if met else "no").inc()
        with self._lock:
            counts = self._slo.setdefault(m, [0, 0])
            counts[0] += met
            counts[1] += 1
            share = counts[0] / counts[1]
        self.attainment.labels(m).set(share)
