"""Shared stems (Mainstream, Jiang et al., ATC 2018): tenants fine-tuned from one backbone share
its frozen prefix, which runs once per frame for all of them.

* :mod:`.tenants` trains a real workload (digits tasks from one pretrained backbone, each at
  every sharing depth) and measures each version's accuracy;
* :mod:`.schedule` picks every tenant's depth and frame rate within a compute budget
  (exactly), with the no-sharing and maximal-sharing baselines;
* :mod:`.forest` is the executor (an ``nn.Module`` the serving engine batches like any model)
  and :mod:`.spec` the specifier a node builds it from.
"""

from edgeweave.serve.stems.backbone import STEM_BLOCKS, stem_backbone, stem_blocks
from edgeweave.serve.stems.costs import StemCosts, measure_stem_costs, ms_per_frame
from edgeweave.serve.stems.errors import TenancyError
from edgeweave.serve.stems.forest import StemForest, StreamRun, run_stream
from edgeweave.serve.stems.quality import METRICS, quality
from edgeweave.serve.stems.schedule import (
    Choice,
    Schedule,
    Tenant,
    max_sharing,
    no_sharing,
    schedule,
    stem_cost,
)
from edgeweave.serve.stems.spec import STEM_MODEL, forest_from_spec, forest_spec, stem_spec
from edgeweave.serve.stems.tenants import (
    TASKS,
    Backbone,
    TenantVersions,
    build_forest,
    fine_tune,
    pretrain_backbone,
    stem_data,
    train_tenants,
)

__all__ = [
    "METRICS",
    "STEM_BLOCKS",
    "STEM_MODEL",
    "TASKS",
    "Backbone",
    "Choice",
    "Schedule",
    "StemCosts",
    "StemForest",
    "StreamRun",
    "TenancyError",
    "Tenant",
    "TenantVersions",
    "build_forest",
    "fine_tune",
    "forest_from_spec",
    "forest_spec",
    "max_sharing",
    "measure_stem_costs",
    "ms_per_frame",
    "no_sharing",
    "pretrain_backbone",
    "quality",
    "run_stream",
    "schedule",
    "stem_backbone",
    "stem_blocks",
    "stem_cost",
    "stem_data",
    "stem_spec",
    "train_tenants",
]
