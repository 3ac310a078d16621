"""What a run reports: the per-policy summary (service time, network delay, server delay,
failures by cause), server and access-point utilisation, per-request records, as plain JSON.

Every JSON document the simulator writes carries ``format_version`` (and ``kind``), so readers
such as the HTML report can check what they were given. The per-request records use the names
the runtime reports (``total_ms``, ``mode``, network and server time), so a simulated run and a
measured one can be compared row by row.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edgeweave.sim.engine import (
    CAPACITY,
    DEADLINE,
    FAILURE_CAUSES,
    MOBILITY,
    NETWORK,
    OK,
    STATUS,
    Outcome,
    Simulation,
)

#: bump when a field changes meaning or disappears (adding fields keeps the version)
FORMAT_VERSION = 1


def stats_ms(seconds: np.ndarray) -> dict[str, float | None]:
    """Mean and percentiles, in ms, of an array of seconds (None when it is empty)."""
    if not len(seconds):
        return {"mean": None, "p50": None, "p95": None, "p99": None, "max": None}
    ms = seconds * 1000.0
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"mean": float(ms.mean()), "p50": float(p50), "p95": float(p95),
            "p99": float(p99), "max": float(ms.max())}


def summarize(sim: Simulation, out: Outcome) -> dict[str, Any]:
    """The policy's summary over every request of the run (see the module doc)."""
    n = len(out.t)
    served = (out.status == OK) | (out.status == DEADLINE)
    counts = {name: int((out.status == code).sum()) for code, name in
              ((MOBILITY, "mobility"), (NETWORK, "network"), (CAPACITY, "capacity"),
               (DEADLINE, "deadline"))}
    failed = sum(counts.values())
    modes: dict[str, int] = {}
    if n:
        ids, freq = np.unique(out.work[out.work >= 0], return_counts=True)
        for wid, c in zip(ids.tolist(), freq.tolist(), strict=True):
            mode = sim.pricing.works[wid].mode
            modes[mode] = modes.get(mode, 0) + c
    duration = sim.scn.duration_s
    return {
        "policy": sim.policy_name,
        "devices": len(sim.devices),
        "requests": n,
        "served": int(served.sum()),
        "service_ms": stats_ms((out.done - out.t)[served]),
        "network_ms": stats_ms(out.network_s[served]),
        "server_ms": stats_ms(out.server_s[served]),
        "device_ms": stats_ms(out.device_s[served]),
        "failures": {**counts, "total": failed},
        "failure_rate": failed / n if n else 0.0,
        "failure_rates": {k: (v / n if n else 0.0) for k, v in counts.items()},
        "modes": modes,
        "accuracy": _accuracy(sim, out, served),
        "replans": sim.policy.replans,
        "switches": sim.policy.switches,
        "servers": {name: {"utilisation": s.busy_integral / (s.cores * duration),
                           "completed": s.completed, "refused": s.refused,
                           "load_factor": s.load_factor}
                    for name, s in sorted(sim.world.servers.items())},
        "access_points": {q.spec.name: {"uplink_utilisation": q.up.busy_s / duration,
                                        "uplink_mb": q.up.sent_bytes / 1e6}
                          for q in sim.world.access_points},
        "events": sim.env.scheduled,
        "notes": list(sim.pricing.notes),
    }


def _accuracy(sim: Simulation, out: Outcome, served: np.ndarray) -> float | None:
    """Mean accuracy of the answered requests whose plan records one (an Edgent exit's, a
    selected variant's), None when none does: what an accuracy-latency trade-off buys."""
    acc = np.array([np.nan if w.accuracy is None else w.accuracy for w in sim.pricing.works]
                   or [np.nan])
    got = acc[out.work[served & (out.work >= 0)]]
    got = got[np.isfinite(got)]
    return float(got.mean()) if len(got) else None


def records(sim: Simulation, out: Outcome) -> list[dict[str, Any]]:
    """One row per request, in the runtime's terms."""
    works = sim.pricing.works
    aps = [a.name for a in sim.scn.access_points]
    rows = []
    for i in range(len(out.t)):
        w = int(out.work[i])
        rows.append({
            "request": i, "t_s": float(out.t[i]), "device": int(out.device[i]),
            "access_point": aps[out.ap[i]] if out.ap[i] >= 0 else None,
            "mode": works[w].mode if w >= 0 else None,
            "edge": sim.edges[out.edge[i]] if out.edge[i] >= 0 else None,
            "status": STATUS[int(out.status[i])],
            "total_ms": float(out.done[i] - out.t[i]) * 1000.0,
            "network_ms": float(out.network_s[i]) * 1000.0,
            "server_ms": float(out.server_s[i]) * 1000.0,
            "device_ms": float(out.device_s[i]) * 1000.0,
        })
    return rows


def write_records(path: str | Path, sim: Simulation, out: Outcome) -> None:
    """Per-request records as JSON Lines (a header line with the format version first)."""
    with Path(path).open("w", encoding="utf-8") as f:
        f.write(json.dumps({"format_version": FORMAT_VERSION, "kind": "edgeweave.sim.records",
                            "scenario": sim.scn.name, "policy": sim.policy_name}) + "\n")
        for row in records(sim, out):
            f.write(json.dumps(row) + "\n")


def document(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """A JSON document the simulator writes: its kind and format version, then ``body``."""
    return {"format_version": FORMAT_VERSION, "kind": kind, **body}


__all__ = ["FAILURE_CAUSES", "FORMAT_VERSION", "document", "records", "stats_ms", "summarize",
           "write_records"]
