"""Model selection on real digits: big/little (Park et al.) and the planner's choice among
variants (MCDNN / DeepDecision-style) on the default fleet.

Trains digits-cnn (fp32, the big model) on the sklearn digits train split, derives its
compression variants (int8 dynamic, 50% filter pruning, 85% magnitude pruning, rank-16 SVD,
distilled students at width 0.5 and 0.25) and profiles them together on the default fleet
(`profile_variants`: one shared latency regression, so the variants compare). Then:

1. big/little (little = distilled-w0.25 on the device, big = fp32): for confidence thresholds
   from "never escalate" to "always escalate", plus thresholds calibrated on the validation
   split, the test accuracy, the escalation rate and the predicted mean latency and device
   energy per inference with the big model on the device and on the edge (over the fleet's
   device-edge link: input up, answer down);
2. the selector over all variants plus the calibrated big/little pair, for latency SLOs from
   tight to loose (max accuracy), for minimum accuracies (min latency) and for device energy
   budgets (max accuracy).

Latencies and energies are the planner's predictions for the fleet's tiers (emulated, see the
note in the JSON); accuracies are measured. Selection uses validation accuracy, tables show
test accuracy too.

    .venv/bin/python benchmarks/model_selection.py [--epochs 30] [--seed 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from _zoo import EMULATION_NOTE, emit
from edgeweave.adapt.biglittle import (
    ALL_ESCALATE,
    NO_ESCALATION,
    BigLittle,
    biglittle_report,
    calibrate_threshold,
)
from edgeweave.adapt.compress import (
    baseline,
    distill,
    filter_prune,
    low_rank,
    magnitude_prune,
    quantize_dynamic,
)
from edgeweave.adapt.datasets import digits
from edgeweave.adapt.fit import fit
from edgeweave.graph import load_model
from edgeweave.plan import (
    BigLittleCandidate,
    Candidate,
    SelectionError,
    big_little_costs,
    profile_variants,
    select,
)
from edgeweave.topology import DEFAULT_FLEET, load_fleet

SHAPE = (1, 1, 8, 8)
SWEEP = [NO_ESCALATION["confidence"], 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999,
         ALL_ESCALATE["confidence"]]


def acc(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return int((module.eval()(x).argmax(1) == y).sum()) / len(y)


def sweep_selection(cands: list[Any], label: str, settings: list[dict[str, Any]],
                    ) -> list[dict[str, Any]]:
    rows = []
    for kw in settings:
        row: dict[str, Any] = {"setting": label.format(**kw), **kw}
        try:
            sel = select(cands, "latency", kw.get("slo_ms"), kw.get("energy_budget_j"), None,
                         kw.get("min_accuracy"))
        except SelectionError as e:
            row.update(chosen=None, error=str(e),
                       feasible=[o.name for o in e.selection.outcomes if o.feasible])
            rows.append(row)
            continue
        o = sel.chosen_outcome
        assert o is not None
        row.update(chosen=o.name, val_accuracy=o.accuracy,
                   test_accuracy=o.notes.get("test_accuracy"), total_ms=o.total_ms,
                   worst_ms=o.worst_ms, energy_mj=o.energy_j * 1e3, mode=o.mode,
                   exact=sel.exact, feasible=[x.name for x in sel.outcomes if x.feasible])
        rows.append(row)
    return rows


def selection_table(title: str, rows: list[dict[str, Any]], n: int) -> Table:
    t = Table(title=title)
    for col in ("setting", "chosen", "val acc", "test acc", "ms", "mJ", "where", "feasible"):
        t.add_column(col, justify="left" if col in ("setting", "chosen", "where") else "right")
    for r in rows:
        if r["chosen"] is None:
            t.add_row(r["setting"], "[red]none[/]", "-", "-", "-", "-",
                      "tightest: " + r["error"].split("; the tightest is ")[-1], f"0/{n}")
            continue
        t.add_row(r["setting"], r["chosen"], f"{r['val_accuracy']:.4f}",
                  f"{r['test_accuracy']:.4f}", f"{r['total_ms']:.3f}", f"{r['energy_mj']:.3f}",
                  r["mode"], f"{len(r['feasible'])}/{n}")
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30, help="fp32 training / distillation epochs")
    ap.add_argument("--fine-tune", type=int, default=8, help="fine-tuning epochs after pruning")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5, help="profiling repeats per variant")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    fleet = load_fleet(DEFAULT_FLEET)

    d = digits(seed=args.seed)
    start = time.perf_counter()
    fp32 = fit(load_model("digits-cnn").module, d.x_train, d.y_train, epochs=args.epochs,
               seed=args.seed)
    ft = {"x": d.x_train, "y": d.y_train, "epochs": args.fine_tune, "lr": 3e-4,
          "seed": args.seed}
    variants = [
        baseline(fp32), quantize_dynamic(fp32), filter_prune(fp32, 0.5, input_shape=SHAPE, **ft),
        magnitude_prune(fp32, 0.85, **ft), low_rank(fp32, 16, **ft),
        distill(fp32, d.x_train, d.y_train, width=0.5, epochs=args.epochs, seed=args.seed),
        distill(fp32, d.x_train, d.y_train, width=0.25, epochs=args.epochs, seed=args.seed),
    ]
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    profiles = profile_variants({v.name: v.module for v in variants}, SHAPE, fleet,
                                repeats=args.repeats, seed=args.seed)
    profile_s = time.perf_counter() - start
    by_name = {v.name: v for v in variants}
    big, little = by_name["fp32"], by_name["distilled-w0.25"]

    # ---- 1. big/little sweep --------------------------------------------------------------
    costs = {where: big_little_costs(profiles[little.name], profiles[big.name], where)
             for where in ("device-only", "edge-only")}
    pairs: list[tuple[str, float]] = [(f"{t:g}", t) for t in SWEEP]
    big_val = acc(big.module, d.x_val, d.y_val)
    calibrations = {
        "target = fp32 val acc": {"target_accuracy": big_val},
        "target = fp32 val acc - 1pt": {"target_accuracy": big_val - 0.01},
        "budget 10%": {"escalation_budget": 0.10},
        "budget 25%": {"escalation_budget": 0.25},
    }
    cal_docs = {}
    for label, kw in calibrations.items():
        cal = calibrate_threshold(little.module, big.module, d.x_val, d.y_val, **kw)
        cal_docs[label] = cal.__dict__
        pairs.append((f"{cal.threshold:.4g} ({label})", cal.threshold))
    bl_rows = []
    for label, t in pairs:
        pair = BigLittle(little.module, big.module, t, "confidence")
        row: dict[str, Any] = {"threshold": t, "label": label}
        for where, c in costs.items():
            rep = biglittle_report(pair, d.x_test, d.y_test, c.little_ms, c.big_ms,
                                   c.transfer_ms, c.little_energy_j, c.big_energy_j)
            row.update(accuracy=rep.accuracy, escalation_rate=rep.escalation_rate,
                       kept_accuracy=rep.kept_accuracy,
                       escalated_accuracy=rep.escalated_accuracy)
            key = "device" if where == "device-only" else "edge"
            row[f"mean_ms_big_{key}"] = rep.expected_ms
            row[f"worst_ms_big_{key}"] = rep.worst_ms
            row[f"mean_mj_big_{key}"] = (rep.expected_energy_j or 0.0) * 1e3
        bl_rows.append(row)

    bl_table = Table(title=f"big/little on digits: little {little.name} on the device, big "
                           f"{big.name} on the device or the edge ({fleet.name}; test split)")
    for col in ("threshold", "test acc", "escalated %", "mean ms (big dev)",
                "mean ms (big edge)", "worst ms (dev / edge)", "mean mJ (dev / edge)"):
        bl_table.add_column(col, justify="left" if col == "threshold" else "right")
    for r in bl_rows:
        bl_table.add_row(r["label"], f"{r['accuracy']:.4f}", f"{r['escalation_rate'] * 100:.1f}",
                         f"{r['mean_ms_big_device']:.3f}", f"{r['mean_ms_big_edge']:.3f}",
                         f"{r['worst_ms_big_device']:.2f} / {r['worst_ms_big_edge']:.2f}",
                         f"{r['mean_mj_big_device']:.2f} / {r['mean_mj_big_edge']:.2f}")

    # ---- 2. the selector ------------------------------------------------------------------
    cands: list[Any] = []
    variant_rows = []
    for v in variants:
        va, te = acc(v.module, d.x_val, d.y_val), acc(v.module, d.x_test, d.y_test)
        cands.append(Candidate(v.name, va, profiles[v.name], {"test_accuracy": te}))
        alone = select([cands[-1]], "latency").chosen_outcome
        assert alone is not None
        variant_rows.append({"variant": v.name, "val_accuracy": va, "test_accuracy": te,
                             "nonzero_weights": v.params, "size_bytes": v.size_bytes,
                             "device_param_bytes": sum(n.param_bytes
                                                       for n in profiles[v.name].nodes),
                             "fastest_ms": alone.total_ms, "fastest_mode": alone.mode,
                             "energy_mj": alone.energy_j * 1e3})
    cal = calibrate_threshold(little.module, big.module, d.x_val, d.y_val,
                              target_accuracy=big_val)
    test_rep = biglittle_report(BigLittle(little.module, big.module, cal.threshold), d.x_test,
                                d.y_test)
    cands.append(BigLittleCandidate("big/little", cal.accuracy, profiles[little.name],
                                    profiles[big.name], cal.escalation_rate, cal.threshold,
                                    cal.mode, {"test_accuracy": test_rep.accuracy}))
    fastest = min(r["fastest_ms"] for r in variant_rows)
    slowest = max(r["fastest_ms"] for r in variant_rows)
    slos = sorted({round(float(s), 3) for s in np.geomspace(0.85 * fastest, 1.3 * slowest, 9)}
                  | {10.0, 50.0})
    start = time.perf_counter()
    slo_rows = sweep_selection(cands, "SLO {slo_ms:g} ms", [{"slo_ms": s} for s in slos])
    accs = sorted({0.90, 0.93, 0.95, round(big_val, 4), 0.99})
    acc_rows = sweep_selection(cands, "acc >= {min_accuracy:.2%}",
                               [{"min_accuracy": a} for a in accs])
    least = min(r["energy_mj"] for r in variant_rows)
    budgets = [least * f for f in (0.9, 1.001, 1.1, 1.25, 1.5, 3.0)]
    energy_rows = sweep_selection(cands, "energy {energy_mj:.3f} mJ",
                                  [{"energy_budget_j": b / 1e3, "energy_mj": b}
                                   for b in budgets])
    select_s = time.perf_counter() - start

    var_table = Table(title=f"variants of digits-cnn on {fleet.name} (each alone, fastest "
                            "placement)")
    for col in ("variant", "val acc", "test acc", "weights", "device KiB", "ms", "mJ", "where"):
        var_table.add_column(col, justify="left" if col in ("variant", "where") else "right")
    for r in variant_rows:
        var_table.add_row(r["variant"], f"{r['val_accuracy']:.4f}", f"{r['test_accuracy']:.4f}",
                          str(r["nonzero_weights"]), f"{r['device_param_bytes'] / 1024:.1f}",
                          f"{r['fastest_ms']:.3f}", f"{r['energy_mj']:.3f}", r["fastest_mode"])
    n = len(cands)
    tables = [var_table, bl_table,
              selection_table("selector: max validation accuracy under a latency SLO "
                              "(tight -> loose)", slo_rows, n),
              selection_table("selector: min latency at a minimum validation accuracy",
                              acc_rows, n),
              selection_table("selector: max validation accuracy under a device energy budget",
                              energy_rows, n)]
    doc = {
        "model": "digits-cnn", "dataset": "sklearn digits", "fleet": fleet.name,
        "seed": args.seed, "epochs": args.epochs, "train_s": train_s, "profile_s": profile_s,
        "select_s": select_s, "variants": variant_rows,
        "big_little": {"little": little.name, "big": big.name, "mode": "confidence",
                       "costs": {k: c.__dict__ for k, c in costs.items()},
                       "calibrations": cal_docs, "sweep": bl_rows},
        "selection_candidate_big_little": {"threshold": cal.threshold,
                                           "val_accuracy": cal.accuracy,
                                           "val_escalation_rate": cal.escalation_rate,
                                           "test_accuracy": test_rep.accuracy,
                                           "test_escalation_rate": test_rep.escalation_rate},
        "selection": {"slo": slo_rows, "min_accuracy": acc_rows, "energy": energy_rows},
        "notes": [
            EMULATION_NOTE,
            "variants profiled together (profile_variants): one latency regression for all, so "
            "identical layers get identical predictions; dense kernels skip no zeros, so "
            "magnitude pruning does not change predicted latency",
            "big/little mean latency = little + escalation rate x (big compute + transfer); "
            "energy is the end device's (compute, radio, idle while the edge computes)",
            "the selector uses validation accuracy; the big/little threshold is calibrated on "
            "the same split, so its validation accuracy is optimistic: compare test columns",
        ],
    }
    emit(Console(width=150), tables, doc, args.json)


if __name__ == "__main__":
    main()
