"""`edgeweave adapt exits` and `adapt compress`: wiring only (zoo model + real digits +
adapt + tables)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from torch import nn

from edgeweave.cli import reporting
from edgeweave.cli.options import write_output
from edgeweave.errors import EdgeWeaveError


def _digits_model(model: str):
    from edgeweave.graph import load_model

    spec = load_model(model)
    if not isinstance(spec.module, nn.Sequential) or tuple(spec.input_shape) != (1, 1, 8, 8):
        raise EdgeWeaveError(
            f"{model}: these commands train on sklearn's 8x8 digits and need an nn.Sequential "
            f"taking (1, 1, 8, 8) input (e.g. digits-cnn or your file.py:factory); got "
            f"{type(spec.module).__name__} with input {list(spec.input_shape)}")
    return spec


def exits(console: Console, model: str, epochs: int, target: float, mode: str,
          json_out: Path | None, page: Path | None = None) -> None:
    from edgeweave.adapt import (
        attach_exits,
        calibrate_thresholds,
        candidate_exit_points,
        digits,
        exit_report,
        train_joint,
    )

    spec = _digits_model(model)
    data = digits()
    net = attach_exits(spec.module, candidate_exit_points(spec.module, spec.input_shape), 10,
                       spec.input_shape)
    with console.status(f"training {model} with {net.num_exits} exits on real digits"):
        train_joint(net, data.x_train, data.y_train, epochs=epochs)
    thresholds = calibrate_thresholds(net, data.x_val, data.y_val, target, mode)
    report = exit_report(net, data.x_test, data.y_test, thresholds, mode)
    table = Table(title=f"{model} exits ({mode} thresholds calibrated for {target:.0%} on "
                        f"validation; test split below)")
    for col in ("exit", "after block", "threshold", "leaves %", "accuracy %", "MFLOPs",
                "host ms"):
        table.add_column(col, justify="right")
    for row, th in zip(report, [*thresholds, None], strict=False):
        table.add_row(str(row["exit"]), str(row["after_block"] if row["after_block"] is not None
                                            else "final"),
                      "-" if th is None else f"{th:.3f}", f"{row['fraction'] * 100:.1f}",
                      "-" if row["accuracy"] is None else f"{row['accuracy'] * 100:.1f}",
                      f"{row['flops'] / 1e6:.3f}",
                      "-" if row.get("mean_latency_ms") is None
                      else f"{row['mean_latency_ms']:.3f}")
    console.print(table)
    console.print(f"overall: accuracy {report.accuracy * 100:.1f}%, mean "
                  f"{report.mean_flops / 1e6:.3f} MFLOPs per sample "
                  f"(final exit alone: {report[-1]['flops'] / 1e6:.3f})")
    if json_out:
        write_output("--json", json_out, json.dumps(report.summary(), indent=1, default=float))
    if page:
        reporting.write_tables(console, page, "edgeweave adapt exits", [table],
                               model=model, target=target, mode=mode,
                               accuracy=report.accuracy, mean_mflops=report.mean_flops / 1e6)


def compress(console: Console, model: str, epochs: int, sparsity: float,
             json_out: Path | None, page: Path | None = None) -> None:
    from edgeweave.adapt import (
        digits,
        distill,
        filter_prune,
        fit,
        low_rank,
        magnitude_prune,
        quantize_dynamic,
        quantize_static,
    )
    from edgeweave.adapt.compress import baseline
    from edgeweave.adapt.fit import accuracy

    spec = _digits_model(model)
    data = digits()
    tune: dict[str, Any] = {"x": data.x_train, "y": data.y_train, "epochs": max(1, epochs // 4)}
    with console.status(f"training {model} and deriving variants on real digits"):
        base = fit(spec.module, data.x_train, data.y_train, epochs=epochs)
        variants = [baseline(base), quantize_dynamic(base),
                    quantize_static(base, data.x_train[:512]),
                    magnitude_prune(base, sparsity, **tune),
                    filter_prune(base, 0.5, input_shape=spec.input_shape, **tune),
                    low_rank(base, 16, **tune),
                    distill(base, data.x_train, data.y_train, width=0.5, epochs=epochs)]
    ref = accuracy(base, data.x_test, data.y_test)
    table = Table(title=f"{model} variants (test split of sklearn digits)")
    for col in ("variant", "size x", "weights x", "MFLOPs", "accuracy %", "change pts"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    rows = []
    for v in variants:
        acc = accuracy(v.module, data.x_test, data.y_test)
        row = {"variant": v.name, "size_x": variants[0].size_bytes / v.size_bytes,
               "weights_x": variants[0].params / v.params,
               "mflops": v.flops(spec.input_shape) / 1e6, "accuracy": acc,
               "change_points": (acc - ref) * 100, "recipe": v.recipe}
        rows.append(row)
        table.add_row(v.name, f"{row['size_x']:.2f}", f"{row['weights_x']:.2f}",
                      f"{row['mflops']:.3f}", f"{acc * 100:.1f}", f"{row['change_points']:+.2f}")
    console.print(table)
    if json_out:
        write_output("--json", json_out, json.dumps(rows, indent=1, default=str))
    if page:
        reporting.write_tables(console, page, "edgeweave adapt compress", [table], model=model,
                               sparsity=sparsity, baseline_accuracy=ref)
