"""What a node itself saw during one row of the serving benchmark (`serving.py`): the batch
sizes it ran and why it refused or dropped requests, from its metrics (the Stats RPC, the
`edgeweave_serve_*` series) read before and after the row's runs. The loader's records say a
request was refused; the node's batch sizes and shed reasons say why (batches cut small by
tight deadlines, a queue full, a deadline the estimate said could not be met)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from edgeweave.runtime.loadgen_target import GrpcTarget

_KEY = re.compile(r"^(?P<name>[a-z_]+)\{(?P<tags>[^}]*)\}$")


def _parse(values: Mapping[str, float]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for key, value in values.items():
        m = _KEY.match(key)
        if m:
            tags = tuple(tuple(t.split("=", 1)) for t in m["tags"].split(",") if "=" in t)
            out[(m["name"], tags)] = value
    return out


def delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict:
    """The node's view of what happened between two snapshots of its metrics (one node, one
    model): {"batches": {size: how many batches}, "mean_batch": ..., "shed": {"stage reason":
    n}} (sizes above 8 are grouped by their bucket's upper edge)."""
    a, b = _parse(before), _parse(after)
    cumulative: dict[float, float] = {}
    shed: dict[str, int] = {}
    for (name, tags), value in b.items():
        grew = value - a.get((name, tags), 0.0)
        t = dict(tags)
        if name == "edgeweave_serve_batch_size_bucket" and t.get("le") != "+Inf":
            edge = float(t["le"])
            cumulative[edge] = cumulative.get(edge, 0.0) + grew
        elif name == "edgeweave_serve_shed_total" and grew:
            label = f"{t.get('stage', '?')} {t.get('reason', '?')}"
            shed[label] = shed.get(label, 0) + int(grew)
    batches, below = {}, 0.0
    for edge in sorted(cumulative):
        n = round(cumulative[edge] - below)
        below = cumulative[edge]
        if n:
            batches[int(edge)] = n
    total = sum(batches.values())
    return {"batches": batches,
            "mean_batch": (sum(s * n for s, n in batches.items()) / total) if total else None,
            "shed": shed}


def merge(parts: list[dict]) -> dict:
    """One row's view from its slices' views."""
    batches: dict[int, int] = {}
    shed: dict[str, int] = {}
    for p in parts:
        for s, n in p["batches"].items():
            batches[s] = batches.get(s, 0) + n
        for k, n in p["shed"].items():
            shed[k] = shed.get(k, 0) + n
    total = sum(batches.values())
    return {"batches": dict(sorted(batches.items())),
            "mean_batch": (sum(s * n for s, n in batches.items()) / total) if total else None,
            "shed": shed}


def said(view: dict) -> str:
    """One line: batch sizes (size x count) and shed reasons."""
    sizes = " ".join(f"{s}x{n}" for s, n in view["batches"].items()) or "none"
    shed = ", ".join(f"{k} {n}" for k, n in view["shed"].items()) or "none"
    return f"batches {sizes}; shed {shed}"


def snapshot(target: GrpcTarget) -> dict[str, float]:
    """The one node's metrics (`_serving_node_stats`)."""
    (values,) = target.stats().values()
    return values
