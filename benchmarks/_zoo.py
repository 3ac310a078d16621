"""Shared by the planner benchmarks: profile the model zoo once on this host and report."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgeweave import formats
from edgeweave.cli.reporting import table_json
from edgeweave.graph import capture_spec
from edgeweave.profile import Profile, load_profile, profile_graph
from edgeweave.topology import DEFAULT_FLEET, load_fleet

ZOO = ["alexnet", "vgg16", "resnet18", "resnet50", "mobilenet_v2", "squeezenet1_0",
       "shufflenet_v2_x1_0", "googlenet", "digits-cnn"]

EMULATION_NOTE = (
    "Tier latencies are EMULATED: layers are measured on this host (1 thread), fitted by "
    "per-layer-type regression, and scaled by each tier's hardware profile (effective GFLOP/s); "
    "links are the cost model's, not a real network."
)


def profile_zoo(models: list[str], out_dir: Path, repeats: int, reuse: bool
                ) -> dict[str, tuple[Profile, float, float]]:
    """model -> (profile, capture seconds, profiling seconds); profiles are saved to out_dir
    and, with reuse, read back instead of re-measured."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fleet = load_fleet(DEFAULT_FLEET)
    result = {}
    for name in models:
        path = out_dir / f"{name}.json"
        if reuse and path.exists():
            prof = load_profile(path)
            seconds = float(prof.model_extra["measurement"]["profiling_s"])
            result[name] = (prof, float("nan"), seconds)
            continue
        start = time.perf_counter()
        graph = capture_spec(name)
        captured = time.perf_counter() - start
        prof = profile_graph(graph, fleet, warmup=1, repeats=repeats)
        prof.save(path)
        result[name] = (prof, captured, float(prof.model_extra["measurement"]["profiling_s"]))
        print(f"profiled {name}: {len(prof.nodes)} nodes", file=sys.stderr)
    return result


def emit(console: Console, tables: list[Table], doc: dict, json_path: Path | None) -> None:
    """Print the tables and the JSON; the JSON names its benchmark (the script, unless the
    doc says), its format version and the printed tables."""
    for t in tables:
        console.print(t)
    doc = {formats.FIELD: formats.BENCHMARK, "benchmark": Path(sys.argv[0]).stem, **doc,
           "tables": [table_json(t) for t in tables]}
    text = json.dumps(doc, indent=1, default=float)
    print(text)
    if json_path:
        json_path.write_text(text)
