"""Update compression under FedAvg: bytes per round, compression ratio and final accuracy of every
update codec at the same number of rounds.

Workload: sklearn digits scaled to [0, 1] (360 held-out test samples), the ``cnn:32,64,128`` CNN
(151,306 parameters), IID over N clients, all of them every round, E local epochs of SGD with
batch B. One configuration (lr, E, B, rounds, seed) is fixed for every row, tuned on the
uncompressed baseline only; each row changes nothing but the codecs.

Per row: uplink and downlink payload bytes per client per round (the codecs' ``len(payload)``,
summed over the model's tensors; ``Encoded.params`` metadata such as seeds and int8's scale are
not counted, as everywhere in EdgeWeave), the uplink compression ratio against float32 over all
rounds and after DGC's sparsity warm-up (the paper's 270-600x is the steady state), the final
test accuracy (mean of the last 5 rounds) and its change against the uncompressed run.

Targets (issues 6 and 17): DGC and top-k with error feedback at >= 100x within 1 point of
uncompressed; QSGD 8-bit at 4x within 0.5 point. QSGD with 512-coordinate buckets (the paper's)
sends a float32 norm per bucket, so its 8-bit form is 3.97x; ">= 3.9x" is counted as 4x. DGC's
local clipping threshold is measured, not chosen: the median norm of the clients' first-round
updates, times sqrt(N) (each client then clips at that median, as DGC's N^-1/2 rule implies).

Density and horizon: the sparse rows run at DGC's paper setting, density 0.001 (0.1% of each
tensor per round), and the default is 150 rounds. At 0.1% a client sends ~150 of the CNN's 151k
values a round, so the sparse methods need more rounds than float32 to converge (the paper's
regime is thousands of steps): after 50 rounds DGC (m = 0.9) was 2.8 points below float32 and
top-k with error feedback 3.3; after 150, 1.0 and 1.3 (runs of this file for issue 17; an
earlier 150-round run of the same DGC row, before the CNN's batched step changed the float
rounding, was 0.7 below: differences of a few test samples move it by a few tenths).

    .venv/bin/python benchmarks/update_codecs.py [--quick] [--rows a,b] [--json out.json]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from _zoo import emit
from edgeweave.errors import EdgeWeaveError
from edgeweave.train.data import make_task
from edgeweave.train.server import Server, ServerConfig
from edgeweave.train.strategies import FedAvg
from edgeweave.train.task import Task
from edgeweave.train.types import FitConfig

MODEL = "cnn:32,64,128"
LAST = 5  # final accuracy = mean test accuracy of the last LAST rounds


def backend_for(task: Task):
    try:
        from edgeweave.train.backends.vectorized import VectorizedBackend

        return VectorizedBackend(task)
    except ImportError:  # the sequential reference gives the same models, only slower
        from edgeweave.train.backends.sequential import SequentialBackend

        return SequentialBackend(task)


def rows(density: float, clip: float) -> list[dict]:
    """(label, uplink spec, downlink spec, target) for every row; ``None`` = raw float32."""
    k = f"{density:g}"
    return [
        {"label": "none (float32)", "up": None, "down": None, "target": None},
        {"label": "int8 (8-bit affine)", "up": "int8", "down": None, "target": "8bit"},
        {"label": "qsgd 8-bit (s=127, bucket 512)", "up": "qsgd:127", "down": None,
         "target": "8bit"},
        {"label": "qsgd 4-bit (s=7)", "up": "qsgd:7", "down": None, "target": None},
        {"label": "qsgd 2-bit (s=1)", "up": "qsgd:1", "down": None, "target": None},
        {"label": f"top-k {k}, no EF", "up": f"topk:{k}", "down": None, "target": None},
        {"label": f"top-k {k} + EF", "up": f"ef:topk:{k}", "down": None, "target": "sparse"},
        {"label": f"DGC {k} (m=0.9, clip, warm-up 4)", "up": f"dgc:{k},0.9,{clip:.6g},4",
         "down": None, "target": "sparse"},
        {"label": f"DGC {k} (m=0.5, clip, warm-up 4)", "up": f"dgc:{k},0.5,{clip:.6g},4",
         "down": None, "target": "sparse"},
        {"label": f"DGC {k} (m=0, clip, warm-up 4)", "up": f"dgc:{k},0,{clip:.6g},4",
         "down": None, "target": "sparse"},
        # rand-k rescaled by n/k is unbiased but not a contraction (its error is (n/k - 1)||x||^2),
        # so error feedback around it diverges; the unscaled random sparsifier with EF is the
        # random-mask row below
        {"label": "rand-k 0.05 (unbiased, no EF)", "up": "randk:0.05", "down": None,
         "target": None},
        {"label": "low-rank 0.1 (Konecny) + EF", "up": "ef:lowrank:0.1", "down": None,
         "target": None},
        {"label": "random mask 0.1 (Konecny) + EF", "up": "ef:randmask:0.1", "down": None,
         "target": None},
        {"label": "sketched 0.25 x 2-bit (Konecny)", "up": "sketch:0.25,2", "down": None,
         "target": None},
        {"label": "selective 0.1 (Shokri)", "up": "selective:0.1", "down": None, "target": None},
        {"label": f"top-k {k} + EF up, qsgd 8-bit + EF down", "up": f"ef:topk:{k}",
         "down": "ef:qsgd:127", "target": None},
    ]


def measured_clip(task: Task, fit: FitConfig) -> tuple[float, float]:
    """(global clip threshold, median client update norm) from one probe round."""
    backend = backend_for(task)
    ids = [c.client_id for c in backend.available_clients()]
    init = task.init_params()
    upd = backend.fit(1, init, ids, fit)
    norms = [math.sqrt(sum(float((upd.params[k][i] - init[k]).pow(2).sum()) for k in init))
             for i in range(len(ids))]
    med = statistics.median(norms)
    return med * math.sqrt(len(ids)), med


def run_row(task: Task, row: dict, args: argparse.Namespace, fit: FitConfig) -> dict:
    config = ServerConfig(rounds=args.rounds, seed=args.seed, up_codec=row["up"],
                          down_codec=row["down"])
    start = time.perf_counter()
    try:
        recs = Server(task, FedAvg(fraction=1.0, fit=fit), backend_for(task), config).run()
    except EdgeWeaveError as e:  # e.g. a diverging update turns NaN: report it, keep going
        return {**row, "failed": str(e), "wall_s": time.perf_counter() - start}
    wall = time.perf_counter() - start
    up = [r.bytes_up / r.clients for r in recs]
    down = [r.bytes_down / r.extra["selected"] for r in recs]
    steady = up[args.warmup:] or up
    return {**row, "up_bytes_per_client_round": statistics.fmean(up),
            "up_bytes_steady": statistics.fmean(steady),
            "down_bytes_per_client_round": statistics.fmean(down),
            "final_acc": statistics.fmean(r.test_acc for r in recs[-LAST:]),
            "acc_by_round": [r.test_acc for r in recs], "up_bytes_by_round": up, "wall_s": wall}


def judge(r: dict, base_acc: float, raw: float) -> str:
    if "failed" in r:
        r["met"] = False if r["target"] else None
        r["target_text"] = ""
        return "FAILED"
    r["ratio"] = raw / r["up_bytes_per_client_round"]
    r["ratio_steady"] = raw / r["up_bytes_steady"]
    r["delta_points"] = 100 * (r["final_acc"] - base_acc)
    if r["target"] == "sparse":
        ok_ratio, ok_acc = r["ratio_steady"] >= 100, r["delta_points"] >= -1.0
        r["target_text"] = ">=100x, within 1 pt"
    elif r["target"] == "8bit":
        ok_ratio, ok_acc = r["ratio"] >= 3.9, r["delta_points"] >= -0.5
        r["target_text"] = "~4x, within 0.5 pt"
    else:
        r["target_text"], r["met"] = "", None
        return ""
    r["met"] = ok_ratio and ok_acc
    why = [w for w, ok in (("ratio", ok_ratio), ("accuracy", ok_acc)) if not ok]
    return "yes" if r["met"] else f"NO ({', '.join(why)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 6 rounds, 4 rows")
    ap.add_argument("--rounds", type=int, default=150)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--density", type=float, default=0.001, help="top-k / DGC density")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rows", default="", help="comma-separated row numbers (0 = baseline)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        args.rounds = min(args.rounds, 6)
    args.warmup = 4  # DGC's warm-up rounds, excluded from the steady-state ratio
    task = make_task("digits", "iid", args.clients, MODEL, seed=args.seed)
    fit = FitConfig(lr=args.lr, batch_size=args.batch_size, epochs=args.epochs)
    n_params = sum(v.numel() for v in task.init_params().values())
    raw = 4.0 * n_params
    clip, median_norm = measured_clip(task, fit)
    table_rows = rows(args.density, clip)
    if args.rows:
        keep = {0, *(int(i) for i in args.rows.split(","))}
        table_rows = [r for i, r in enumerate(table_rows) if i in keep]
    elif args.quick:
        table_rows = [table_rows[i] for i in (0, 2, 6, 7)]
    console = Console(width=200)  # a wide table, also when piped to a file
    results = []
    for row in table_rows:
        res = run_row(task, row, args, fit)
        results.append(res)
        if "failed" in res:
            console.print(f"{row['label']}: FAILED: {res['failed']}", highlight=False)
            continue
        console.print(f"{row['label']}: acc {res['final_acc']:.4f}, up "
                      f"{res['up_bytes_per_client_round']:.0f} B/client/round, "
                      f"{res['wall_s']:.0f} s", highlight=False)
    base_acc = results[0]["final_acc"]
    table = Table(title=f"Update codecs under FedAvg: {MODEL} ({n_params:,} params) on digits, "
                        f"{args.clients} IID clients (all per round), {args.rounds} rounds, "
                        f"lr {args.lr:g}, E={args.epochs}, B={args.batch_size}, seed {args.seed}")
    for col in ("codec (uplink)", "down", "up B/client/rd", "down B/client/rd", "up ratio",
                "ratio after warm-up", f"final acc (last {LAST})", "vs none (pts)", "target",
                "met?", "wall s"):
        table.add_column(col, justify="left" if col in ("codec (uplink)", "down", "target",
                                                        "met?") else "right")
    for r in results:
        met = judge(r, base_acc, raw)
        if "failed" in r:
            table.add_row(r["label"], r["down"] or "raw", *["-"] * 7, met, f"{r['wall_s']:.0f}")
            continue
        table.add_row(r["label"], r["down"] or "raw", f"{r['up_bytes_per_client_round']:,.0f}",
                      f"{r['down_bytes_per_client_round']:,.0f}", f"{r['ratio']:.1f}x",
                      f"{r['ratio_steady']:.1f}x", f"{r['final_acc']:.4f}",
                      f"{r['delta_points']:+.2f}", r["target_text"], met, f"{r['wall_s']:.0f}")
    doc = {"benchmark": "update_codecs", "model": MODEL, "n_params": n_params,
           "config": {"clients": args.clients, "fraction": 1.0, "rounds": args.rounds,
                      "lr": args.lr, "epochs": args.epochs, "batch_size": args.batch_size,
                      "density": args.density, "seed": args.seed, "partition": "iid",
                      "dgc_clip_global": clip, "median_first_round_update_norm": median_norm,
                      "steady_state_excludes_rounds": args.warmup, "quick": args.quick,
                      "torch": torch.__version__},
           "rows": results}
    emit(console, [table], doc, args.json)


if __name__ == "__main__":
    main()
