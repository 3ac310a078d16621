"""Byzantine robustness: final test accuracy of FedAvg and four robust aggregators when a fixed
fraction of the clients send corrupted updates.

Workload: sklearn digits scaled to [0, 1] (360 held-out test samples), MLP 64-64-10, IID over
20 clients, all 20 trained every round (so every round holds exactly the attacker fraction),
local SGD lr 0.1, batch 16, 1 epoch; 30 rounds by default.

Attacks (edgeweave.train.byzantine; attackers are fixed client ids drawn from the seed, the
same for every aggregator, so the columns are paired):
  sign_flip  w_g - 4 d (boosted sign flip of the attacker's honest update d)
  scaled     w_g + 10 d (boosting / model replacement without a backdoor)
  noise      w_g + N(0, 1) per coordinate
for fractions 10%, 20%, 30%.

Aggregators and their settings, each set for the WORST fraction tested (30% of 20 = 6):
  fedavg        sample-weighted mean (no defence)
  median        coordinate-wise median (Yin et al. 2018)
  trimmed_mean  beta = 0.3 at each end (Yin et al. 2018)
  krum          f = 6, m = 1 (Blanchard et al. 2017; needs n > 2f + 2 = 14)
  norm_bound    clip each update to M, then average (Sun et al. 2019); M = the median norm of
                the honest updates measured in a clean first round (printed), the paper's
                "threshold from honest norms" choice

A cell is the final-round accuracy (mean over seeds); "drop" is clean accuracy minus the worst
attacked accuracy of that aggregator.

    .venv/bin/python benchmarks/robustness.py [--quick] [--rounds 30] [--seeds 0 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from _zoo import emit
from edgeweave.train.backends.vectorized import VectorizedBackend
from edgeweave.train.byzantine import DEFAULT_SCALE, ByzantineBackend
from edgeweave.train.data import make_task
from edgeweave.train.server import Server, ServerConfig
from edgeweave.train.strategies import FedAvg, FedMedian, Krum, NormBound, TrimmedMean
from edgeweave.train.strategies.norm_bound import update_norms
from edgeweave.train.task import Task
from edgeweave.train.types import FitConfig

MODEL = "mlp:64,64,10"
FIT = FitConfig(lr=0.1, batch_size=16, epochs=1)
AGGREGATORS = ("fedavg", "median", "trimmed_mean", "krum", "norm_bound")


def honest_norm(task: Task) -> float:
    """Median update norm of all clients in one clean round from the initial model."""
    gp = task.init_params()
    upd = VectorizedBackend(task).fit(1, gp, list(range(task.data.num_clients)), FIT)
    return float(update_norms(upd.deltas(gp)).median())


def make_strategy(name: str, n: int, worst: float, bound: float):
    f = round(worst * n)
    if name == "fedavg":
        return FedAvg(fit=FIT)
    if name == "median":
        return FedMedian(fit=FIT)
    if name == "trimmed_mean":
        return TrimmedMean(beta=worst, fit=FIT)
    if name == "krum":
        return Krum(f=f, m=1, fit=FIT)
    return NormBound(max_norm=bound, fit=FIT)


def final_acc(task: Task, agg: str, attack: str, fraction: float, seed: int, rounds: int,
              n: int, worst: float, bound: float) -> float:
    backend = ByzantineBackend(VectorizedBackend(task), attack, fraction=fraction, seed=seed)
    strategy = make_strategy(agg, n, worst, bound)
    recs = Server(task, strategy, backend,
                  ServerConfig(rounds=rounds, seed=seed, eval_every=rounds)).run()
    return recs[-1].test_acc


def main() -> None:
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=UserWarning)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="10 rounds, one seed, fractions 0.3 only")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    ap.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.seeds, args.fractions = 10, args.seeds[:1], [0.3]
    start = time.perf_counter()
    worst = max(args.fractions)
    cells: list[dict] = []
    bounds = {}
    for seed in args.seeds:
        task = make_task("digits", "iid", args.clients, MODEL, seed=seed)
        bounds[seed] = honest_norm(task)
        settings = [("none", 0.0)] + [(a, f) for a in ("sign_flip", "scaled", "noise")
                                       for f in args.fractions]
        for attack, frac in settings:
            for agg in AGGREGATORS:
                t0 = time.perf_counter()
                acc = final_acc(task, agg, attack, frac, seed, args.rounds, args.clients,
                                worst, bounds[seed])
                cells.append({"seed": seed, "attack": attack, "fraction": frac,
                              "aggregator": agg, "final_acc": acc,
                              "wall_s": time.perf_counter() - t0})

    def mean_acc(attack: str, frac: float, agg: str) -> float:
        return statistics.fmean(c["final_acc"] for c in cells if c["attack"] == attack
                                and c["fraction"] == frac and c["aggregator"] == agg)

    table = Table(title=f"Final test accuracy under Byzantine clients: digits, {MODEL}, "
                        f"{args.clients} IID clients all per round, {args.rounds} rounds, "
                        f"mean of seeds {args.seeds}")
    table.add_column("attack", justify="left")
    table.add_column("attackers", justify="right")
    for agg in AGGREGATORS:
        table.add_column(agg, justify="right")
    summary = []
    settings = [("none", 0.0)] + [(a, f) for a in ("sign_flip", "scaled", "noise")
                                   for f in args.fractions]
    for attack, frac in settings:
        accs = [mean_acc(attack, frac, agg) for agg in AGGREGATORS]
        label = attack if attack == "none" else (
            f"{attack} (x{DEFAULT_SCALE[attack]:g})" if attack in DEFAULT_SCALE
            else f"{attack} (std 1)")
        table.add_row(label, f"{frac:.0%}", *[f"{a:.3f}" for a in accs])
        summary.append({"attack": attack, "fraction": frac,
                        **{agg: a for agg, a in zip(AGGREGATORS, accs, strict=True)}})
    drops = {agg: mean_acc("none", 0.0, agg) - min(s[agg] for s in summary)
             for agg in AGGREGATORS}
    table.add_row("drop (clean - worst)", "", *[f"{drops[a]:.3f}" for a in AGGREGATORS])
    doc = {"benchmark": "robustness",
           "workload": f"sklearn digits, {MODEL}, {args.clients} IID clients, all per round",
           "fit": {"lr": FIT.lr, "batch_size": FIT.batch_size, "epochs": FIT.epochs},
           "args": {k: v for k, v in vars(args).items() if k != "json"},
           "attacks": {"sign_flip_scale": DEFAULT_SCALE["sign_flip"],
                       "scaled_scale": DEFAULT_SCALE["scaled"], "noise_std": 1.0},
           "aggregator_settings": {"trimmed_mean_beta": worst,
                                   "krum_f": round(worst * args.clients), "krum_m": 1,
                                   "norm_bound_M_per_seed": bounds},
           "summary": summary, "drop_clean_minus_worst": drops, "cells": cells,
           "total_s": time.perf_counter() - start}
    emit(Console(width=170), [table], doc, args.json)


if __name__ == "__main__":
    main()
