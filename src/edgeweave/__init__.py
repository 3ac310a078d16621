"""EdgeWeave: run deep learning across IoT devices, edge servers and the cloud.

The data path, top to bottom: a fleet and a model become a graph, a graph becomes a profile,
a profile becomes a plan.

    fleet = load_fleet("pi4-wifi-edge-cloud")
    graph = capture_spec("resnet18")
    prof = profile_graph(graph, fleet)
    best = plan(prof, objective="latency")
    stages = split(graph, best.placement)
"""

import sys
import types
from importlib import import_module
from typing import TYPE_CHECKING, Any

from edgeweave.errors import (
    EdgeWeaveError,
    FleetError,
    GraphError,
    ModelError,
    PlanError,
    ProfileError,
)

if TYPE_CHECKING:
    from edgeweave.graph import Graph, Stage, capture, capture_spec, list_models, run_stages, split
    from edgeweave.plan import Plan, load_plan, plan, plot_plan
    from edgeweave.profile import Profile, load_profile, profile_graph, retarget
    from edgeweave.topology import Fleet, HardwareProfile, list_builtin_fleets, load_fleet

# The public API loads on first use (PEP 562): `import edgeweave.train...` in a spawned device,
# peer or node process then pays for torch and what it uses, not for the planner's scipy,
# networkx and matplotlib (1.5 s of a 3.7 s import here).
_LAZY = {
    "edgeweave.graph": ("Graph", "Stage", "capture", "capture_spec", "list_models",
                        "run_stages", "split"),
    "edgeweave.plan": ("Plan", "load_plan", "plan", "plot_plan"),
    "edgeweave.profile": ("Profile", "load_profile", "profile_graph", "retarget"),
    "edgeweave.topology": ("Fleet", "HardwareProfile", "list_builtin_fleets", "load_fleet"),
}
_HOME = {name: module for module, names in _LAZY.items() for name in names}


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        # loading the subpackage edgeweave.plan sets this attribute to it; the public name
        # `plan` is the planner function, as it was when this file imported it eagerly
        if name == "plan" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'edgeweave' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


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
