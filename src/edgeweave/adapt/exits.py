"""Early exits (BranchyNet): side branches after early backbone blocks, trained jointly.

A :class:`BranchyNet` runs a backbone (an ordered list of blocks) and, after chosen block
indices, a small classifier head: an *exit*. The final exit is the backbone's own output. At
inference a sample leaves at the first exit that is sure enough of its answer, so easy inputs
cost only the backbone prefix (and the heads) up to that exit.

The parts: :mod:`~edgeweave.adapt.exit_rules` (when a sample leaves: the ``entropy`` and
``confidence`` rules and what a threshold means),
:mod:`~edgeweave.adapt.branchynet` (the network, attaching heads),
:mod:`~edgeweave.adapt.exit_training` (training, threshold calibration) and
:mod:`~edgeweave.adapt.exit_report` (accuracy, FLOPs, latency per exit); this module re-exports
their public names.
"""

from edgeweave.adapt.branchynet import (
    BranchyNet,
    attach_exits,
    candidate_exit_points,
    make_head,
)
from edgeweave.adapt.exit_report import ExitReport, exit_flops, exit_report, measure_latency
from edgeweave.adapt.exit_rules import (
    ALWAYS,
    MODES,
    NEVER,
    ExitError,
    exit_mask,
    max_confidence,
    normalized_entropy,
)
from edgeweave.adapt.exit_training import calibrate_thresholds, train_heads, train_joint

__all__ = [
    "ALWAYS",
    "MODES",
    "NEVER",
    "BranchyNet",
    "ExitError",
    "ExitReport",
    "attach_exits",
    "calibrate_thresholds",
    "candidate_exit_points",
    "exit_flops",
    "exit_mask",
    "exit_report",
    "make_head",
    "max_confidence",
    "measure_latency",
    "normalized_entropy",
    "train_heads",
    "train_joint",
]
