"""What a load test measured, per model: the row the load generator and the serving benchmark
print and write.

- throughput: requests the serving system answered, per second of the schedule;
- goodput: those answered within their deadline, per second;
- p50/p99: latency of the system's answers (sent to answered, as the device sees it);
- SLO attainment: the share of requests SENT that the system answered within their deadline
  (a fallback answer is counted as a miss: the device's own latency is simulated here);
- rejected: requests the system refused with a status (each then answered by its device's
  fallback when the device has one);
- throttled: requests the device did not send, its edge having refused most of its recent ones
  (`runtime.throttle`), answered by its fallback (or refused, without one) at once;
- fallback: requests answered by the device's fallback;
- lost: requests that ended no way at all (neither answered, nor refused or failed over).
Every request ends one way, so sent = answered + fallback + refused without fallback + lost.
- refusals: the requests not answered by the system (refused, failed or throttled), by the
  status they ended with and, within it, by why (`why`: the status's details with their
  figures replaced by N, so one rule's refusals count together), with an example of each
  details as said: what the counts of rejections are made of.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from edgeweave.serve.loadgen.driver import Record, Run

#: The row's keys, in the order of the table and the JSON (the benchmark's contract).
KEYS = ("system", "model", "load", "offered_rps", "throughput_rps", "goodput_rps", "p50_ms",
        "p99_ms", "slo_attainment", "rejected", "fallback", "lost")


@dataclass
class Row:
    system: str
    model: str
    load: float | str  # a share of capacity (1.5 = 150%), or a label
    offered_rps: float
    throughput_rps: float
    goodput_rps: float
    p50_ms: float
    p99_ms: float
    slo_attainment: float
    rejected: int
    fallback: int
    lost: int
    sent: int = 0
    answered: int = 0
    refused: int = 0  # refused and not answered by a fallback
    throttled: int = 0  # never sent (the device's throttle): in fallback or refused
    refusals: dict[str, dict] = field(default_factory=dict)  # `refusals`, by status

    def as_json(self) -> dict[str, object]:
        """The contract's keys (and how many were throttled, and the refusals by status and
        why), NaN as null."""
        row = asdict(self)
        return {k: (None if isinstance(row[k], float) and math.isnan(row[k]) else row[k])
                for k in (*KEYS, "throttled", "refusals")}

    @property
    def adds_up(self) -> bool:
        return self.sent == self.answered + self.fallback + self.refused + self.lost


def summarize(run: Run, system: str, load: float | str = "") -> list[Row]:
    """One row per model (and one for all of them when there are several)."""
    models = sorted({r.model for r in run.records})
    rows = [_row([r for r in run.records if r.model == m], run.duration_s, system, m, load)
            for m in models]
    if len(models) > 1:
        rows.append(_row(run.records, run.duration_s, system, "all", load))
    return rows


def _row(records: Sequence[Record], duration_s: float, system: str, model: str,
         load: float | str) -> Row:
    span = max(duration_s, 1e-9)
    answered = [r for r in records if r.end == "answered"]
    latencies = np.array([r.latency_s for r in answered]) * 1000.0
    in_time = sum(r.in_time for r in records)
    return Row(
        system=system, model=model, load=load,
        offered_rps=len(records) / span,
        throughput_rps=len(answered) / span,
        goodput_rps=in_time / span,
        p50_ms=float(np.percentile(latencies, 50)) if len(latencies) else math.nan,
        p99_ms=float(np.percentile(latencies, 99)) if len(latencies) else math.nan,
        slo_attainment=in_time / len(records) if records else math.nan,
        rejected=sum(r.refused_by_system for r in records),
        fallback=sum(r.end == "fallback" for r in records),
        lost=sum(r.end == "lost" for r in records),
        sent=len(records), answered=len(answered),
        refused=sum(r.end == "refused" for r in records),
        throttled=sum(r.throttled for r in records),
        refusals=refusals(records))


#: A figure in a status's details (ms left, a batch size, a queue's length).
_FIGURE = re.compile(r"\d+(?:\.\d+)?")


def why(detail: str) -> str:
    """A refusal's details with its figures replaced by N: the rule that refused it, the same
    for every request that rule refused ("cannot meet its deadline: N ms left, ...")."""
    return _FIGURE.sub("N", detail).strip() or "(no details)"


def refusals(records: Sequence[Record]) -> dict[str, dict]:
    """The requests the system did not answer (refused with a status, failed, throttled by the
    device), by status: {status: {"n": how many, "why": {why(details): how many}, "example":
    {why(details): the first such details as said}}}, each status's reasons most frequent
    first."""
    out: dict[str, dict] = {}
    for r in records:
        if r.end == "answered" or r.end == "lost":
            continue
        entry = out.setdefault(r.status or "?", {"n": 0, "why": {}, "example": {}})
        entry["n"] += 1
        kind = why(r.detail)
        entry["why"][kind] = entry["why"].get(kind, 0) + 1
        entry["example"].setdefault(kind, r.detail)
    for entry in out.values():
        entry["why"] = dict(sorted(entry["why"].items(), key=lambda kv: -kv[1]))
    return out


def table(rows: Sequence[Row]) -> str:
    """The rows as a plain-text table (the benchmark prints it; the CLI renders its own)."""
    head = ("system", "model", "load", "offered/s", "thru/s", "good/s", "p50 ms", "p99 ms",
            "SLO", "rejected", "fallback", "lost")
    lines = [head]
    for r in rows:
        load = f"{r.load:.0%}" if isinstance(r.load, float) else str(r.load)
        lines.append((r.system, r.model, load, f"{r.offered_rps:.1f}",
                      f"{r.throughput_rps:.1f}", f"{r.goodput_rps:.1f}", _ms(r.p50_ms),
                      _ms(r.p99_ms), f"{r.slo_attainment:.1%}", str(r.rejected),
                      str(r.fallback), str(r.lost)))
    widths = [max(len(line[k]) for line in lines) for k in range(len(head))]
    return "\n".join("  ".join(cell.rjust(w) if k > 2 else cell.ljust(w)
                               for k, (cell, w) in enumerate(zip(line, widths, strict=True)))
                     for line in lines)


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f}"
