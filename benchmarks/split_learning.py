"""Split learning vs FedAvg on the same data, activation privacy, and GPipe pipelines.

Workload: sklearn digits scaled to [0, 1] (1437 training samples, 360 held out), 10 IID clients,
``cnn:32,64,128`` (151k parameters), SGD with the same learning rate and batch size for both.

1. Bytes per epoch and test accuracy, split learning (sequential SplitNN, labels at the edge,
   device weights relayed client to client through the edge; plus the U-shaped variant whose
   last layer and labels stay on the device) vs FedAvg (all 10 clients per
   round, one local epoch: one round = one pass over the data, like one split-learning epoch),
   for three cut points and the codecs none / fp16 / int8 (/ int8+zstd for activations). FedAvg's
   codec encodes the model down and the update deltas up (edgeweave.train.transfer). Every byte
   figure is a payload size actually produced (Encoded.nbytes), never a formula.
2. Accuracy vs activation noise (Mao et al.: per-sample L2 clipping at the median activation
   norm measured at initialisation, Gaussian noise std = multiplier x clip) and Arden
   (nullification of 10% of the input entries + L1 clipping + Laplace noise), with the
   per-sample epsilon that noise buys after the run (RDP for Gaussian, delta = 1e-5; pure DP for
   Laplace). Test accuracy is private inference: the transform is applied at test time too.
3. GPipe: an MLP too big for one capped "device", stages x micro-batches -> throughput, the
   bubble measured from timestamps (threads sharing this host's cores), replayed from the
   measured op times as if each stage had its own device, and the theoretical (S-1)/(M+S-1);
   per-stage memory (params + grads + saved activations) against the whole model's.
4. (full run) the same split-learning run with the edge as a separate process over gRPC on
   loopback: same bytes, same accuracy, wall time of the real wire.

    .venv/bin/python benchmarks/split_learning.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from _zoo import emit
from edgeweave.train.backends.vectorized import VectorizedBackend
from edgeweave.train.data import make_task
from edgeweave.train.models import build_model
from edgeweave.train.server import Server, ServerConfig
from edgeweave.train.split import ClipNoise, SplitConfig, SplitTrainer, arden
from edgeweave.train.split.pipeline import (
    GPipe,
    replay_bubble,
    stage_memory,
    theoretical_bubble,
)
from edgeweave.train.strategies import FedAvg
from edgeweave.train.task import Task
from edgeweave.train.types import FitConfig

MODEL = "cnn:32,64,128"
CUTS = {2: "conv1+relu (32x8x8)", 5: "pool (64x4x4)", 8: "fc1+relu (128)"}
U_HEAD = 8  # U-shaped rows: the edge runs flatten..fc1+relu, the device keeps fc2 and the labels
PIPE_MODEL = "mlp:64,1024,1024,1024,1024,1024,10"


def kb(n: float) -> str:
    return f"{n / 1e3:,.0f}"


def _summary(method: str, cut: int | None, codec: str, lr: float, up: list[int],
             down: list[int], acc: list[float], wall: float, target: float) -> dict:
    # split learning's epoch 0 has one handoff fewer (the first client starts from the shared
    # init): bytes per epoch are the steady state, the mean over epochs >= 1 when there are any
    steady = slice(1, None) if method == "split" and len(up) > 1 else slice(None)
    hit = next((i for i, a in enumerate(acc) if a >= target), None)
    return {"method": method, "cut": cut, "codec": codec, "lr": lr,
            "bytes_up_per_epoch": statistics.fmean(up[steady]),
            "bytes_down_per_epoch": statistics.fmean(down[steady]),
            "test_acc": acc[-1], "acc_by_epoch": acc, "bytes_up_by_epoch": up,
            "bytes_down_by_epoch": down, "target": target,
            "epochs_to_target": None if hit is None else hit + 1,
            "bytes_to_target": None if hit is None else sum(up[:hit + 1]) + sum(down[:hit + 1]),
            "wall_s": wall}


def fedavg_run(task: Task, args: argparse.Namespace, codec: str, lr: float) -> dict:
    strat = FedAvg(fraction=1.0, fit=FitConfig(lr=lr, batch_size=args.batch_size, epochs=1))
    cfg = ServerConfig(rounds=args.epochs, seed=args.seed,
                       codec=None if codec == "none" else codec)
    t0 = time.perf_counter()
    recs = Server(task, strat, VectorizedBackend(task), cfg).run()
    return _summary("fedavg", None, codec, lr, [r.bytes_up for r in recs],
                    [r.bytes_down for r in recs], [r.test_acc for r in recs],
                    time.perf_counter() - t0, args.target)


def split_run(task: Task, args: argparse.Namespace, cut: int, codec: str, lr: float,
              privacy=None, link=None, head: int | None = None) -> dict:
    cfg = SplitConfig(MODEL, cut=cut, head=head, lr=lr, batch_size=args.batch_size,
                      epochs=args.epochs, codec=codec, seed=args.seed)
    trainer = SplitTrainer(cfg, link, privacy)
    t0 = time.perf_counter()
    recs = trainer.run(task.data, task.test_x, task.test_y)
    method = "split" if head is None else "split-U"
    row = _summary(method, cut, codec, lr, [r.bytes_up for r in recs],
                   [r.bytes_down for r in recs], [r.test_acc for r in recs],
                   time.perf_counter() - t0, args.target)
    last = recs[-1]
    row.update(activation_bytes=last.activation_bytes, gradient_bytes=last.gradient_bytes,
               label_bytes=last.label_bytes, weight_bytes_up=last.weight_bytes_up,
               handoffs=last.handoffs)
    return row


def best_lrs(task: Task, args: argparse.Namespace) -> tuple[dict[str, float], list[dict]]:
    """Each method's learning rate from the grid, by final accuracy with codec none (at the
    pool cut for split learning), as FedAvg papers tune each method separately."""
    tried = []
    for lr in args.lrs:
        tried.append(fedavg_run(task, args, "none", lr))
        tried.append(split_run(task, args, 5, "none", lr))
    best = {}
    for method in ("fedavg", "split"):
        rows = [r for r in tried if r["method"] == method]
        best[method] = max(rows, key=lambda r: r["test_acc"])["lr"]
    return best, tried


def bytes_vs_fedavg(task: Task, args: argparse.Namespace
                    ) -> tuple[Table, list[dict], dict[str, float]]:
    lrs, tried = best_lrs(task, args)
    codecs = ["none", "int8"] if args.quick else ["none", "fp16", "int8"]
    done = {(r["method"], r["cut"], r["codec"], r["lr"]): r for r in tried}
    rows = []
    for codec in codecs:
        key = ("fedavg", None, codec, lrs["fedavg"])
        rows.append(done.get(key) or fedavg_run(task, args, codec, lrs["fedavg"]))
    cuts = [5] if args.quick else list(CUTS)
    for cut in cuts:
        for codec in codecs + ([] if args.quick else ["int8+zstd"]):
            key = ("split", cut, codec, lrs["split"])
            rows.append(done.get(key) or split_run(task, args, cut, codec, lrs["split"]))
    for codec in ["none", "int8"]:  # U-shape: the last layer and the labels stay on the device
        rows.append(split_run(task, args, 5, codec, lrs["split"], head=U_HEAD))
    table = Table(title=f"Split learning vs FedAvg: digits, 10 IID clients, {MODEL}, "
                        f"{args.epochs} epochs, B={args.batch_size}, lr per method from "
                        f"{args.lrs} (kB per epoch = one pass over all data)")
    for col in ("method", "cut", "codec", "lr", "up kB/epoch", "down kB/epoch",
                "act/grad kB", "weights kB x2", "test acc",
                f"epochs to {args.target:g}", f"kB to {args.target:g}", "wall s"):
        table.add_column(col, justify="left" if col in ("method", "cut", "codec") else "right")
    for r in rows:
        split = r["method"] != "fedavg"
        where = "-" if not split else CUTS[r["cut"]] + (
            " .. fc1 (U)" if r["method"] == "split-U" else "")
        table.add_row(
            r["method"], where, r["codec"], f"{r['lr']:g}",
            kb(r["bytes_up_per_epoch"]), kb(r["bytes_down_per_epoch"]),
            f"{kb(r['activation_bytes'])}/{kb(r['gradient_bytes'])}" if split else "-",
            kb(r["weight_bytes_up"]) if split else "-", f"{r['test_acc']:.3f}",
            str(r["epochs_to_target"] or f">{args.epochs}"),
            kb(r["bytes_to_target"]) if r["bytes_to_target"] else "-", f"{r['wall_s']:.1f}")
    return table, rows + [dict(r, lr_search=True) for r in tried], lrs


def activation_clip(task: Task, cut: int, seed: int) -> float:
    """Median per-sample L2 norm of the cut activations at initialisation (the clip bound)."""
    dev, _, _ = SplitConfig(MODEL, cut=cut, init_seed=0, seed=seed).build()
    with torch.no_grad():
        a = dev(task.data.x)
    return float(torch.linalg.vector_norm(a.reshape(len(a), -1), dim=1).median())


def noise_sweep(task: Task, args: argparse.Namespace, lr: float) -> tuple[Table, list[dict]]:
    cut = 5
    clip = activation_clip(task, cut, args.seed)
    l1_clip = clip * (64 * 16) ** 0.5  # the L1 bound a vector at the L2 clip can reach
    mults = [0.0, 0.03, 0.3] if args.quick else [0.0, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0]
    cases = [(f"gaussian x{m:g}" if m else "clip only (x0)", ClipNoise(clip, m)) for m in mults]
    arden_mults = [0.01] if args.quick else [0.003, 0.01, 0.03]
    cases += [(f"arden null 0.1 + laplace x{m:g}", arden(0.1, l1_clip, m)) for m in arden_mults]
    table = Table(title=f"Accuracy vs activation noise: split at {CUTS[cut]}, codec none, "
                        f"{args.epochs} epochs; L2 clip {clip:.3g} (median norm at init); "
                        "epsilon per sample over all its releases")
    for col in ("privacy", "noise std / entry", "test acc (private inference)",
                "epsilon", "delta"):
        table.add_column(col, justify="left" if col == "privacy" else "right")
    rows = []
    for name, priv in cases:
        row = split_run(task, args, cut, "none", lr, privacy=priv)
        releases = args.epochs + 1  # once per epoch in training, once at test time
        g = priv.guarantee(releases)
        inner = priv.transforms[-1] if hasattr(priv, "transforms") else priv
        std = inner.noise_multiplier * inner.clip * (2 ** 0.5 if inner.mechanism == "laplace"
                                                       else 1.0)
        rows.append({"privacy": name, "describe": priv.describe(), "noise_std": std,
                     "test_acc": row["test_acc"], "acc_by_epoch": row["acc_by_epoch"],
                     "epsilon": g["epsilon"], "delta": g["delta"], "releases": releases})
        table.add_row(name, f"{std:.3g}", f"{row['test_acc']:.3f}",
                      f"{g['epsilon']:.3g}", f"{g['delta']:g}")
    return table, rows


def gpipe_table(task: Task, args: argparse.Namespace) -> tuple[Table, list[dict], dict]:
    torch.manual_seed(args.seed)
    model = build_model(PIPE_MODEL)
    x = task.data.x.reshape(len(task.data.x), -1)[:args.pipe_batch]
    y = task.data.y[:args.pipe_batch]
    whole = stage_memory(model, 1, 8, x, y)[0]
    per4 = stage_memory(model, 4, 8, x, y)
    cap = max(p.total for p in per4)
    stage_counts = [1, 2, 4] if args.quick else [1, 2, 3, 4]
    micro = [1, 4, 16] if args.quick else [1, 2, 4, 8, 16]
    table = Table(title=f"GPipe: {PIPE_MODEL} ({whole.param_bytes / 1e6:.1f} MB params), "
                        f"mini-batch {len(x)}, SGD; device cap {cap / 1e6:.2f} MB vs whole "
                        f"model {whole.total / 1e6:.2f} MB (params+grads+activations at M=8)")
    for col in ("stages", "micro-batches", "samples/s", "bubble measured",
                "bubble replayed", "bubble theory", "max stage MB", "fits cap"):
        table.add_column(col, justify="right")
    rows = []
    for s in stage_counts:
        for m in micro:
            mem = stage_memory(model, s, m, x, y)
            stats, walls = [], []
            with GPipe(model, s, m, lr=0.01) as pipe:
                pipe.step(x, y)  # warm-up
                for _ in range(args.pipe_steps):
                    t0 = time.perf_counter()
                    stats.append(pipe.step(x, y))
                    walls.append(time.perf_counter() - t0)  # includes the SGD step
            wall = statistics.median(walls)
            measured = statistics.median(st.bubble for st in stats)
            replayed = statistics.median(replay_bubble(st.events, s, m) for st in stats)
            peak = max(p.total for p in mem)
            row = {"stages": s, "micro_batches": m, "samples_per_s": len(x) / wall,
                   "bubble_measured": measured, "bubble_replayed": replayed,
                   "bubble_theory": theoretical_bubble(s, m), "max_stage_bytes": peak,
                   "fits_cap": peak <= cap, "bounds": pipe.bounds,
                   "stage_bytes": [p.total for p in mem]}
            rows.append(row)
            table.add_row(str(s), str(m), f"{row['samples_per_s']:,.0f}", f"{measured:.3f}",
                          f"{replayed:.3f}", f"{row['bubble_theory']:.3f}",
                          f"{peak / 1e6:.2f}", "yes" if row["fits_cap"] else "no")
    memory = {"cap_bytes": cap, "whole_model": whole.__dict__ | {"total": whole.total},
              "four_stages": [p.__dict__ | {"total": p.total} for p in per4]}
    return table, rows, memory


def grpc_check(task: Task, args: argparse.Namespace, local: dict) -> tuple[Table, dict]:
    """The split run of table 1 (cut 5, codec none) with the edge in its own process."""
    from edgeweave.security import write_token
    from edgeweave.train.split.grpc_edge import GrpcLink

    with tempfile.TemporaryDirectory() as tmp:
        token = write_token(Path(tmp) / "token")
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgeweave.train.split", "edge", "--token-file",
             str(Path(tmp) / "token"), "--model", MODEL, "--cut", "5", "--lr", str(local["lr"]),
             "--seed", str(args.seed)], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().split()
            link = GrpcLink(line[1], token)
            row = split_run(task, args, 5, "none", local["lr"], link=link)
            link.close()
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    table = Table(title="Split learning over gRPC (edge in its own process, loopback) vs "
                        "in-process, cut at pool, codec none")
    for col in ("run", "up kB/epoch", "down kB/epoch", "test acc", "wall s"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for name, r in (("in-process", local), ("gRPC loopback", row)):
        table.add_row(name, kb(r["bytes_up_per_epoch"]), kb(r["bytes_down_per_epoch"]),
                      f"{r['test_acc']:.3f}", f"{r['wall_s']:.1f}")
    return table, {"in_process": local, "grpc": row,
                   "same_acc": row["test_acc"] == local["test_acc"],
                   "same_bytes": row["bytes_up_per_epoch"] == local["bytes_up_per_epoch"]}


def main() -> None:
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=UserWarning)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 epochs, fewer codecs/cuts/levels")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="default 10 (quick: 2)")
    ap.add_argument("--lrs", type=float, nargs="+", default=[0.1, 0.3],
                    help="learning-rate grid; each method gets its best")
    ap.add_argument("--target", type=float, default=0.85, help="accuracy for 'to target'")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--pipe-batch", type=int, default=256)
    ap.add_argument("--pipe-steps", type=int, default=None, help="default 5 (quick: 2)")
    ap.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()
    args.epochs = args.epochs or (2 if args.quick else 10)
    args.pipe_steps = args.pipe_steps or (2 if args.quick else 5)
    start = time.perf_counter()
    task = make_task("digits", "iid", 10, MODEL, seed=args.seed)
    t1, rows1, lrs = bytes_vs_fedavg(task, args)
    t2, rows2 = noise_sweep(task, args, lrs["split"])
    t3, rows3, memory = gpipe_table(task, args)
    tables = [t1, t2, t3]
    doc = {"benchmark": "split_learning",
           "workload": f"sklearn digits scaled to [0,1], 10 IID clients, {MODEL}, SGD; GPipe "
                       f"on {PIPE_MODEL}",
           "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
           "host_threads": torch.get_num_threads(),
           "args": {k: v for k, v in vars(args).items() if k != "json"}, "chosen_lr": lrs,
           "split_vs_fedavg": rows1, "activation_privacy": rows2, "gpipe": rows3,
           "gpipe_memory": memory}
    if not args.quick:
        local = next(r for r in rows1 if r["method"] == "split" and r["cut"] == 5
                     and r["codec"] == "none" and r["lr"] == lrs["split"])
        t4, doc["grpc"] = grpc_check(task, args, local)
        tables.append(t4)
    doc["total_s"] = time.perf_counter() - start
    emit(Console(width=170), tables, doc, args.json)


if __name__ == "__main__":
    main()
