"""Early exits (BranchyNet) on the digits CNN: accuracy vs latency/FLOPs as thresholds vary.

Attaches two exit heads to the built-in digits-cnn (after conv1+relu and after
conv2+relu+maxpool; the backbone's output is the third exit), trains all exits jointly on
sklearn's handwritten digits (fixed seed, a few seconds on CPU), then sweeps one entropy
threshold shared by the early exits (0..1) plus thresholds calibrated on the validation split
for target accuracies 0.90/0.95/0.97, and reports on the test split: accuracy, mean latency
per sample on this host (batch 1, median of --repeats runs), mean MFLOPs and the fraction of
samples leaving at each exit. Saves a Pareto plot (accuracy vs mean latency).

    .venv/bin/python benchmarks/early_exit.py [--epochs 20] [--json out.json]
        [--plot out/early_exit_pareto.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from _zoo import emit
from edgeweave.adapt.datasets import digits
from edgeweave.adapt.exits import (
    attach_exits,
    calibrate_thresholds,
    exit_report,
    train_joint,
)
from edgeweave.graph import load_model

TARGETS = (0.90, 0.95, 0.97)


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of (latency, accuracy) points not dominated (lower latency, higher accuracy)."""
    keep = []
    for i, (lat, acc) in enumerate(points):
        if not any((lo <= lat and ao >= acc) and (lo < lat or ao > acc) for lo, ao in points):
            keep.append(i)
    return sorted(keep, key=lambda i: points[i][0])


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    pts = [(r["mean_latency_ms"], 100 * r["accuracy"]) for r in rows]
    front = pareto(pts)
    fig, ax = plt.subplots(figsize=(6, 4))
    sweep = [p for r, p in zip(rows, pts, strict=True) if r["kind"] == "sweep"]
    ax.scatter(*zip(*sweep, strict=True), s=18, c="tab:blue", label="shared entropy threshold")
    calibrated = [(r, p) for r, p in zip(rows, pts, strict=True) if r["kind"] == "calibrated"]
    for j, (r, (lat, acc)) in enumerate(calibrated):
        ax.scatter([lat], [acc], marker="*", s=120, c="tab:red")
        ax.annotate(f"target {r['target']:.2f}", (lat, acc), fontsize=8,
                    xytext=(4, 6 - 10 * j), textcoords="offset points")
    ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "k--", lw=1,
            label="Pareto front")
    ax.set_xlabel("mean latency per sample on this host (ms, batch 1)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("digits-cnn with early exits (BranchyNet)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--points", type=int, default=20, help="shared thresholds in the sweep")
    ap.add_argument("--repeats", type=int, default=5, help="latency runs (median taken)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=Path("out/early_exit_pareto.png"))
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    data = digits(seed=args.seed)
    spec = load_model("digits-cnn")
    net = attach_exits(spec.module, [1, 4], 10, spec.input_shape)
    train_joint(net, data.x_train, data.y_train, epochs=args.epochs, seed=args.seed)
    with torch.no_grad():
        exit_acc = [float((o.argmax(1) == data.y_test).float().mean())
                    for o in net(data.x_test)]
    early = net.num_exits - 1

    runs: list[tuple[str, float | None, list[float]]] = [
        ("sweep", None, [float(t)] * early) for t in np.linspace(0.0, 1.0, args.points)]
    for target in TARGETS:
        ts = calibrate_thresholds(net, data.x_val, data.y_val, target, mode="entropy")
        runs.append(("calibrated", target, ts))

    rows = []
    for kind, target, ts in runs:
        rep = exit_report(net, data.x_test, data.y_test, ts, mode="entropy",
                          repeats=args.repeats)
        rows.append({"kind": kind, "target": target, "thresholds": ts,
                     "accuracy": rep.accuracy, "mean_latency_ms": 1e3 * rep.mean_latency_s,
                     "mean_mflops": rep.mean_flops / 1e6,
                     "exit_fractions": [r["fraction"] for r in rep],
                     "exit_accuracy": [r["accuracy"] for r in rep]})
    flops = [r["flops"] for r in rep]

    table = Table(title="digits-cnn early exits: test split, entropy rule "
                        "(exit when normalized entropy <= threshold)")
    for col in ("run", "thresholds", "acc %", "latency ms", "MFLOPs",
                *(f"exit {k}" for k in range(net.num_exits))):
        table.add_column(col, justify="right")
    for r in rows:
        name = "sweep" if r["kind"] == "sweep" else f"calib {r['target']:.2f}"
        table.add_row(name, " / ".join(f"{t:.2f}" for t in r["thresholds"]),
                      f"{100 * r['accuracy']:.1f}", f"{r['mean_latency_ms']:.3f}",
                      f"{r['mean_mflops']:.3f}",
                      *(f"{f:.2f}" for f in r["exit_fractions"]))
    exits = Table(title="exits (each alone, test split)")
    for col in ("exit", "after block", "accuracy %", "cumulative MFLOPs"):
        exits.add_column(col, justify="right")
    for k in range(net.num_exits):
        after = str(net.exit_points[k]) if k < early else "final"
        exits.add_row(str(k), after, f"{100 * exit_acc[k]:.1f}", f"{flops[k] / 1e6:.3f}")

    plot(rows, args.plot)
    doc = {"model": "digits-cnn", "exit_points": net.exit_points, "epochs": args.epochs,
           "seed": args.seed, "mode": "entropy", "exit_accuracy_alone": exit_acc,
           "exit_flops": flops, "runs": rows, "plot": str(args.plot),
           "note": "latency measured on this host, batch 1, 1 thread; tier latency = host "
                   "latency x (host GFLOP/s / tier GFLOP/s)"}
    emit(Console(width=120), [exits, table], doc, args.json)


if __name__ == "__main__":
    main()
