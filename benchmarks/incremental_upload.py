"""Incremental model upload (IONN, Jeong et al. 2018) against local-only and upload-all-then-
offload: the per-query latency timeline while the model's weights go up to the edge, the time
to first benefit and the total time of the first N queries, per uplink bandwidth.

The edge is an `edgeweave serve` OS process on loopback (a fresh one, with an empty chunk
store, per run); the device is this process. EMULATED, as `runtime.session` emulates tiers: the
Raspberry Pi 4 device's compute is this host's stretched by time dilation (factor printed), the
edge runs at this host's speed, and the device's uplink is shaped in the application (one token
bucket, shared by the queries and the upload, + RTT/2 each way). Queries arrive every
`--interval-s` for `--horizon-s`; each strategy runs the same arrivals:

  local-only   the device runs every query itself; nothing is uploaded;
  whole        upload-all-then-offload: every weight of the model in one partition while the
               device answers locally, then the best plan (IONN's baseline);
  incremental  IONN's order: the partition saving the most per byte first, the best plan over
               what has landed after each; weights as `--upload-codec` (auto: the planner's
               choice, `plan.upload_codec`, e.g. per-channel int8 at 5 Mbit/s) and plans over
               every activation codec (`--codec`);
  incremental-raw  the same with raw float32 weights and `--raw-codec` activations (`none`):
               what `--upload incremental` did before weight and activation codecs were chosen
               for it, to show what they buy.

Every run's edge has captured the model before the clock starts (as `edgeweave infer` has it
do while it profiles, `runtime.upload.warm_edge`).

Time to first benefit: from the upload's start to the first plan switch after which queries
ran faster (median, measured) than before anything landed; none if not within the horizon.
A strategy whose schedule uploads nothing at a bandwidth (no plan beats the device there) runs
the device-only plan, i.e. local-only: its row repeats local-only's measurement, and says so.

    .venv/bin/python benchmarks/incremental_upload.py [--mbps 1,5,20] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from _zoo import emit
from edgeweave.graph import capture_spec
from edgeweave.plan.ionn import SegmentPlan, UploadSchedule
from edgeweave.profile import load_profile, profile_graph
from edgeweave.profile.activations import CUT_CODECS
from edgeweave.runtime.client import ClientOptions
from edgeweave.runtime.incremental_session import (
    IncrementalSummary,
    run_incremental,
    schedule_for,
)
from edgeweave.runtime.lab import LocalLab
from edgeweave.runtime.session import device_dilation, emulated_profile
from edgeweave.runtime.upload import warm_edge
from edgeweave.topology import DEFAULT_FLEET, load_fleet

NOTE = ("EMULATED: device = Raspberry Pi 4 by time dilation of this host's compute; edge = a "
        "server process at this host's speed; the device's uplink shaped in the application "
        "(one token bucket shared by queries and upload, + RTT/2 each way) on loopback.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="alexnet")
    ap.add_argument("--mbps", default="1,5,20", help="uplink bandwidths, comma-separated")
    ap.add_argument("--codec", default="auto",
                    help="activation codecs the plans may use at each crossing (auto: all)")
    ap.add_argument("--upload-codec", default="auto", choices=("auto", "none", "fp16", "int8"),
                    help="how whole and incremental send the weights")
    ap.add_argument("--raw-codec", default="none",
                    help="activation codecs of incremental-raw (empty: skip that strategy)")
    ap.add_argument("--interval-s", type=float, default=1.0, help="one query every ... s")
    ap.add_argument("--horizon-s", type=float, default=150.0, help="how long each run lasts")
    ap.add_argument("--first-n", type=int, default=100, help="N of the first-N total")
    ap.add_argument("--repeats", type=int, default=3, help="profiling repeats per layer")
    ap.add_argument("--profile", type=Path, help="a saved profile of --model on this host "
                    "(edgeweave profile --json) instead of measuring it again")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    console = Console(width=150)
    console.print(NOTE)
    rates = [float(m) for m in args.mbps.split(",")]
    codecs = CUT_CODECS if args.codec == "auto" else tuple(c for c in args.codec.split(",") if c)
    raw_codecs = tuple(c for c in args.raw_codec.split(",") if c)

    fleet = load_fleet(DEFAULT_FLEET)
    graph = capture_spec(args.model)
    if args.profile:
        measured = load_profile(args.profile)
    else:
        with console.status(f"profiling {args.model} on this host"):
            measured = profile_graph(graph, fleet, warmup=1, repeats=args.repeats)
    dilation = device_dilation(measured, fleet)
    base = emulated_profile(measured, fleet)
    hop = base.hop_names()[0]
    x = torch.randn(graph.input_shape, generator=torch.Generator().manual_seed(0))
    queries = max(1, int(args.horizon_s / args.interval_s))
    console.print(f"{args.model}: device compute dilated x{dilation:.1f} (Raspberry Pi 4); "
                  f"{queries} queries, one every {args.interval_s:g} s; codecs {codecs}")

    def run(schedule: UploadSchedule, mbps: float) -> IncrementalSummary:
        def go(target: str, token: str | None) -> IncrementalSummary:
            return run_incremental(graph, schedule, target, [x] * queries,
                                   link=(mbps, base.links[hop].rtt_ms), dilation=dilation,
                                   fleet=fleet.name, token=token, options=ClientOptions(),
                                   interval_s=args.interval_s)

        if not schedule.steps:  # device-only throughout: the edge is never called
            return go("127.0.0.1:9", None)
        with tempfile.TemporaryDirectory(prefix="ew-ionn-") as cache, \
                LocalLab(roles=("edge",), extra_args={"edge": ["--cache-dir", cache]}) as lab:
            warm_edge(lab.edge_target, graph.spec, graph.input_shape, token=lab.token).join()
            return go(lab.edge_target, lab.token)

    rows, timelines, schedules = [], [], []
    agreement: dict[str, float] = {}  # top-1 agreement per weight codec, measured once
    local: IncrementalSummary | None = None
    for mbps in rates:
        prof = base.with_link(hop, mbps=mbps)
        plans = {s: schedule_for(prof, s, codecs, graph, args.upload_codec, agreement)
                 for s in ("whole", "incremental")}
        if raw_codecs:
            plans["incremental-raw"] = schedule_for(prof, "incremental", raw_codecs)
        if local is None:
            console.print("local-only (does not use the link: measured once for every row)")
            device = prof.tiers[0]
            everything = tuple(n.name for n in prof.nodes)
            local = run(UploadSchedule(args.model, "local-only", mbps, SegmentPlan(
                ((device, everything),), sum(n.latency_ms[device] for n in prof.nodes),
                "none"), ()), mbps)
        for strategy in ("local-only", "whole", "incremental", "incremental-raw"):
            if strategy == "incremental-raw" and not raw_codecs:
                continue
            schedule = plans.get(strategy)
            note = ""
            if schedule is None or not schedule.steps:
                summary = local
                note = "" if schedule is None else "uploads nothing: = local-only"
            else:
                console.print(f"{mbps:g} Mbit/s, {strategy}: {schedule.nbytes / 1e6:.1f} MB in "
                              f"{len(schedule.steps)} partition(s), weights as "
                              f"{schedule.weight_codec}")
                summary = run(schedule, mbps)
            schedules.append({**(schedule.to_json() if schedule else {}), "mbps": mbps,
                              "strategy": strategy})
            first = summary.first_benefit_s()
            rows.append({"mbps": mbps, "strategy": strategy,
                         "weight_codec": schedule.weight_codec if schedule else "-",
                         "time_to_first_benefit_s": first,
                         "first_n_total_s": summary.first_n_total_s(args.first_n)})
            timelines.append(_timeline(mbps, strategy, summary, schedule, note))

    tables = [_summary_table(rows, timelines, args.first_n),
              *(_timeline_table(t, args.horizon_s) for t in timelines)]
    emit(console, tables, {"model": args.model, "fleet": fleet.name, "note": NOTE,
                           "device_dilation": dilation, "codecs": list(codecs),
                           "raw_codecs": list(raw_codecs), "weight_agreement": agreement,
                           "interval_s": args.interval_s, "horizon_s": args.horizon_s,
                           "first_n": args.first_n, "rows": rows, "timelines": timelines,
                           "schedules": schedules}, args.json)


def _timeline(mbps: float, strategy: str, s: IncrementalSummary,
              schedule: UploadSchedule | None, note: str) -> dict:
    qs = s.run.queries
    return {"mbps": mbps, "strategy": strategy, "note": note,
            "predicted_first_benefit_s": schedule.first_benefit_s if schedule else None,
            "t_s": [q.t_s for q in qs], "ms": [q.ms for q in qs], "mode": [q.mode for q in qs],
            "fallbacks": sum(q.fallback for q in qs),
            "landed": [(e["t_s"], e["partition"]) for e in s.run.events
                       if e["event"] == "landed"],
            "bytes_sent": s.stats.bytes_sent}


def _summary_table(rows: list[dict], timelines: list[dict], n: int) -> Table:
    t = Table(title="time to first benefit and the first N queries (measured)")
    for col in ("Mbit/s", "strategy", "weights", "first benefit (s)", "predicted (s)",
                f"first {n} queries (s)", "median before (ms)", "median at end (ms)",
                "MB sent", "fallbacks", "note"):
        t.add_column(col, justify="left" if col in ("strategy", "note") else "right")
    for row, tl in zip(rows, timelines, strict=True):
        first, pred = row["time_to_first_benefit_s"], tl["predicted_first_benefit_s"]
        ms, landed = tl["ms"], tl["landed"]
        cut = landed[0][0] if landed else float("inf")
        before = [m for m, at in zip(ms, tl["t_s"], strict=True) if at < cut]
        t.add_row(f"{row['mbps']:g}", row["strategy"], row["weight_codec"],
                  "-" if first is None else f"{first:.1f}",
                  "-" if pred is None else f"{pred:.1f}", f"{row['first_n_total_s']:.1f}",
                  f"{statistics.median(before):.0f}" if before else "-",
                  f"{statistics.median(ms[-10:]):.0f}", f"{tl['bytes_sent'] / 1e6:.1f}",
                  str(tl["fallbacks"]), tl["note"])
    return t


def _timeline_table(tl: dict, horizon_s: float, buckets: int = 10) -> Table:
    """Median latency and plan per stretch of the run: the timeline in a few rows."""
    t = Table(title=f"{tl['mbps']:g} Mbit/s, {tl['strategy']}: per-query latency over time"
                    + "".join(f"; partition {k} landed at {at:.1f} s" for at, k in tl["landed"]))
    for col in ("from (s)", "queries", "median ms", "plan"):
        t.add_column(col, justify="left" if col == "plan" else "right")
    width = horizon_s / buckets
    for b in range(buckets):
        idx = [i for i, at in enumerate(tl["t_s"]) if b * width <= at < (b + 1) * width]
        if idx:
            modes = sorted({tl["mode"][i] for i in idx})
            t.add_row(f"{b * width:.0f}", str(len(idx)),
                      f"{statistics.median(tl['ms'][i] for i in idx):.0f}", ", ".join(modes))
    return t


if __name__ == "__main__":
    main()
