"""Where each layer runs: inference modes, chain scan, DAG min-cut, throughput pipelines; how
one inference is split across a cluster of devices (plan_cluster); and which model variant runs
(model selection over variants and big/little pairs)."""

from edgeweave.plan.bruteforce import monotone_placements
from edgeweave.plan.costs import OBJECTIVES, Breakdown, CostModel
from edgeweave.plan.edgent import EdgentChoice, EdgentOption, ExitBranch, plan_edgent
from edgeweave.plan.edgent_dynamic import (
    ConfigMap,
    EdgentSelector,
    bandwidth_states,
    build_config_map,
)
from edgeweave.plan.figure import plot_plan
from edgeweave.plan.modes import MODES, Mode
from edgeweave.plan.multidevice import plan_cluster
from edgeweave.plan.partition import Partition
from edgeweave.plan.planner import plan
from edgeweave.plan.record import Alternative, Plan, load_plan
from edgeweave.plan.select import (
    BigLittleCandidate,
    Candidate,
    Outcome,
    Selection,
    SelectionError,
    select,
)
from edgeweave.plan.variants import big_little_costs, profile_variants
from edgeweave.plan.within import plan_within

__all__ = [
    "MODES",
    "OBJECTIVES",
    "Alternative",
    "BigLittleCandidate",
    "Breakdown",
    "Candidate",
    "ConfigMap",
    "CostModel",
    "EdgentChoice",
    "EdgentOption",
    "EdgentSelector",
    "ExitBranch",
    "Mode",
    "Outcome",
    "Partition",
    "Plan",
    "Selection",
    "SelectionError",
    "bandwidth_states",
    "big_little_costs",
    "build_config_map",
    "load_plan",
    "monotone_placements",
    "plan",
    "plan_cluster",
    "plan_edgent",
    "plan_within",
    "plot_plan",
    "profile_variants",
    "select",
]
