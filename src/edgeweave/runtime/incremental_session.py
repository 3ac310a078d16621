"""One incremental-upload run, as `edgeweave infer|lab|netlab --upload incremental` and the
benchmark do it: the model's weights go up to the edge in IONN's order (or all at once, the
baseline) while the device answers queries, emulated as `runtime.session` emulates tiers (the
device's compute dilated to its speed; the edge at this host's; links shaped).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from edgeweave import formats
from edgeweave.codec.weights import WEIGHT_CODECS, check_weight_codec
from edgeweave.errors import EdgeWeaveError
from edgeweave.graph import Graph
from edgeweave.plan.ionn import UploadSchedule, upload_all_schedule, upload_schedule
from edgeweave.plan.upload_codec import CodecChoice, choose_upload_codec
from edgeweave.profile import Profile
from edgeweave.profile.weight_codecs import upload_bytes, weight_agreement
from edgeweave.runtime.client import ClientOptions, Result
from edgeweave.runtime.incremental import IncrementalClient, IncrementalRun
from edgeweave.runtime.upload import UploadStats
from edgeweave.security import ClientTLS

STRATEGIES = ("incremental", "whole")


def schedule_for(profile: Profile, strategy: str, codecs: Sequence[str] = ("none",),
                 graph: Graph | None = None, weight_codec: str = "none",
                 agreement: dict[str, float] | None = None) -> UploadSchedule:
    """IONN's order (``incremental``) or the whole model in one partition (``whole``), the
    weights sent as ``weight_codec`` (``auto``: :func:`choose_weight_codec`'s choice, with
    ``agreement``); a codec other than ``none`` needs ``graph`` (the sizes come from its
    weights)."""
    if weight_codec == "none":
        sizes = None
    elif graph is None:
        raise EdgeWeaveError(f"--upload-codec {weight_codec}: the upload's sizes need the model")
    elif weight_codec == "auto":
        choice = choose_weight_codec(graph, profile, codecs, agreement)
        weight_codec, sizes = choice.codec, upload_bytes(graph, choice.codec)
    else:
        sizes = upload_bytes(graph, check_weight_codec(weight_codec))
    if strategy == "incremental":
        return upload_schedule(profile, codecs, upload_bytes=sizes, weight_codec=weight_codec)
    return upload_all_schedule(profile, codecs, upload_bytes=sizes, weight_codec=weight_codec)


def choose_weight_codec(graph: Graph, profile: Profile, codecs: Sequence[str],
                        agreement: dict[str, float] | None = None) -> CodecChoice:
    """`plan.upload_codec`'s choice for ``graph``, its agreement measured here (only for the
    codecs that would pay; kept in ``agreement`` across calls, e.g. one per bandwidth)."""
    sizes = {c: upload_bytes(graph, c) for c in WEIGHT_CODECS}
    known = {} if agreement is None else agreement

    def measure(codec: str) -> float:
        if codec not in known:
            known[codec] = weight_agreement(graph, (codec,))[codec]
        return known[codec]

    return choose_upload_codec(profile, codecs, sizes, measure)


@dataclass
class IncrementalSummary:
    """A run's queries and upload events, with the figures IONN reports."""

    schedule: UploadSchedule
    results: list[Result]
    run: IncrementalRun
    stats: UploadStats
    dilation: float
    fleet: str

    def first_benefit_s(self) -> float | None:
        """Seconds from the upload's start until the first plan switch after which queries
        ran faster than before any partition landed (medians, as measured, upload traffic
        and all); None if none did during the run."""
        before = [q.ms for q in self.run.queries if q.landed == 0 and not q.fallback]
        local = statistics.median(before) if before else self.schedule.initial.total_ms
        for e in self.run.events:
            if e["event"] != "switched" or not e["partitions"]:
                continue
            after = [q.ms for q in self.run.queries if q.landed == e["partitions"]]
            if after and statistics.median(after) < local:
                return float(e["t_s"])
        return None

    def first_n_total_s(self, n: int) -> float:
        return sum(q.ms for q in self.run.queries[:n]) / 1000.0

    def to_json(self) -> dict[str, Any]:
        qs = self.run.queries
        ms = [q.ms for q in qs]
        segments = {k for r in self.results for k in r.segments}
        return {
            formats.FIELD: formats.RUNTIME_RUN,
            "model": self.schedule.model, "fleet": self.fleet,
            "mode": qs[-1].mode if qs else self.schedule.initial.mode,
            "device_dilation": self.dilation, "requests": len(qs),
            "median_ms": statistics.median(ms) if ms else None,
            "predicted_ms": qs[-1].predicted_ms if qs else self.schedule.initial.total_ms,
            "median_segments": {k: statistics.median(r.segments.get(k, 0.0)
                                                     for r in self.results)
                                for k in sorted(segments)},
            "fallbacks": sum(q.fallback for q in qs),
            "switches": [],
            "per_request_ms": ms, "per_request_mode": [q.mode for q in qs],
            "per_request_fallback": [q.fallback for q in qs],
            "per_request_t_s": [q.t_s for q in qs],
            "upload": {"strategy": self.schedule.strategy,
                       "time_to_first_benefit_s": self.first_benefit_s(),
                       "bytes_sent": self.stats.bytes_sent,
                       "chunks_sent": self.stats.chunks_sent,
                       "chunks_already_on_edge": self.stats.chunks_held,
                       "chunks_refused": self.stats.refused, "broken_calls": self.stats.broken,
                       "events": self.run.events, "schedule": self.schedule.to_json()},
        }


def run_incremental(graph: Graph, schedule: UploadSchedule, edge_target: str,
                    inputs: Sequence[torch.Tensor], *, link: tuple[float, float],
                    dilation: float, fleet: str, token: str | None = None,
                    tls: ClientTLS | None = None, options: ClientOptions | None = None,
                    interval_s: float = 0.0, until_uploaded: bool = False,
                    on_result: Callable[[Result], None] | None = None) -> IncrementalSummary:
    """Start the upload and send ``inputs`` one by one, at most one every ``interval_s`` (with
    ``until_uploaded``: cycling through them until every partition has landed, then ``inputs``
    once more); then stop the upload (what arrived stays on the edge: a later run resumes)."""
    opts = options or ClientOptions()
    opts.device_dilation = dilation
    client = IncrementalClient(graph, schedule, edge_target, link=link, token=token, tls=tls,
                               options=opts)
    results: list[Result] = []

    def query(x: torch.Tensor) -> None:
        began = time.monotonic()
        results.append(client.infer(x))
        if on_result is not None:
            on_result(results[-1])
        time.sleep(max(0.0, interval_s - (time.monotonic() - began)))

    try:
        client.start(inputs[0])
        k = 0
        while until_uploaded and not client.wait(0):
            query(inputs[k % len(inputs)])
            k += 1
        for x in inputs:
            query(x)
    finally:
        client.close()
    return IncrementalSummary(schedule, results, client.run, client.uploader.stats, dilation,
                              fleet)
