"""Hierarchical vs flat FedAvg: cloud rounds and WAN bytes to a target accuracy (HierFAVG's claim,
Liu et al. 2020: aggregating at the edges first needs fewer cloud rounds and less WAN traffic
for the same accuracy).

Workload: sklearn digits (360 held-out test samples), MLP 64-64-10, Dirichlet(ALPHA) non-IID
split over N clients placed on the ``two-edges`` fleet (client i on device node i mod 4, so half
the clients under each edge). Flat FedAvg: every round the selected devices send their models to
the cloud, so each device update crosses the WAN. Hierarchical (the experiment YAML's
``hierarchy: {edge_rounds: k2}``): each edge averages its devices after every local epoch (k1 = 1
epoch), the cloud averages the two edges every k2 edge rounds, so only edge models cross the WAN.
The same local work everywhere: the fraction of devices per (edge) round, lr, batch size.

Measured IN PROCESS with exact byte accounting (the simulated backends, through
``edgeweave.train.run``: the same code the ``fl run`` command runs); the real-process hierarchy
(``fl server`` + ``fl edge`` + ``fl client``) gives the same models and the same byte counts
(tests/train/test_fl_tiers.py, test_fl_edge_processes.py). WAN bytes are the cloud's
``bytes_up + bytes_down`` (raw float32 models, no codec) summed up to the round that first
reaches the target; device-edge bytes are the local tier's.

    .venv/bin/python benchmarks/fl_hierarchy.py [--quick] [--target 0.9] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from _zoo import emit
from edgeweave.train.experiment import run
from edgeweave.train.types import RoundRecord


class _Reached(Exception):
    """Raised from the progress callback: the target is reached, the run stops there."""


def measure(name: str, k2: int | None, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """Run one setting until ``args.target`` (or the cap of edge rounds) and account it."""
    cfg: dict[str, Any] = {
        "name": name, "seed": seed, "model": "mlp:64,64,10", "backend": args.backend,
        "data": {"dataset": "digits", "partition": f"dirichlet:{args.alpha}",
                 "clients": args.clients},
        "strategy": {"name": "fedavg", "fraction": args.fraction},
        "fit": {"lr": args.lr, "batch_size": 16, "epochs": 1},
        "rounds": args.max_edge_rounds // (k2 or 1), "plot": False}
    if k2 is not None:
        cfg |= {"fleet": "two-edges", "hierarchy": {"edge_rounds": k2}}
    records: list[RoundRecord] = []

    def progress(rec: RoundRecord) -> None:
        records.append(rec)
        if rec.test_acc >= args.target:
            raise _Reached

    t0 = time.perf_counter()
    with contextlib.suppress(_Reached):
        run(cfg, progress)
    wall = time.perf_counter() - t0
    last = records[-1]
    reached = last.test_acc >= args.target
    devices = sum(r.extra.get("device_updates", r.clients) for r in records)
    tier = sum(r.extra.get("device_edge_up", 0) + r.extra.get("device_edge_down", 0)
               for r in records)
    return {"system": name, "edge_rounds_per_cloud_round": k2, "seed": seed,
            "target_acc": args.target, "reached": reached, "cloud_rounds": len(records),
            "edge_rounds": len(records) * (k2 or 1), "device_updates": devices,
            "wan_bytes": sum(r.bytes_up + r.bytes_down for r in records),
            "device_edge_bytes": tier, "final_acc": last.test_acc, "wall_s": wall}


def main() -> None:
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one seed, k2 in {2, 4}")
    ap.add_argument("--target", type=float, default=0.9, help="test accuracy to reach")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration")
    ap.add_argument("--fraction", type=float, default=0.5, help="devices per (edge) round")
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--max-edge-rounds", type=int, default=240,
                    help="cap: edge rounds (flat: rounds) before giving up")
    ap.add_argument("--backend", default="sequential", choices=["sequential", "vectorized"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    seeds = args.seeds[:1] if args.quick else args.seeds
    settings: list[tuple[str, int | None]] = [("flat fedavg", None)] + [
        (f"hierfavg k2={k}", k) for k in ((2, 4) if args.quick else (1, 2, 4, 8))]
    rows = [measure(name, k2, args, seed) for seed in seeds for name, k2 in settings]

    console = Console(width=140)
    table = Table(title=f"Flat vs hierarchical FedAvg to {args.target:.0%} test accuracy: "
                        f"digits, Dirichlet({args.alpha:g}), {args.clients} clients under 2 "
                        f"edges, {args.fraction:.0%} per round, k1 = 1 epoch; in process, exact "
                        f"bytes; mean over seeds {seeds}")
    for col in ("system", "reached", "cloud rounds", "device updates", "WAN MB",
                "WAN vs flat", "device-edge MB", "final acc", "wall s"):
        table.add_column(col, justify="left" if col == "system" else "right")
    flat_wan = statistics.fmean(r["wan_bytes"] for r in rows if r["system"] == "flat fedavg")
    summary = []
    for name, k2 in settings:
        mine = [r for r in rows if r["system"] == name]
        s = {"system": name, "edge_rounds_per_cloud_round": k2,
             "reached": sum(r["reached"] for r in mine), "seeds": len(mine),
             **{k: statistics.fmean(r[k] for r in mine) for k in
                ("cloud_rounds", "device_updates", "wan_bytes", "device_edge_bytes",
                 "final_acc", "wall_s")}}
        s["wan_vs_flat"] = s["wan_bytes"] / flat_wan
        summary.append(s)
        table.add_row(name, f"{s['reached']}/{s['seeds']}", f"{s['cloud_rounds']:.1f}",
                      f"{s['device_updates']:.0f}", f"{s['wan_bytes'] / 1e6:.2f}",
                      f"{s['wan_vs_flat']:.3f}x", f"{s['device_edge_bytes'] / 1e6:.2f}",
                      f"{s['final_acc']:.3f}", f"{s['wall_s']:.1f}")
    doc = {"measured": "in process (simulated backends), exact byte accounting",
           "workload": {"dataset": "digits", "model": "mlp:64,64,10", "alpha": args.alpha,
                        "clients": args.clients, "fraction": args.fraction, "lr": args.lr,
                        "fleet": "two-edges", "k1": "1 epoch", "backend": args.backend},
           "target_acc": args.target, "seeds": seeds, "summary": summary, "rows": rows}
    emit(console, [table], doc, args.json)


if __name__ == "__main__":
    main()
