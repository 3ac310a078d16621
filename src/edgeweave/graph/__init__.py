"""Models as DAGs: resolve a model specifier, capture it as costed nodes, and split it into
runnable per-tier stages."""

from edgeweave.graph.capture import Graph, NodeInfo, capture, capture_spec
from edgeweave.graph.split import Stage, run_stages, split, stage_from_nodes
from edgeweave.graph.zoo import ModelSpec, list_models, load_model, model_factory, names_a_file

__all__ = [
    "Graph",
    "ModelSpec",
    "NodeInfo",
    "Stage",
    "capture",
    "capture_spec",
    "list_models",
    "load_model",
    "model_factory",
    "names_a_file",
    "run_stages",
    "split",
    "stage_from_nodes",
]
