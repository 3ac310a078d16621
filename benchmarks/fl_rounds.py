"""Rounds to a target accuracy on real digits: FedAvg vs FedSGD under IID and shard non-IID
(McMahan et al. 2017 report 10-100x fewer rounds for FedAvg), and FedProx vs FedAvg under
Dirichlet(0.1) label skew (Li et al. 2020).

Workload: sklearn digits scaled to [0, 1], 360 held-out test samples, the rest split over
``--clients`` clients; MLP 64-64-10; a fraction C of the clients per round. FedAvg and FedProx
run E local epochs of batch B; FedSGD one full-batch step per client per round (its learning
rate grid is given separately: one step per round needs a larger one). As in the paper each
setting keeps its best learning rate from its grid (fewest rounds, then best accuracy). A run
stops at the target or at ``--max-rounds``; "rounds" is the first round whose test accuracy
reaches the target (">" when it never did). One seed, printed, so every figure can be re-run.

    .venv/bin/python benchmarks/fl_rounds.py [--clients 10] [--fraction 0.3] [--target 0.95]
        [--max-rounds 400] [--lr 0.1 0.3] [--sgd-lr 0.3 1 3] [--json out.json]

The default of 10 clients gives each about 144 samples, so E=5 local epochs are real local work
as in the paper (600 per client there). With 100 clients (about 14 samples each) FedAvg has
little local work to exploit and its lead over FedSGD shrinks; both settings are printed by
``--clients`` so the reader can see it.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from _zoo import emit
from edgeweave.train.data import make_task
from edgeweave.train.server import Server, ServerConfig
from edgeweave.train.strategies import get_strategy


class _Reached(Exception):
    pass


def _backend(task):
    try:
        from edgeweave.train.backends.vectorized import VectorizedBackend

        return VectorizedBackend(task)
    except ImportError:
        from edgeweave.train.backends.sequential import SequentialBackend

        return SequentialBackend(task)


def rounds_to_target(partition: str, strategy: str, params: dict, fit: dict, args) -> dict:
    task = make_task("digits", partition, args.clients, "mlp:64,64,10", seed=args.seed)
    strat = get_strategy(strategy, fraction=args.fraction, fit=dict(fit, seed=args.seed),
                         **params)
    history: list[float] = []

    def progress(rec):
        history.append(rec.test_acc)
        if rec.test_acc >= args.target:
            raise _Reached

    t0 = time.perf_counter()
    # _Reached from the progress callback: the target was reached, stop early
    with _backend(task) as backend, contextlib.suppress(_Reached):
        Server(task, strat, backend,
               ServerConfig(rounds=args.max_rounds, seed=args.seed)).run(progress)
    reached = bool(history) and history[-1] >= args.target
    return {"partition": partition, "strategy": strategy, "params": params, "fit": fit,
            "rounds": len(history) if reached else None, "ran": len(history),
            "best_acc": max(history, default=0.0), "wall_s": time.perf_counter() - t0,
            "backend": backend.name}


def main() -> None:
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--fraction", type=float, default=0.3)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--max-rounds", type=int, default=400)
    ap.add_argument("--epochs", type=int, default=5, help="FedAvg/FedProx local epochs E")
    ap.add_argument("--batch", type=int, default=10, help="FedAvg/FedProx batch B")
    ap.add_argument("--lr", type=float, nargs="+", default=[0.1, 0.3],
                    help="FedAvg/FedProx client lr grid")
    ap.add_argument("--sgd-lr", type=float, nargs="+", default=[0.3, 1.0, 3.0],
                    help="FedSGD lr grid (one step a round)")
    ap.add_argument("--mu", type=float, default=0.1, help="FedProx mu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    local = {"batch_size": args.batch, "epochs": args.epochs}
    runs = [
        ("iid", "fedavg", {}), ("iid", "fedsgd", {}), ("shards:2", "fedavg", {}),
        ("shards:2", "fedsgd", {}), ("dirichlet:0.1", "fedavg", {}),
        ("dirichlet:0.1", "fedprox", {"mu": args.mu}),
    ]
    results, every = [], []
    for part, strat, kw in runs:
        grid = args.sgd_lr if strat == "fedsgd" else args.lr
        tried = [rounds_to_target(part, strat, kw, ({} if strat == "fedsgd" else local)
                                  | {"lr": lr}, args) for lr in grid]
        every += tried
        results.append(min(tried, key=lambda r: (r["rounds"] or 10**9, -r["best_acc"])))
    table = Table(title=f"rounds to {args.target:.0%} test accuracy on digits "
                        f"({args.clients} clients, C={args.fraction}, max {args.max_rounds})")
    for col in ("partition", "strategy", "best lr", "rounds", "best acc", "wall s"):
        table.add_column(col, justify="right")
    for r in results:
        rounds = str(r["rounds"]) if r["rounds"] is not None else f"> {r['ran']}"
        table.add_row(r["partition"], r["strategy"], f"{r['fit']['lr']:g}", rounds,
                      f"{r['best_acc']:.3f}", f"{r['wall_s']:.1f}")
    speedups = {}
    for part in ("iid", "shards:2"):
        avg, sgd = (next(r for r in results if r["partition"] == part and r["strategy"] == s)
                    for s in ("fedavg", "fedsgd"))
        if avg["rounds"]:
            sgd_rounds = sgd["rounds"] or sgd["ran"]
            speedups[part] = {"fedsgd_over_fedavg": sgd_rounds / avg["rounds"],
                              "lower_bound": sgd["rounds"] is None}
    emit(Console(), [table], {"args": vars(args) | {"json": str(args.json)}, "best": results,
                              "fedavg_speedup": speedups, "all_runs": every}, args.json)


if __name__ == "__main__":
    main()
