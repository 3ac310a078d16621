"""Plan quality: optimality against brute force, and the Neurosurgeon speedup table.

1. Random small graphs (chains and DAGs, <= 16 nodes): every monotone placement is enumerated
   (all nested closed sets) and the planner's choice must equal the optimum, for the latency
   and energy objectives (and throughput on chains, where the scan is exact).
2. Every zoo model at 1, 5, 20 and 100 Mbit/s device-edge bandwidth: chain models are checked
   against brute force too; DAG models (too many closed sets to enumerate) are checked against
   the exhaustive scan of every two-cut split of a topological order, which the min-cut must
   match or beat. Then the latency speedup and device-energy saving of the chosen plan over
   device-only and over edge-only (Neurosurgeon, Kang et al. 2017, Figs. 11-12).

    .venv/bin/python benchmarks/plan_quality.py [--graphs 200] [--reuse] [--json out.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from _zoo import EMULATION_NOTE, ZOO, emit, profile_zoo
from edgeweave.plan import plan
from edgeweave.plan.bruteforce import best, monotone_placements
from edgeweave.plan.costs import CostModel
from edgeweave.plan.modes import base_forbid
from edgeweave.plan.scan import scan
from edgeweave.profile import random_profile

BANDWIDTHS = (1.0, 5.0, 20.0, 100.0)
REL_TOL = 1e-6


def _matches(got: float, want: float) -> bool:
    return abs(got - want) <= REL_TOL * max(1.0, abs(want))


def random_graphs(count: int) -> dict:
    checks = {"graphs": 0, "checks": 0, "optimal": 0, "worst_gap_pct": 0.0, "placements": 0}
    for seed in range(count):
        chain = seed % 3 == 0
        prof = random_profile(seed, 4 + seed % 13, chain=chain)
        cm = CostModel(prof)
        checks["graphs"] += 1
        objectives = ("latency", "energy", "throughput") if chain else ("latency", "energy")
        for objective in objectives:
            _, want = best(cm, objective, base_forbid(cm))
            result = plan(prof, objective)
            got = cm.evaluate(cm.labels_of(result.placement)).value(objective)
            checks["checks"] += 1
            checks["optimal"] += _matches(got, want)
            checks["worst_gap_pct"] = max(checks["worst_gap_pct"], (got - want) / want * 100)
        checks["placements"] += len(monotone_placements(cm, base_forbid(cm)))
    return checks


def zoo_rows(profiles: dict) -> list[dict]:
    rows = []
    for name, (prof0, _, _) in profiles.items():
        for mbps in BANDWIDTHS:
            prof = prof0.with_link("device-edge", mbps=mbps)
            cm = CostModel(prof)
            lat, energy = plan(prof, "latency"), plan(prof, "energy")
            if cm.is_chain():
                check = "brute"
                want = {o: best(cm, o, base_forbid(cm))[1] for o in ("latency", "energy")}
            else:
                check = "topo scan"
                ev = scan(cm, forbid=base_forbid(cm)).costs
                want = {"latency": float(ev.total_ms.min()), "energy": float(ev.energy_j.min())}
            got = {"latency": lat.predicted["total_ms"], "energy": energy.predicted["energy_j"]}
            ok = all(
                _matches(got[o], want[o]) if check == "brute" else got[o] <= want[o] + 1e-12
                for o in got
            )
            dev, edge = lat.alternative("device-only"), lat.alternative("edge-only")
            edev, eedge = energy.alternative("device-only"), energy.alternative("edge-only")
            rows.append({
                "model": name, "mbps": mbps, "mode": lat.mode, "exact": lat.exact,
                "check": check, "check_ok": ok,
                "mincut_gain_vs_scan_pct": None if check == "brute" else
                    (want["latency"] - got["latency"]) / want["latency"] * 100,
                "latency_ms": got["latency"],
                "speedup_vs_device": dev.total_ms / got["latency"],
                "speedup_vs_edge": edge.total_ms / got["latency"],
                "energy_mode": energy.mode,
                "energy_j": got["energy"],
                "energy_saving_vs_device_pct": (1 - got["energy"] / edev.energy_j) * 100,
                "energy_saving_vs_edge_pct": (1 - got["energy"] / eedge.energy_j) * 100,
            })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=ZOO)
    ap.add_argument("--graphs", type=int, default=300, help="random graphs vs brute force")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("out/profiles"))
    ap.add_argument("--reuse", action="store_true", help="reuse saved profiles in --out")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    console = Console(width=150)
    rand = random_graphs(args.graphs)
    rows = zoo_rows(profile_zoo(args.models, args.out, args.repeats, args.reuse))

    t1 = Table(title="random graphs (<= 16 nodes) vs brute force over all closed sets")
    for col in ("graphs", "objective checks", "optimal", "worst gap %", "placements enumerated"):
        t1.add_column(col, justify="right")
    t1.add_row(str(rand["graphs"]), str(rand["checks"]), str(rand["optimal"]),
               f"{rand['worst_gap_pct']:.2e}", str(rand["placements"]))
    t2 = Table(title="zoo models on the default fleet, device-edge bandwidth swept "
                     "(latency plan / energy plan)")
    for col in ("model", "Mbit/s", "latency mode", "ms", "x vs device", "x vs edge",
                "energy mode", "J", "saving vs device", "saving vs edge", "checked by", "ok"):
        t2.add_column(col, justify="left" if "mode" in col or col in ("model", "checked by")
                      else "right")
    for r in rows:
        t2.add_row(r["model"], f"{r['mbps']:g}", r["mode"], f"{r['latency_ms']:.1f}",
                   f"{r['speedup_vs_device']:.2f}", f"{r['speedup_vs_edge']:.2f}",
                   r["energy_mode"], f"{r['energy_j']:.3f}",
                   f"{r['energy_saving_vs_device_pct']:.1f}%",
                   f"{r['energy_saving_vs_edge_pct']:.1f}%", r["check"],
                   "yes" if r["check_ok"] else "NO")
    summary = {
        "random_graphs_all_optimal": rand["optimal"] == rand["checks"],
        "zoo_checks_ok": all(r["check_ok"] for r in rows),
        "mean_speedup_vs_device": float(np.mean([r["speedup_vs_device"] for r in rows])),
        "max_speedup_vs_device": float(np.max([r["speedup_vs_device"] for r in rows])),
        "mean_energy_saving_vs_device_pct":
            float(np.mean([r["energy_saving_vs_device_pct"] for r in rows])),
        "max_energy_saving_vs_device_pct":
            float(np.max([r["energy_saving_vs_device_pct"] for r in rows])),
        "mean_speedup_vs_edge": float(np.mean([r["speedup_vs_edge"] for r in rows])),
        "dag_rows_where_mincut_beats_scan": sum(
            1 for r in rows if (r["mincut_gain_vs_scan_pct"] or 0) > 1e-6
        ),
        "dag_rows": sum(1 for r in rows if r["check"] == "topo scan"),
    }
    console.print(f"summary: {summary}")
    console.print(EMULATION_NOTE)
    emit(console, [t1, t2], {"benchmark": "plan_quality", "random": rand, "zoo": rows,
                             "summary": summary, "note": EMULATION_NOTE}, args.json)


if __name__ == "__main__":
    main()
