"""DDNN (distributed DNN over end devices, Teerapittayanon et al. 2017) on multi-view digits.

Each of 1, 2 or 3 end devices sees its own synthetic "camera view" of every digit
(``make_views``: a fixed per-device 1-pixel translation, a random 3x3 occlusion and Gaussian
noise sigma 0.15). For every device count and aggregation scheme (max / avg / concat) a DDNN is
trained jointly (CE(local) + CE(cloud)) on the digits train split and evaluated on the test
split while sweeping the local-exit entropy threshold (-1 = all to the cloud, 0.1..0.9,
1 = all local): accuracy, fraction exiting locally, bytes sent per sample by all devices
together (fp32 exit vectors; plus fp32 feature maps on cloud exits) and the reduction versus
every device uploading its raw 8x8 input as fp32. A second table compares the aggregate with
single devices: the 1-device DDNN (same view as device 0) and each device's own local exit.

    .venv/bin/python benchmarks/ddnn.py [--epochs 20] [--seed 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from _zoo import emit
from edgeweave.adapt.datasets import digits
from edgeweave.adapt.ddnn import AGGREGATIONS, DDNN, ddnn_report, make_views, train_ddnn

THRESHOLDS = [-1.0] + [round(0.1 * k, 1) for k in range(1, 10)] + [1.0]
DEVICE_COUNTS = (1, 2, 3)


def main() -> None:
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()

    start = time.perf_counter()
    data = digits(seed=args.seed)
    runs = []
    for n in DEVICE_COUNTS:
        # test views use a different noise/occlusion seed; camera offsets are per device
        v_train = make_views(data.x_train, n, seed=args.seed)
        v_test = make_views(data.x_test, n, seed=args.seed + 1)
        for agg in AGGREGATIONS:
            torch.manual_seed(args.seed)
            t0 = time.perf_counter()
            model = train_ddnn(DDNN(n, agg), v_train, data.y_train, epochs=args.epochs,
                               seed=args.seed)
            train_s = time.perf_counter() - t0
            sweep = [ddnn_report(model, v_test, data.y_test, t) for t in THRESHOLDS]
            runs.append({"n_devices": n, "aggregation": agg, "train_s": train_s,
                         "sweep": sweep})

    sweep_table = Table(title="DDNN threshold sweep (3 devices; test split)")
    for col in ("aggregation", "threshold", "accuracy", "local-exit acc", "cloud-exit acc",
                "fraction local", "bytes/sample", "raw bytes", "reduction vs raw"):
        sweep_table.add_column(col, justify="right")
    for run in runs:
        if run["n_devices"] != 3:
            continue
        for r in run["sweep"]:
            sweep_table.add_row(run["aggregation"], f"{r['threshold']:.1f}",
                                f"{r['accuracy']:.3f}", f"{r['local_exit_accuracy']:.3f}",
                                f"{r['cloud_exit_accuracy']:.3f}", f"{r['fraction_local']:.2f}",
                                f"{r['mean_bytes_per_sample']:.0f}", str(r["raw_upload_bytes"]),
                                f"{r['reduction_factor']:.2f}x")

    single = {run["aggregation"]: run["sweep"][0] for run in runs if run["n_devices"] == 1}
    agg_table = Table(title="Aggregation vs single device (test accuracy)")
    for col in ("devices", "aggregation", "local-only acc", "cloud-only acc",
                "acc @ thr 0.3", "local @ 0.3", "reduction @ 0.3", "per-device local acc",
                "1-device local / cloud", "train s"):
        agg_table.add_column(col, justify="right")
    summary = []
    for run in runs:
        r = run["sweep"][0]
        mid = next(s for s in run["sweep"] if s["threshold"] == 0.3)
        one = single[run["aggregation"]]
        row = {"n_devices": run["n_devices"], "aggregation": run["aggregation"],
               "local_only_accuracy": r["local_only_accuracy"],
               "cloud_only_accuracy": r["cloud_only_accuracy"],
               "accuracy_at_0.3": mid["accuracy"], "fraction_local_at_0.3": mid["fraction_local"],
               "reduction_at_0.3": mid["reduction_factor"],
               "device_local_accuracy": r["device_local_accuracy"],
               "single_device_local_accuracy": one["local_only_accuracy"],
               "single_device_cloud_accuracy": one["cloud_only_accuracy"],
               "train_s": run["train_s"]}
        summary.append(row)
        per_dev = ("n/a (concat)" if run["aggregation"] == "concat" and run["n_devices"] > 1
                   else " ".join(f"{a:.2f}" for a in r["device_local_accuracy"]))
        agg_table.add_row(str(run["n_devices"]), run["aggregation"],
                          f"{r['local_only_accuracy']:.3f}", f"{r['cloud_only_accuracy']:.3f}",
                          f"{mid['accuracy']:.3f}", f"{mid['fraction_local']:.2f}",
                          f"{mid['reduction_factor']:.2f}x", per_dev,
                          f"{one['local_only_accuracy']:.3f} / {one['cloud_only_accuracy']:.3f}",
                          f"{run['train_s']:.1f}")

    doc = {
        "benchmark": "ddnn",
        "dataset": "sklearn digits (8x8), synthetic multi-view (make_views)",
        "epochs": args.epochs, "seed": args.seed, "thresholds": THRESHOLDS,
        "bytes_note": ("per sample, all devices together: local exit = n*10 fp32 exit values; "
                       "cloud exit adds n*128 fp32 feature values; raw = n*64 fp32 pixels. "
                       "Per-device local accuracy of concat models is not meaningful (their "
                       "heads are only trained through the concat linear layer)."),
        "summary": summary,
        "runs": runs,
        "total_s": time.perf_counter() - start,
    }
    emit(Console(width=170), [sweep_table, agg_table], doc, args.json)


if __name__ == "__main__":
    main()
