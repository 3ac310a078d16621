"""Shared stems (Mainstream) and stream configuration adaptation (VideoStorm/Chameleon), measured.

Shared stems: a backbone pretrained on a source task (digits 0-4), five digits tenants (which
digit, odd, > 4, is it 0, prime) each fine-tuned at every sharing depth 0..5 (real training;
accuracy measured on the held-out test split), per-block costs measured on this host (CPU ms
per frame at batch 64, one thread). At several loads (load = the compute every tenant needs
unshared at the full 30 fps, divided by the budget) the table compares the total quality of
Mainstream's choice (depth and frame rate per tenant, exact search), no sharing and maximal
sharing, all at the same budget. Then the shared executor's frames/s against running each
tenant's model separately (CPU time, batch 64, outputs checked allclose).

Stream adaptation: digits-cnn at 8, 6 and 4 px, each with int8, filter-pruned, low-rank and
distilled variants (edgeweave.adapt), accuracy on the test split and cost measured; N streams
share a server that fits two streams at the best configuration and full rate (load = N / 2);
adaptive allocation (exact, and VideoStorm's greedy) against a fixed configuration that sheds
frames evenly when overloaded. Last, a load trace (streams joining and leaving, capacity
estimate jittering 3%) replayed with and without hysteresis, counting configuration switches.

Quality is the event metric (edgeweave.serve.stems.quality): a tenant detects a 0.1 s event
unless it misclassifies every sampled frame of it; the total is the sum over tenants/streams.

    .venv/bin/python benchmarks/shared_stems.py [--quick] [--json out.json]

``stem_rows(...)`` returns the shared-stem rows for benchmarks/serving.py.
"""

from __future__ import annotations

import argparse
import copy
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from _zoo import emit
from edgeweave.adapt.datasets import Split
from edgeweave.serve.adapt_streams import (
    Space,
    Stream,
    StreamAdaptor,
    StreamConfig,
    allocate,
    fixed,
    measure_configs,
)
from edgeweave.serve.stems import (
    METRICS,
    STEM_BLOCKS,
    Backbone,
    Schedule,
    StemCosts,
    TenancyError,
    TenantVersions,
    build_forest,
    max_sharing,
    measure_stem_costs,
    ms_per_frame,
    no_sharing,
    pretrain_backbone,
    schedule,
    stem_cost,
    stem_data,
    train_tenants,
)

NATIVE_FPS = 30.0
#: Tenants sharing a stem sample nested frames (each rate divides the next); independent
#: streams may sample at any whole rate.
RATES = (30.0, 15.0, 7.5, 3.75, 1.875)
STREAM_RATES = tuple(float(r) for r in range(1, 31))
TASK_NAMES = ("digit", "odd", "gt4", "zero", "prime")
STEM_LOADS = (1.0, 1.5, 2.0, 3.0, 5.0, 8.0)
STREAM_COUNTS = (1, 2, 3, 4, 6, 8, 12, 16)
METRIC = "event"  # the streams' metric; the stem rows are given under both
BATCH = 64
POLICIES = (("mainstream", schedule), ("no-sharing", no_sharing), ("max-sharing", max_sharing))


@dataclass(frozen=True)
class StemWorkload:
    data: Split
    backbone: Backbone
    tenants: list[TenantVersions]
    costs: StemCosts
    side: int
    width: int
    epochs: int
    seed: int

    def describe(self) -> dict[str, Any]:
        return {"side": self.side, "width": self.width, "epochs": self.epochs, "seed": self.seed,
                "source_accuracy": self.backbone.source_accuracy,
                "accuracy_by_depth": {t.name: t.accuracy() for t in self.tenants},
                "costs_ms_per_frame": self.costs.to_dict(), "rates": RATES,
                "native_fps": NATIVE_FPS, "metrics": list(METRICS)}


def stem_workload(quick: bool = False, seed: int = 0) -> StemWorkload:
    """Train the tenants (about a minute; ``quick``: a few seconds, tiny and less accurate) and
    measure the blocks' costs."""
    side, width, epochs = (8, 4, 2) if quick else (16, 8, 4)
    tasks = TASK_NAMES[:3] if quick else TASK_NAMES
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    data = stem_data(side, seed)
    backbone = pretrain_backbone(data, side, width, epochs=epochs + 2, seed=seed)
    tenants = train_tenants(backbone, tasks, data, tuple(range(STEM_BLOCKS + 1)), epochs, seed)
    costs = measure_stem_costs(backbone.blocks, tenants[0].versions[STEM_BLOCKS].tail[-1],
                               data.x_test[:BATCH])
    return StemWorkload(data, backbone, tenants, costs, side, width, epochs, seed)


