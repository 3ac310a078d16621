"""Where each layer runs: inference modes, chain scan, DAG min-cut, throughput pipelines."""

from edgeweave.plan.bruteforce import monotone_placements
from edgeweave.plan.costs import OBJECTIVES, Breakdown, CostModel
from edgeweave.plan.figure import plot_plan
from edgeweave.plan.modes import MODES, Mode
from edgeweave.plan.planner import plan
from edgeweave.plan.record import Alternative, Plan, load_plan

__all__ = [
    "MODES",
    "OBJECTIVES",
    "Alternative",
    "Breakdown",
    "CostModel",
    "Mode",
    "Plan",
    "load_plan",
    "monotone_placements",
    "plan",
    "plot_plan",
]
