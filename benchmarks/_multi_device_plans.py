"""The optimiser's PREDICTED rows of benchmarks/multi_device.py (no processes): each method's
best plan and its speedup vs one device for 1..6 devices (at most the cluster's), and data
reuse forced off / on.
``fleet_of(n)``: the first n devices of the cluster (multi_device.local_fleet)."""

from __future__ import annotations

from typing import Any

import _multi_device_runs
from _multi_device_runs import FleetOf, blocks_of
from edgeweave.graph import Graph
from edgeweave.plan.fused_search import TileCache
from edgeweave.plan.multidevice import plan_cluster
from edgeweave.profile import Profile


def speedup_rows(graph: Graph, profile: Profile, source: str, cache: TileCache,
                 fleet_of: FleetOf, ms_per_mb: float = 0.0) -> list[dict[str, Any]]:
    """The optimiser's plans for 1..6 devices per method; a fused-tile row also gives the
    best plan of one fused block and of several (DeeperThings) beside each other."""
    rows = []
    one_ms = None
    for n in range(1, _multi_device_runs.MAX_DEVICES + 1):
        fleet = fleet_of(n)
        for method in ("fused-tiles", "layer-wise", "single"):
            plan = plan_cluster(graph, profile, fleet, methods=(method,), cache=cache,
                                ms_per_mb=ms_per_mb, **_multi_device_runs.CODECS)
            part = plan.partition
            assert part is not None
            if method == "single" and n == 1:
                one_ms = plan.predicted["total_ms"]
            rows.append({
                "model": graph.name, "method": method, "devices": n,
                "device_hardware": [load.hardware for load in part.load],
                "scheduler": "sharing (static plan)",
                "latency_ms": None, "fps": None, "speedup_vs_one": None, "peak_rss_mb": None,
                "predicted_ms": plan.predicted["total_ms"],
                "predicted_fps": plan.predicted["throughput_fps"],
                "bytes_per_frame": sum(load.in_bytes + load.out_bytes for load in part.load),
                "fused_depth": part.fused_depth, "grid": part.grid, "reuse": part.reuse,
                "blocks": blocks_of(part),
                "one_block_ms": (part.search.get("blocks") or {}).get("one_block_ms"),
                "multi_block_ms": (part.search.get("blocks") or {}).get("multi_block_ms"),
                "multi_block": (part.search.get("blocks") or {}).get("multi_block"),
                "split_layers": len(part.layers), "rest_mode": part.rest_mode,
                "exact": plan.exact, "configs": part.search["configs"], "profile": source})
    for row in rows:
        row["predicted_speedup_vs_one"] = one_ms / row["predicted_ms"] if one_ms else None
        for key in ("one_block", "multi_block"):  # the best plan of each kind, predicted
            ms = row[f"{key}_ms"]
            row[f"{key}_speedup"] = one_ms / ms if one_ms and ms else None
    best = []
    rank = {"single": 0, "layer-wise": 1, "fused-tiles": 2}  # ties go to the simpler method
    for n in range(1, _multi_device_runs.MAX_DEVICES + 1):
        mine = [r for r in rows if r["devices"] == n]
        best.append({**min(mine, key=lambda r: (round(r["predicted_ms"], 6), rank[r["method"]])),
                     "method_choice": "best"})
    return rows + best


def reuse_rows(graph: Graph, profile: Profile, cache: TileCache, fleet_of: FleetOf,
               ms_per_mb: float = 0.0) -> list[dict[str, Any]]:
    """Predicted latency of the best fused-tile plan with data reuse forced on, and off."""
    rows = []
    for n in [k for k in (2, 4, 6) if k <= _multi_device_runs.MAX_DEVICES]:
        for reuse in (False, True):
            plan = plan_cluster(graph, profile, fleet_of(n), methods=("fused-tiles",),
                                reuse=reuse, cache=cache, ms_per_mb=ms_per_mb, max_blocks=1,
                                **_multi_device_runs.CODECS)
            part = plan.partition
            assert part is not None
            rows.append({"model": graph.name, "devices": n, "reuse": reuse, "max_blocks": 1,
                         "predicted_ms": plan.predicted["total_ms"],
                         "fused_depth": part.fused_depth, "grid": part.grid,
                         "bytes_per_frame": sum(x.in_bytes + x.out_bytes for x in part.load),
                         "tile_compute_ms": sum(x.compute_ms for x in part.load)})
    return rows
