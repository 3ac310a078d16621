"""Split learning and pipeline-parallel training (issue 6, part 6), with activation privacy.

* :mod:`~edgeweave.train.split.learning` -- device/edge split learning (sequential SplitNN,
  labels at the edge) with exact byte accounting through an activation codec;
* :mod:`~edgeweave.train.split.grpc_edge` -- the same over gRPC (split.proto), edge as server;
* :mod:`~edgeweave.train.split.privacy` -- noise on split activations (Mao et al. 2018) and
  nullification + noise (Arden, Wang et al. 2018), with what each guarantees;
* :mod:`~edgeweave.train.split.pipeline` -- GPipe micro-batch pipelines over 2-4 stages.

The gRPC module is imported on demand (it pulls in grpc).
"""

from edgeweave.train.split.learning import (
    EdgeLink,
    LocalLink,
    SplitConfig,
    SplitEpoch,
    SplitTrainer,
    make_edge,
)
from edgeweave.train.split.parts import SplitDevice, SplitEdge, StepReply, split_sequential
from edgeweave.train.split.privacy import (
    ActivationPrivacy,
    ClipNoise,
    Compose,
    Nullify,
    arden,
    privacy_from_spec,
)

__all__ = [
    "ActivationPrivacy", "ClipNoise", "Compose", "EdgeLink", "LocalLink", "Nullify",
    "SplitConfig", "SplitDevice", "SplitEdge", "SplitEpoch", "SplitTrainer", "StepReply",
    "arden", "make_edge", "privacy_from_spec", "split_sequential",
]
