"""EdgeWeave: run deep learning across IoT devices, edge servers and the cloud.

The data path, top to bottom: a fleet and a model become a graph, a graph becomes a profile,
a profile becomes a plan.

    fleet = load_fleet("pi4-wifi-edge-cloud")
    graph = capture_spec("resnet18")
    prof = profile_graph(graph, fleet)
    best = plan(prof, objective="latency")
    stages = split(graph, best.placement)
"""

from edgeweave.errors import (
    EdgeWeaveError,
    FleetError,
    GraphError,
    ModelError,
    PlanError,
    ProfileError,
)
from edgeweave.graph import Graph, Stage, capture, capture_spec, list_models, run_stages, split
from edgeweave.plan import Plan, load_plan, plan, plot_plan
from edgeweave.profile import Profile, load_profile, profile_graph, retarget
from edgeweave.topology import Fleet, HardwareProfile, list_builtin_fleets, load_fleet

__version__ = "0.1.0"

__all__ = [
    "EdgeWeaveError",
    "Fleet",
    "FleetError",
    "Graph",
    "GraphError",
    "HardwareProfile",
    "ModelError",
    "Plan",
    "PlanError",
    "Profile",
    "ProfileError",
    "Stage",
    "__version__",
    "capture",
    "capture_spec",
    "list_builtin_fleets",
    "list_models",
    "load_fleet",
    "load_plan",
    "load_profile",
    "plan",
    "plot_plan",
    "profile_graph",
    "retarget",
    "run_stages",
    "split",
]
