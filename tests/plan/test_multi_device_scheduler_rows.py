"""benchmarks/multi_device.py's stealing-vs-sharing rows compare the schedulers on one
partition: the plan they all run is a single fused block (DeepThings'), whose depth, grid and
reuse each run's calibration keeps, even where the optimiser alone would chain several."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeweave.graph import capture_spec
from edgeweave.profile import analytic_profile

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


class _Stop(Exception):
    pass


def test_the_scheduler_rows_run_one_fused_block(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import _multi_device_runs as runs
    from _multi_device_setups import cluster_fleet

    graph = capture_spec("resnet18")
    profile = analytic_profile(graph, cluster_fleet(1))
    fleet_of = cluster_fleet
    monkeypatch.setattr(runs, "CODECS", {"input_codec": "int8", "result_codec": "fp16"})
    ran = []

    def run_cluster(graph, plan, *args, **kwargs):
        ran.append((plan, kwargs["scheduler"]))
        raise _Stop

    monkeypatch.setattr(runs, "run_cluster", run_cluster)
    with pytest.raises(_Stop):
        runs.scheduler_runs(graph, profile, fleet_of, 3, 1, {})
    (plan, scheduler), = ran
    assert scheduler == "stealing"
    stages = plan.partition.stages()
    assert len(stages) == 1, [(s.depth, s.grid) for s in stages]
    # the cap is what makes it one block: unpinned, the optimiser chains several here
    free = runs.plan_emulated(graph, profile, fleet_of(3), methods=("fused-tiles",), cache={},
                              **runs.CODECS)
    assert len(free.partition.stages()) > 1
