"""The live one-line summary `edgeweave serve` prints every few seconds: what the node served
since the last line, per model, read from its own Prometheus metrics (one place for each count;
the summary only takes differences).

    12:00:10 edge +10s: 153 in, 140 answered, 13 shed (deadline 9, queue_full 4) | resnet18
    8.1/s p50 41 ms p99 90 ms batch 3.2 SLO 97% queued 3 | mobilenet_v2 ...

Percentiles come from the end-to-end histogram's buckets (interpolated within a bucket), so they
are as coarse as its buckets; the Prometheus endpoint has the full histograms.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable

from prometheus_client import CollectorRegistry

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(registry: CollectorRegistry) -> Samples:
    out: Samples = {}
    for family in registry.collect():
        if not family.name.startswith("edgeweave_serve"):
            continue
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def _quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """q-quantile from cumulative (upper bound, count) pairs, interpolated in its bucket."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    target = q * buckets[-1][1]
    low_bound, low_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= target:
            if bound == float("inf"):
                return low_bound
            share = (target - low_count) / (count - low_count) if count > low_count else 1.0
            return low_bound + share * (bound - low_bound)
        low_bound, low_count = bound, count
    return low_bound


class LiveSummary:
    def __init__(self, registry: CollectorRegistry, name: str, interval_s: float,
                 out: Callable[[str], None] = print):
        self.registry, self.name, self.interval_s, self.out = registry, name, interval_s, out
        self._last = _samples(registry)
        self._stop = threading.Event()

    def start(self) -> LiveSummary:
        threading.Thread(target=self._loop, name="serve-summary", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            line = self.line()
            if line:
                self.out(line)

    def line(self) -> str | None:
        """What happened since the last call, or None if nothing did."""
        now = _samples(self.registry)
        d = {k: v - self._last.get(k, 0.0) for k, v in now.items()}
        self._last = now
        outcomes: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        reasons: dict[str, float] = defaultdict(float)
        for (name, labels), v in d.items():
            lab = dict(labels)
            if name == "edgeweave_serve_requests_total":
                outcomes[lab["model"]][lab["outcome"]] += v
            elif name == "edgeweave_serve_shed_total" and v:
                reasons[lab["reason"]] += v
        total = sum(sum(o.values()) for o in outcomes.values())
        if not total:
            return None
        shed = sum(reasons.values())
        why = ", ".join(f"{r} {n:.0f}" for r, n in sorted(reasons.items()))
        head = (f"{time.strftime('%H:%M:%S')} {self.name} +{self.interval_s:g}s: {total:.0f} in, "
                f"{total - shed:.0f} answered, {shed:.0f} shed" + (f" ({why})" if why else ""))
        return " | ".join([head, *(self._model(m, d, now) for m in sorted(outcomes))])

    def _model(self, model: str, d: Samples, now: Samples) -> str:
        def get(samples: Samples, name: str, **labels: str) -> float:
            return samples.get((name, tuple(sorted({"model": model, **labels}.items()))), 0.0)

        answered = get(d, "edgeweave_serve_e2e_seconds_count")
        buckets = sorted((float(dict(lab)["le"]), v) for (name, lab), v in d.items()
                         if name == "edgeweave_serve_e2e_seconds_bucket"
                         and dict(lab).get("model") == model)
        parts = [f"{model} {answered / self.interval_s:.1f}/s"]
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            value = _quantile(buckets, q)
            if value is not None:
                parts.append(f"{label} {value * 1000:.0f} ms")
        batches = get(d, "edgeweave_serve_batch_size_count")
        if batches:
            parts.append(f"batch {get(d, 'edgeweave_serve_batch_size_sum') / batches:.1f}")
        met, missed = (get(d, "edgeweave_serve_slo_total", met="yes"),
                       get(d, "edgeweave_serve_slo_total", met="no"))
        if met + missed:
            parts.append(f"SLO {100 * met / (met + missed):.0f}%")
        hits, misses = (get(d, "edgeweave_serve_front_total", result="cache_hit"),
                        get(d, "edgeweave_serve_front_total", result="cache_miss"))
        if hits + misses:
            parts.append(f"cache {100 * hits / (hits + misses):.0f}% hit")
        filtered = get(d, "edgeweave_serve_front_total", result="filtered")
        if filtered:
            parts.append(f"filtered {filtered:.0f}")
        pushed = get(d, "edgeweave_serve_front_total", result="pushed")
        if pushed:
            parts.append(f"pushed {pushed:.0f}")
        parts.append(f"queued {get(now, 'edgeweave_serve_queue_depth'):.0f}")
        return " ".join(parts)
