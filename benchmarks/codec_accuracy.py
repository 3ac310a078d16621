"""Accuracy impact of each activation codec at each cut, on real data (sklearn digits).

Trains the built-in digits-cnn on sklearn's handwritten digits (fixed seed, a few seconds on
CPU), then for every device-edge cut point and every codec reports the bytes on the wire and
the top-1 agreement with the uncompressed model (and accuracy) on the held-out test split.

    .venv/bin/python benchmarks/codec_accuracy.py [--epochs 40] [--json out.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from _zoo import emit
from edgeweave.adapt.datasets import digits
from edgeweave.adapt.fit import fit
from edgeweave.codec import get_codec
from edgeweave.graph import capture, load_model
from edgeweave.graph.fidelity import fidelity
from edgeweave.profile.activations import activations

CODECS = ("none", "zstd", "fp16", "fp16+zstd", "int8", "int8+zstd")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    data = digits()
    xte, yte = data.x_test, data.y_test
    spec = load_model("digits-cnn")
    model = fit(spec.module, data.x_train, data.y_train, epochs=args.epochs)
    graph = capture(model, spec.input_shape, name="digits-cnn")
    with torch.inference_mode():
        base_acc = float((model(xte).argmax(1) == yte).float().mean())
    order = [n.name for n in graph.nodes]
    rows = []
    for cut in range(1, len(order) - 1):  # nodes before `cut` on the device
        placement = {n: ("device" if i < cut else "edge") for i, n in enumerate(order)}
        crossing = order[cut - 1]
        with torch.inference_mode():  # the crossing activation, for its byte counts
            sample = activations(graph, xte[:1])[crossing]
        for codec in CODECS:
            fid = fidelity(graph, placement, {"device-edge": codec}, xte, yte)
            rows.append({
                "cut_after": crossing, "codec": codec,
                "bytes": get_codec(codec).encode(sample).nbytes,
                "raw_bytes": sample.numel() * sample.element_size(),
                "agreement_pct": fid.agreement * 100, "accuracy_pct": fid.accuracy * 100,
                "max_abs_error": fid.max_abs_error,
            })
    console = Console(width=140)
    table = Table(title=f"digits-cnn (test accuracy uncompressed {base_acc * 100:.1f}%, "
                        f"{len(yte)} real test digits): codec at the device-edge cut")
    for col in ("cut after", "codec", "bytes", "x smaller", "agreement %", "accuracy %",
                "max |err|"):
        table.add_column(col, justify="left" if col in ("cut after", "codec") else "right")
    for r in rows:
        table.add_row(r["cut_after"], r["codec"], str(r["bytes"]),
                      f"{r['raw_bytes'] / max(1, r['bytes']):.1f}", f"{r['agreement_pct']:.1f}",
                      f"{r['accuracy_pct']:.1f}", f"{r['max_abs_error']:.2e}")
    worst = {c: min(r["agreement_pct"] for r in rows if r["codec"] == c) for c in CODECS}
    console.print(f"worst agreement per codec over all cuts: {worst}")
    emit(console, [table], {"benchmark": "codec_accuracy", "uncompressed_accuracy": base_acc,
                            "test_samples": len(yte), "rows": rows,
                            "worst_agreement_pct": worst}, args.json)


if __name__ == "__main__":
    main()
