"""Adaptive inference: early exits (BranchyNet), DDNN multi-device exits, compression
variants and big/little model selection, measured on real data (the planner's side of model
selection is edgeweave.plan.select; Edgent's joint exit/partition optimiser is
edgeweave.plan.edgent)."""

from edgeweave.adapt.biglittle import (
    BigLittle,
    BigLittleReport,
    Calibration,
    biglittle_report,
    calibrate_threshold,
    escalation_mask,
)
from edgeweave.adapt.compress import (
    Variant,
    distill,
    filter_prune,
    low_rank,
    magnitude_prune,
    prune_then_quantize,
    quantize_dynamic,
    quantize_static,
)
from edgeweave.adapt.datasets import digits
from edgeweave.adapt.ddnn import DDNN, ddnn_report, make_views, train_ddnn
from edgeweave.adapt.exits import (
    BranchyNet,
    attach_exits,
    calibrate_thresholds,
    candidate_exit_points,
    exit_report,
    train_heads,
    train_joint,
)
from edgeweave.adapt.fit import accuracy, fit

__all__ = [
    "DDNN",
    "BigLittle",
    "BigLittleReport",
    "BranchyNet",
    "Calibration",
    "Variant",
    "accuracy",
    "attach_exits",
    "biglittle_report",
    "calibrate_threshold",
    "calibrate_thresholds",
    "candidate_exit_points",
    "ddnn_report",
    "digits",
    "distill",
    "escalation_mask",
    "exit_report",
    "filter_prune",
    "fit",
    "low_rank",
    "magnitude_prune",
    "make_views",
    "prune_then_quantize",
    "quantize_dynamic",
    "quantize_static",
    "train_ddnn",
    "train_heads",
    "train_joint",
]
