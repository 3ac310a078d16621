"""Peak memory of running one tile, measured in a fresh process (used by multi_device.py).

    python benchmarks/_tile_rss.py MODEL DEPTH ROWSxCOLS [DEPTH ROWSxCOLS ...]

For each (depth, grid) the tile with the largest feature maps is built as a worker would build
it (a TileModule holding only the block's weights; the rest of the model is dropped), the
kernel's peak-RSS counter is reset (/proc/self/clear_refs), and the tile runs once: the growth
of the peak RSS over the RSS before the run is what its feature maps and temporaries took.
Grid 1x1 is the whole block on one device. glibc is told to mmap every allocation above 64 KiB
(MALLOC_MMAP_THRESHOLD_, set by the caller) so freed tensors leave the RSS and do not hide a
later peak. Prints one JSON object.
"""

from __future__ import annotations

import gc
import json
import re
import sys
from pathlib import Path

import torch

from edgeweave.graph import capture_spec
from edgeweave.graph.blocks import fused_block
from edgeweave.graph.tile_exec import TileModule
from edgeweave.graph.tiles import peak_activation_bytes, tile_grid


def _status_mb(key: str) -> float:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"{key}:\s+(\d+) kB", text)
    assert match is not None, key
    return int(match.group(1)) / 1024


def main() -> None:
    torch.set_num_threads(1)
    model, pairs = sys.argv[1], sys.argv[2:]
    graph = capture_spec(model)
    x = torch.randn(graph.input_shape)
    jobs = []
    for depth_text, grid_text in zip(pairs[::2], pairs[1::2], strict=True):
        block = fused_block(graph, int(depth_text))
        grid = tuple(int(v) for v in grid_text.split("x"))
        tiles = tile_grid(block, grid)  # type: ignore[arg-type]
        tile = max(tiles, key=lambda t: peak_activation_bytes(block, t.holds))
        module = TileModule(graph, block, tile).eval()
        crop = x[:, :, tile.input.r0:tile.input.r1, tile.input.c0:tile.input.c1].contiguous()
        jobs.append((block, grid, tile, module, crop))
    del graph
    gc.collect()
    rows = []
    for block, grid, tile, module, crop in jobs:
        with torch.no_grad():
            module(crop)  # warm up: first-call allocations (kernels, caches) are not the tile's
            gc.collect()
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS
            before = _status_mb("VmRSS")
            out, _ = module(crop)
            peak = _status_mb("VmHWM")
            del out
        rows.append({"fused_depth": block.depth, "grid": list(grid), "tile": tile.index,
                     "rss_before_mb": before, "peak_rss_mb": peak,
                     "measured_activation_mb": peak - before,
                     "analytic_activation_mb": peak_activation_bytes(block, tile.holds) / 2**20,
                     "weights_mb": block.param_bytes / 2**20})
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
