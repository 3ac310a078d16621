"""Predicted cluster plans on the first 1..6 pi-cluster devices, and what planning them took.

A user who adds a device expects the planner at worst to ignore it: this prints, for each model,
objective and device count, the plan's predicted latency and frames/s, the devices it uses and
the sub-clusters it searched (``partition.search["subsets"]``, plan.multidevice), and the
seconds ``plan_cluster`` took (a fresh tile cache each call, so every call pays its own
tiling). No processes run: the figures are the optimiser's predictions.

The profiles are read from ``--profiles`` (``<model>.json``, e.g. out/profiles written by
benchmarks/multi_device.py, ideally with a tile calibration: ``--calibrate`` measures one here
first, which takes ~20 s and is not saved). Usage::

    PYTHONPATH=src:benchmarks .venv/bin/python benchmarks/cluster_device_counts.py \\
        --profiles out/profiles [--calibrate] [--json out.json]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from _multi_device_setups import cluster_fleet
from _zoo import emit
from edgeweave.graph import capture_spec
from edgeweave.plan.fused_search import TileCache
from edgeweave.plan.multidevice import plan_cluster
from edgeweave.profile import load_profile
from edgeweave.profile.tile_calibration import calibrate_tiles

#: (label, objective, frames in flight)
OBJECTIVES = [("latency", "latency", None), ("throughput", "throughput", None),
              ("throughput, 14 in flight", "throughput", 14)]


def rows_for(name: str, profile_dir: Path, calibrate: bool, counts: list[int],
             max_blocks: int, ms_per_mb: float) -> list[dict[str, Any]]:
    graph = capture_spec(name)
    profile = load_profile(profile_dir / f"{name}.json")
    if calibrate:
        profile = calibrate_tiles(graph, profile)
    rows = []
    for label, objective, in_flight in OBJECTIVES:
        for n in counts:
            cache: TileCache = {}
            start = time.perf_counter()
            plan = plan_cluster(graph, profile, cluster_fleet(n), objective=objective,
                                in_flight=in_flight, max_blocks=max_blocks, cache=cache,
                                input_codec="int8", result_codec="fp16", ms_per_mb=ms_per_mb)
            seconds = time.perf_counter() - start
            part = plan.partition
            assert part is not None
            subsets = part.search.get("subsets") or {}
            rows.append({"model": name, "objective": label, "devices": n,
                         "predicted_ms": float(plan.predicted["total_ms"]),
                         "predicted_fps": float(plan.predicted["throughput_fps"]),
                         "method": plan.mode, "uses": len(part.devices),
                         "subsets_searched": len(subsets.get("searched", [])),
                         "plan_s": seconds, "algorithm": plan.algorithm})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["vgg16", "resnet18"])
    ap.add_argument("--profiles", type=Path, default=Path("out/profiles"))
    ap.add_argument("--calibrate", action="store_true",
                    help="measure a tile calibration on this host first")
    ap.add_argument("--devices", default="1,2,3,4,5,6")
    ap.add_argument("--max-blocks", type=int, default=3)
    ap.add_argument("--ms-per-mb", type=float, default=0.0,
                    help="the runtime's cost per MiB a task carries (plan_cluster's)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    parts = [n.strip() for n in args.devices.split(",")]
    counts = [int(n) for n in parts if n.isdigit()]
    if not counts or len(counts) != len(parts) or min(counts) < 1 or max(counts) > 6:
        ap.error(f"--devices {args.devices!r}: expected comma-separated counts from 1 to 6")
    missing = [m for m in args.models if not (args.profiles / f"{m}.json").is_file()]
    if missing:
        ap.error(f"--profiles {str(args.profiles)!r}: no {missing[0]}.json there (profile the "
                 "model first, e.g. benchmarks/multi_device.py writes out/profiles)")
    if not 1 <= args.max_blocks <= 8:
        ap.error(f"--max-blocks {args.max_blocks}: expected 1 to 8")
    rows = [r for name in args.models
            for r in rows_for(name, args.profiles, args.calibrate, counts, args.max_blocks,
                              args.ms_per_mb)]
    table = Table(title="predicted plans on the first N pi-cluster devices (int8 / fp16)")
    cols = ["model", "objective", "devices", "predicted_ms", "predicted_fps", "uses",
            "subsets_searched", "plan_s", "algorithm"]
    for col in cols:
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(*(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols))
    emit(Console(width=200), [table], {"rows": rows, "max_blocks": args.max_blocks,
                                       "ms_per_mb": args.ms_per_mb,
                                       "profiles": str(args.profiles)}, args.json)


if __name__ == "__main__":
    main()
