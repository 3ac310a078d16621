"""Models as DAGs: resolve a model specifier, capture it as costed nodes, and split it into
runnable per-tier stages, spatial tiles (fused tile partitioning) or layer-wise parts."""

from edgeweave.graph.blocks import FusedBlock, cut_depths, fused_block
from edgeweave.graph.capture import Graph, NodeInfo, capture, capture_spec
from edgeweave.graph.layerwise import LayerSplit, layerwise_splits, run_layerwise
from edgeweave.graph.regions import Region
from edgeweave.graph.reuse import reuse_tiles
from edgeweave.graph.split import Stage, run_stages, split, stage_from_nodes
from edgeweave.graph.tile_exec import TileModule, run_block, run_tiles, stitch
from edgeweave.graph.tiles import Tile, tile_grid, tiling_report
from edgeweave.graph.zoo import (
    ModelSpec,
    list_models,
    load_model,
    model_factory,
    model_skeleton,
    names_a_file,
)

__all__ = [
    "FusedBlock",
    "Graph",
    "LayerSplit",
    "ModelSpec",
    "NodeInfo",
    "Region",
    "Stage",
    "Tile",
    "TileModule",
    "capture",
    "capture_spec",
    "cut_depths",
    "fused_block",
    "layerwise_splits",
    "list_models",
    "load_model",
    "model_factory",
    "model_skeleton",
    "names_a_file",
    "reuse_tiles",
    "run_block",
    "run_layerwise",
    "run_stages",
    "run_tiles",
    "split",
    "stage_from_nodes",
    "stitch",
    "tile_grid",
    "tiling_report",
]