def _full_demand(w: StemWorkload) -> float:
    n = len(w.tenants)
    return stem_cost([0] * n, [NATIVE_FPS] * n, w.costs)


def _schedule_row(policy: str, metric: str, load: float, budget: float, s: Schedule | None,
                  n: int) -> dict[str, Any]:
    row: dict[str, Any] = {
        "system": policy, "model": "digits-tenants", "load": load, "budget_ms_per_s": budget,
        "offered_rps": n * NATIVE_FPS, "goodput_rps": None, "p50_ms": None, "p99_ms": None,
        "slo_attainment": None, "rejected": None, "fallback": None, "lost": None,
        "tenants": n, "metric": metric}
    if s is None:
        return {**row, "feasible": False, "total_quality": None, "mean_accuracy": None,
                "throughput_rps": None, "cost_ms_per_s": None, "choices": None}
    return {**row, "feasible": True, "total_quality": s.value,
            "mean_accuracy": sum(c.accuracy for c in s.choices) / n,
            "throughput_rps": sum(c.fps for c in s.choices), "cost_ms_per_s": s.cost_ms_per_s,
            "choices": {c.tenant: {"depth": c.depth, "fps": c.fps, "accuracy": c.accuracy}
                        for c in s.choices}}


def budget_rows(w: StemWorkload, loads: tuple[float, ...] = STEM_LOADS,
                metrics: tuple[str, ...] = METRICS) -> list[dict[str, Any]]:
    """Total quality of each policy at budget = full demand / load, under each metric."""
    tenants = [t.tenant() for t in w.tenants]
    rows = []
    for metric in metrics:
        for load in loads:
            budget = _full_demand(w) / load
            for policy, solve in POLICIES:
                try:
                    s: Schedule | None = solve(tenants, w.costs, budget, RATES, NATIVE_FPS,
                                               metric)
                except TenancyError:  # cannot serve every tenant even at the lowest rate
                    s = None
                rows.append(_schedule_row(policy, metric, load, budget, s, len(tenants)))
    return rows


def executor_rows(w: StemWorkload, depth_sets: dict[str, dict[str, int]], repeats: int = 7
                  ) -> list[dict[str, Any]]:
    """Frames/s (CPU time, batch 64) of the shared executor vs each tenant's model run
    separately (deep copies: nothing shared), and whether their answers agree."""
    x = w.data.x_test[:BATCH]
    rows = []
    for label, depths in depth_sets.items():
        forest = build_forest(w.backbone, w.tenants, depths)
        separate = {t.name: copy.deepcopy(forest.tenant_model(t.name)) for t in w.tenants}
        with torch.no_grad():
            answers = forest.split(forest(x))
            equal = all(torch.allclose(answers[n], m(x), atol=1e-5) for n, m in separate.items())
        shared_ms = ms_per_frame(forest, x, repeats=repeats)
        separate_ms = sum(ms_per_frame(m, x, repeats=repeats) for m in separate.values())
        n = len(w.tenants)
        predicted = stem_cost([depths[t.name] for t in w.tenants], [1.0] * n, w.costs)
        base = {"model": "digits-tenants", "depths": label, "tenants": n, "batch": BATCH,
                "allclose": equal, "measured": "CPU time, one thread, offline"}
        rows.append({**base, "system": "stem-executor", "frames_per_s": 1000 / shared_ms,
                     "ms_per_frame": shared_ms, "predicted_ms_per_frame": predicted})
        rows.append({**base, "system": "separate-models", "frames_per_s": 1000 / separate_ms,
                     "ms_per_frame": separate_ms,
                     "predicted_ms_per_frame": stem_cost([0] * n, [1.0] * n, w.costs)})
    return rows


def stem_rows(loads: tuple[float, ...] = STEM_LOADS, quick: bool = False, seed: int = 0,
              workload: StemWorkload | None = None) -> list[dict[str, Any]]:
    """The "Shared stems" rows for benchmarks/serving.py: per load, Mainstream's choice, no
    sharing and max sharing at the same budget (serving's row keys; latency keys None), then
    the executor's frames/s against separate models. Trains the workload unless given one."""
    w = workload or stem_workload(quick, seed)
    rows = budget_rows(w, loads)
    mid = next((r for r in rows if r["system"] == "mainstream" and r["load"] >= 3.0
                and r["metric"] == METRIC), rows[0])
    depth_sets = {f"mainstream at load {mid['load']:g}":
                  {n: c["depth"] for n, c in mid["choices"].items()},
                  "max sharing": {t.name: STEM_BLOCKS for t in w.tenants}}
    return rows + executor_rows(w, depth_sets)


