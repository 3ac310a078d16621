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


def test_speedups_are_over_the_faster_way_one_device_runs_the_model(monkeypatch):
    # one device through its fused-tile worker (218 ms) and in the gateway's process (166 ms):
    # the rows' speedups are over the faster, so a plan that computes on one device is ~1x
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import _multi_device_runs as runs

    def row(method: str, devices: int, latency_ms: float, in_flight: int = 1) -> dict:
        return {"method": method, "devices": devices, "latency_ms": latency_ms,
                "fps": 1000.0 * in_flight / latency_ms, "in_flight": in_flight}

    rows = [row("fused-tiles", 1, 218.0), row("fused-tiles", 2, 200.0),
            row("layer-wise", 2, 170.0), row("layer-wise", 1, 166.0),
            row("fused-tiles", 2, 250.0, in_flight=2)]
    runs.speedups(rows)
    assert {r["one_device_basis"] for r in rows} == {"layer-wise"}
    assert [round(r["speedup_vs_one"], 3) for r in rows[:4]] == [
        round(166 / 218, 3), 0.83, round(166 / 170, 3), 1.0]
    piped = rows[4]  # frames/s over the same device's
    assert piped["speedup_basis"] == "fps"
    assert piped["speedup_vs_one"] == pytest.approx(piped["fps"] / rows[3]["fps"])


def test_the_scheduler_rows_price_their_overlapped_frames(monkeypatch):
    """Three sources keep three frames in the system: each row's ``predicted_ms`` is its run
    forecast by its own scheduler (runtime.cluster.loaded.forecast_run), gathered at the
    gateway or at the sources, and the row's errors are against it; one source keeps one
    frame's price and says so."""
    from types import SimpleNamespace

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import _multi_device_runs as runs
    from _multi_device_setups import cluster_fleet
    from edgeweave.runtime.cluster.lab import device_dilations
    from edgeweave.runtime.cluster.loaded import forecast_run

    graph = capture_spec("resnet18")
    fleet = cluster_fleet(3)
    profile = analytic_profile(graph, cluster_fleet(1))
    monkeypatch.setattr(runs, "CODECS", {"input_codec": "int8", "result_codec": "fp16"})
    plan = runs.plan_emulated(graph, profile, fleet, methods=("fused-tiles",), max_blocks=1,
                              cache={}, **runs.CODECS)
    part = plan.partition
    sources = list(fleet.cluster().devices)
    one = part.predicted["latency_ms"]
    row = {"predicted_ms": one, "latency_ms": 2 * one, "fps": 1.0,  # as _row writes them
           "predicted_fps": plan.predicted.get("throughput_fps"),
           "planned_ms_per_mb": part.search.get("task_overhead", {}).get("runtime_ms_per_mb")}
    dilations = device_dilations(profile, fleet, sources)

    def run(scheduler, at_source=False, n=3):
        return SimpleNamespace(sources=sources[:n], in_flight=1, scheduler=scheduler,
                               plan=plan, calibration=None, dilations=dilations,
                               results=[None] * 6, prefetch=0, gather_at_source=at_source)

    def price(*args, **kwargs):
        return runs.loaded_price(graph, run(*args, **kwargs), dict(row))

    for scheduler in ("static", "stealing", "sharing"):
        priced = price(scheduler)
        forecast = forecast_run(graph, run(scheduler))
        assert forecast.frames == 6
        assert priced["predicted_ms"] == forecast.latency_ms >= one * (1 - 1e-9)
        assert priced["predicted_one_frame_ms"] == one and priced["frames_in_system"] == 3
        assert priced["measured_vs_predicted_pct"] == pytest.approx(
            100 * (2 * one / priced["predicted_ms"] - 1))
        assert priced["predicted_tasks_per_frame"] == forecast.tasks_per_frame
        assert f"run's {scheduler} scheduler" in priced["predicted_basis"]
    at_source = price("stealing", at_source=True)
    assert at_source["predicted_ms"] == forecast_run(graph, run("stealing", True)).latency_ms
    alone = price("stealing", n=1)
    assert "predicted_ms" not in alone and alone["predicted_basis"] == "one frame alone"
