"""The partition figures of benchmarks/multi_device.py (no processes, no timing): fused tiles'
halo and traffic per depth and grid with data reuse's savings, memory per device (largest tile vs
the whole block, analytic and measured by benchmarks/_tile_rss.py in a fresh process), layer-wise
delivery bytes per frame (MoDNN's biased 1-D split vs even rows vs the 2-D grid), and a sparse
fully connected layer split by spectral co-clustering vs plain and grid splits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edgeweave.graph import Graph
from edgeweave.graph.blocks import cut_depths, fused_block
from edgeweave.graph.layerwise import layer_units, layerwise_splits
from edgeweave.graph.reuse import reuse_savings
from edgeweave.graph.sparse_fc import magnitude_mask, split_sparse
from edgeweave.graph.tiles import tile_grid, tiling_report
from edgeweave.topology import Fleet, serialize_ms

HERE = Path(__file__).parent


def tiling_rows(graph: Graph) -> list[dict[str, Any]]:
    """Every fused depth x every grid up to 6x6 that fits; reuse on square grids."""
    rows = []
    for depth in sorted(cut_depths(graph)):
        block = fused_block(graph, depth)
        _, height, width = block.output.shape
        for r in range(1, min(height, 6) + 1):
            for c in range(1, min(width, 6) + 1):
                report = tiling_report(block, tile_grid(block, (r, c)), (r, c)).to_dict()
                sent, received = report.pop("tile_sent_bytes"), report.pop("tile_received_bytes")
                report.update(max_tile_sent_bytes=max(sent), max_tile_received_bytes=max(received),
                              total_sent_bytes=sum(sent), total_received_bytes=sum(received))
                if r == c and r > 1:
                    report.update(reuse_savings(block, (r, c)))
                rows.append(report)
    return rows


def memory_rows(model: str, depths: list[int], grids: list[str]) -> list[dict[str, Any]]:
    args = [v for d in depths for g in grids for v in (str(d), g)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, str(HERE / "_tile_rss.py"), model, *args],
                         capture_output=True, text=True, env=env, check=True)
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    for row in rows:
        whole = next(r for r in rows if r["fused_depth"] == row["fused_depth"]
                     and r["grid"] == [1, 1])
        for kind in ("measured", "analytic"):
            tile = row["weights_mb"] + row[f"{kind}_activation_mb"]
            one = whole["weights_mb"] + whole[f"{kind}_activation_mb"]
            row[f"{kind}_saving_vs_whole_pct"] = 100.0 * (1 - tile / one)
            row[f"{kind}_feature_map_saving_pct"] = 100.0 * (
                1 - row[f"{kind}_activation_mb"] / whole[f"{kind}_activation_mb"])
        row["model"] = model
    return rows


def layerwise_rows(graph: Graph, fleet: Fleet) -> list[dict[str, Any]]:
    cluster = fleet.cluster()
    speeds = [fleet.node(n).hardware.gflops for n in cluster.devices]
    convs = [u for u in layer_units(graph) if graph.node(u[0]).op == "conv2d"]
    rows = []
    for k in range(2, min(4, len(speeds)) + 1):
        for scheme in ("biased", "even", "grid"):
            splits = layerwise_splits(graph, speeds[:k], scheme, convs)
            total = sum(s.scatter_bytes + s.gather_bytes for s in splits)
            rows.append({"model": graph.name, "devices": k, "scheme": scheme,
                         "speeds_gflops": speeds[:k], "conv_layers": len(convs),
                         "delivery_bytes_per_frame": total,
                         "delivery_ms_on_medium": serialize_ms(total, cluster.medium.mbps)})
    return rows


def sparse_rows(graph: Graph) -> list[dict[str, Any]]:
    """The last fully connected layer magnitude-pruned to 10%, and a layer with planted block
    structure (what a structured pruning leaves), split across 2-4 devices."""
    last = [u for u in layer_units(graph) if graph.node(u[0]).op == "linear"][-1][0]
    weight = graph.module.get_submodule(str(next(
        n for n in graph.module.graph.nodes if n.name == last).target)).weight
    rng = np.random.default_rng(0)
    rows_, cols_ = rng.integers(0, 4, 1000), rng.integers(0, 4, 1024)
    planted = rng.random((1000, 1024)) < np.where(rows_[:, None] == cols_[None, :], 0.3, 0.01)
    rows = []
    for name, mask in ((f"{graph.name}.{last} pruned to 10%", magnitude_mask(weight, 0.1)),
                       ("planted 4-block layer 1000x1024", planted)):
        for k in (2, 3, 4):
            for method in ("cocluster", "plain", "grid"):
                split = split_sparse(mask, k, method)
                rows.append({"layer": name, **split.to_dict()})
    return rows