# --------------------------------------------------------------------------------------------
# Stream configuration adaptation
# --------------------------------------------------------------------------------------------

def stream_space(quick: bool = False, seed: int = 0) -> Space:
    configs = measure_configs(resolutions=(8, 4) if quick else (8, 6, 4),
                              variants=("fp32", "pruned") if quick else
                              ("fp32", "int8", "pruned", "low-rank", "distilled"),
                              epochs=2 if quick else 8, seed=seed, batch=BATCH)
    return Space(tuple(configs), STREAM_RATES, NATIVE_FPS, METRIC)


def _best(space: Space) -> StreamConfig:
    return max(space.configs, key=lambda c: (c.accuracy, -c.ms_per_frame))


def stream_rows(space: Space, counts: tuple[int, ...] = STREAM_COUNTS) -> list[dict[str, Any]]:
    top = _best(space)
    capacity = 2 * NATIVE_FPS * top.ms_per_frame
    rows = []
    for n in counts:
        streams = [Stream(f"cam{i}") for i in range(n)]
        runs = [("adaptive", lambda s=streams: allocate(s, space, capacity)),
                ("adaptive-greedy", lambda s=streams: allocate(s, space, capacity, "greedy")),
                (f"fixed {top.name}", lambda s=streams: fixed(s, space, capacity, top,
                                                               NATIVE_FPS))]
        for system, run in runs:
            try:
                a = run()
            except TenancyError:
                rows.append({"system": system, "streams": n, "load": n / 2, "feasible": False})
                continue
            knobs = a.knobs.values()
            mix: dict[str, int] = {}
            for k in knobs:
                key = f"{k.config.name}@{k.fps:g}"
                mix[key] = mix.get(key, 0) + 1
            rows.append({"system": system, "model": "digits-cnn", "streams": n, "load": n / 2,
                         "feasible": True, "capacity_ms_per_s": capacity,
                         "cost_ms_per_s": a.cost, "mean_quality": a.value / n,
                         "mean_accuracy": sum(k.config.accuracy for k in knobs) / n,
                         "offered_rps": n * NATIVE_FPS,
                         "throughput_rps": sum(k.fps for k in knobs), "knobs": mix})
    return rows


