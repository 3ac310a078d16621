"""An input-filtering cascade in front of a served model (NoScope, FFS-VA): a difference
detector, a specialised model trained on the reference model's labels, thresholds chosen by a
cost-based optimiser, and many streams sharing the filters."""

from edgeweave.serve.filter.cascade import Cascade, Query, Thresholds, stage_of
from edgeweave.serve.filter.difference import DifferenceDetector
from edgeweave.serve.filter.optimise import FilterChoice, StageCosts, optimise
from edgeweave.serve.filter.run import StreamRun, run_interleaved, run_stream
from edgeweave.serve.filter.specialised import SpecialisedCNN, train_specialised
from edgeweave.serve.filter.streams import MuxRun, StreamMux
from edgeweave.serve.filter.tune import TunedFilter, tune_cascade

__all__ = [
    "Cascade",
    "DifferenceDetector",
    "FilterChoice",
    "MuxRun",
    "Query",
    "SpecialisedCNN",
    "StageCosts",
    "StreamMux",
    "StreamRun",
    "Thresholds",
    "TunedFilter",
    "optimise",
    "run_interleaved",
    "run_stream",
    "stage_of",
    "train_specialised",
    "tune_cascade",
]