def load_trace(seed: int = 0, steps: int = 40) -> list[tuple[int, float]]:
    """(streams, capacity as a multiple of two best-config streams) per step: streams join and
    leave in phases while the capacity estimate jitters by up to 3%."""
    rng = random.Random(seed)
    phases = [2, 6, 12, 6, 3]
    return [(phases[i * len(phases) // steps], 1.0 + rng.uniform(-0.03, 0.03))
            for i in range(steps)]


#: (margin, headroom) of the adaptors the load trace is replayed with: none, each alone, both.
HYSTERESIS = ((0.0, 0.0), (0.02, 0.0), (0.0, 0.08), (0.02, 0.08))


def trace_rows(space: Space, settings: tuple[tuple[float, float], ...] = HYSTERESIS,
               seed: int = 0) -> list[dict[str, Any]]:
    unit = 2 * NATIVE_FPS * _best(space).ms_per_frame
    trace = load_trace(seed)
    rows = []
    for margin, headroom in settings:
        adaptor = StreamAdaptor(space, margin, headroom)
        quality, optimum, changed = 0.0, 0.0, 0
        for n, scale in trace:
            streams = [Stream(f"cam{i}") for i in range(n)]
            d = adaptor.update(streams, unit * scale)
            quality += d.allocation.value / n
            optimum += allocate(streams, space, unit * scale).value / n
            changed += d.changed_streams
        rows.append({"margin": margin, "headroom": headroom, "steps": len(trace),
                     "switches": adaptor.switches,
                     "stream_knob_changes": changed, "mean_quality": quality / len(trace),
                     "optimum_mean_quality": optimum / len(trace)})
    return rows


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------

def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def stem_tables(w: StemWorkload, rows: list[dict[str, Any]]) -> list[Table]:
    acc = Table(title=f"tenants' test accuracy by sharing depth (source task accuracy "
                      f"{w.backbone.source_accuracy:.3f}); block costs ms/frame: "
                      + " ".join(f"{c:.4f}" for c in w.costs.block_ms))
    acc.add_column("tenant")
    for d in range(STEM_BLOCKS + 1):
        acc.add_column(f"d={d}", justify="right")
    for t in w.tenants:
        acc.add_row(t.name, *(f"{a:.3f}" for a in t.accuracy().values()))
    budget = Table(title=f"total quality of {len(w.tenants)} tenants at the same budget (event: "
                         "detection of 0.1 s events; frames: accuracy x fraction of frames "
                         "sampled); load = unshared full-rate demand / budget; '-' = cannot "
                         "serve every tenant")
    for col in ("metric", "load", "budget ms/s", "mainstream", "no sharing", "max sharing",
                "mainstream depths@fps"):
        budget.add_column(col, justify="right")
    by_load: dict[tuple[str, float], dict[str, dict[str, Any]]] = {}
    for r in rows:
        if "budget_ms_per_s" in r:
            by_load.setdefault((r["metric"], r["load"]), {})[r["system"]] = r
    for (metric, load), got in by_load.items():
        m = got["mainstream"]
        choices = " ".join(f"{c['depth']}@{c['fps']:g}" for c in (m["choices"] or {}).values())
        budget.add_row(metric, f"{load:g}", f"{m['budget_ms_per_s']:.3f}",
                       *(_fmt(got[p]["total_quality"]) for p, _ in POLICIES), choices)
    speed = Table(title=f"shared executor vs separate models, batch {BATCH}, CPU time")
    for col in ("depths", "system", "frames/s", "ms/frame", "predicted ms/frame", "allclose"):
        speed.add_column(col, justify="right")
    for r in rows:
        if "frames_per_s" in r:
            speed.add_row(r["depths"], r["system"], f"{r['frames_per_s']:.0f}",
                          f"{r['ms_per_frame']:.4f}", f"{r['predicted_ms_per_frame']:.4f}",
                          str(r["allclose"]))
    return [acc, budget, speed]


def _stream_tables(space: Space, rows: list[dict[str, Any]], trace: list[dict[str, Any]]
                   ) -> list[Table]:
    configs = Table(title="stream configurations: test accuracy and cost (batch 64, CPU)")
    for col in ("config", "accuracy", "ms/frame"):
        configs.add_column(col, justify="right")
    for c in space.configs:
        configs.add_row(c.name, f"{c.accuracy:.3f}", f"{c.ms_per_frame:.4f}")
    loads = Table(title="mean quality per stream vs load (load = streams / streams the server "
                        "fits at the best config and full rate)")
    for col in ("streams", "load", "system", "mean quality", "mean accuracy", "frames/s served",
                "knobs"):
        loads.add_column(col, justify="right")
    for r in rows:
        if not r["feasible"]:
            loads.add_row(str(r["streams"]), f"{r['load']:g}", r["system"], "infeasible", "",
                          "", "")
            continue
        loads.add_row(str(r["streams"]), f"{r['load']:g}", r["system"],
                      f"{r['mean_quality']:.3f}", f"{r['mean_accuracy']:.3f}",
                      f"{r['throughput_rps']:.1f}",
                      ", ".join(f"{n}x{k}" for k, n in sorted(r["knobs"].items())))
    hyst = Table(title="load trace (40 steps, streams 2-6-12-6-3, capacity +-3%): hysteresis")
    for col in ("margin", "headroom", "switches", "stream knob changes", "mean quality",
                "optimum"):
        hyst.add_column(col, justify="right")
    for r in trace:
        hyst.add_row(f"{r['margin']:g}", f"{r['headroom']:g}", str(r["switches"]),
                     str(r["stream_knob_changes"]),
                     f"{r['mean_quality']:.4f}", f"{r['optimum_mean_quality']:.4f}")
    return [configs, loads, hyst]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny models, a few seconds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    w = stem_workload(args.quick, args.seed)
    rows = stem_rows(workload=w)
    space = stream_space(args.quick, args.seed)
    streams = stream_rows(space)
    trace = trace_rows(space, seed=args.seed)
    doc = {"stem_workload": w.describe(), "stem_rows": rows,
           "stream_configs": [c.to_dict() for c in space.configs], "stream_rows": streams,
           "trace_rows": trace, "quick": args.quick, "seed": args.seed,
           "torch": torch.__version__,
           "note": "costs are CPU time on this host (one thread, batch 64); quality is the "
                   "event metric from measured test accuracy"}
    emit(Console(width=140), [*stem_tables(w, rows), *_stream_tables(space, streams, trace)],
         doc, args.json)


if __name__ == "__main__":
    main()
