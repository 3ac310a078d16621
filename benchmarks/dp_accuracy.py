"""Differential privacy: test accuracy against the privacy budget epsilon (1, 4, 8, inf) on
digits, and the check that the epsilon a run reports is Opacus's for the same parameters.

1. DP-FedAvg (user-level DP, McMahan et al. 2018; edgeweave.train.privacy.DPFedAvg).
   User-level DP hides a whole client, so the noise on the average is sigma * C / (q N) per
   coordinate: it needs MANY clients per round. Digits has 1,437 training samples; the
   default gives every sample its own client (N = 1437, one example per user, the extreme of
   the cross-device setting) and samples q = 0.1 of them per round (~144 expected), for
   T = 100 rounds at delta = 1e-4 (< 1 / N). MLP 64-64-10; clients run one local SGD step at
   lr 1.0; clip C = 1.0 (near the median update norm, so about half the updates are clipped);
   server learning rate 1.0 over plain FedAvg (server momentum amplified the noise in a small
   trial, so it is left out). sigma for each target epsilon comes from Opacus's
   get_noise_multiplier (RDP accountant); epsilon = inf is sigma = 0 (clipping only).
   A second curve with N = 200 clients (~7 examples each, ~20 per round, same q, T and delta)
   shows why the population matters: the same epsilon needs the same sigma, but the noise on
   the average is 7x larger.
2. Local DP-SGD through Opacus (example-level DP against the server; DPSGDBackend): 10 IID
   clients (~144 samples each), all per round, Poisson batches of expected size 16, 1 local
   epoch, lr 0.5, per-sample clip 1.0, 20 rounds, delta = 1e-3 (< 1 / 144). Each client's
   sigma is chosen so its epsilon after all rounds is the target.

For every row: sigma, q, steps, delta, final accuracy (mean over seeds), the epsilon the run
reported in its metrics line, and the epsilon a FRESH Opacus RDPAccountant gives for the same
(sigma, q, steps, delta); the "equal" column compares them exactly.

    .venv/bin/python benchmarks/dp_accuracy.py [--quick] [--no-dpsgd] [--seeds 0 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from _zoo import emit
from edgeweave.train.backends.vectorized import VectorizedBackend
from edgeweave.train.data import make_task
from edgeweave.train.privacy import (
    ClientPrivacyReport,
    DPFedAvg,
    DPSGDBackend,
    epsilon_for,
    noise_for_epsilon,
)
from edgeweave.train.server import Server, ServerConfig
from edgeweave.train.strategies import FedAvg
from edgeweave.train.types import FitConfig

MODEL = "mlp:64,64,10"


def dp_fedavg_rows(args: argparse.Namespace, clients: int) -> list[dict]:
    rows = []
    for eps in args.epsilons:
        sigma = noise_for_epsilon(eps, args.delta, args.q, args.rounds)
        runs = []
        for seed in args.seeds:
            task = make_task("digits", "iid", clients, MODEL, seed=seed)
            strategy = DPFedAvg(FedAvg(fit=FitConfig(lr=args.lr, batch_size=10, epochs=1)),
                                clip=args.clip, noise_multiplier=sigma, sample_rate=args.q,
                                delta=args.delta, server_lr=args.server_lr, seed=seed)
            t0 = time.perf_counter()
            recs = Server(task, strategy, VectorizedBackend(task),
                          ServerConfig(rounds=args.rounds, seed=seed,
                                       eval_every=args.rounds)).run()
            last = recs[-1].extra
            runs.append({"seed": seed, "final_acc": recs[-1].test_acc,
                         "reported_epsilon": last["dp_epsilon"],
                         "clipped_last_round": last["dp_clipped"],
                         "mean_clients_per_round": statistics.fmean(r.clients for r in recs),
                         "wall_s": time.perf_counter() - t0})
        direct = epsilon_for(sigma, args.q, args.rounds, args.delta)
        reported = [r["reported_epsilon"] for r in runs]
        rows.append({"mode": f"DP-FedAvg (user), N={clients}", "target_epsilon": eps,
                     "sigma": sigma,
                     "q": args.q, "steps": args.rounds, "delta": args.delta,
                     "final_acc": statistics.fmean(r["final_acc"] for r in runs),
                     "reported_epsilon": reported[0], "opacus_epsilon": direct,
                     "equal": all(e == direct for e in reported), "runs": runs})
    return rows


def dp_sgd_rows(args: argparse.Namespace) -> list[dict]:
    rows = []
    task = make_task("digits", "iid", args.sgd_clients, MODEL, seed=args.seeds[0])
    sizes = task.data.sizes().tolist()
    batches = {-(-n // args.sgd_batch) for n in sizes}  # Opacus: q = 1 / batches per epoch
    fit = FitConfig(lr=args.sgd_lr, batch_size=args.sgd_batch, epochs=1, seed=args.seeds[0])
    for eps in args.epsilons:
        # one sigma for all clients: the one the least private client (largest q * steps) needs
        sigma = max(noise_for_epsilon(eps, args.sgd_delta, 1 / b, b * args.sgd_rounds)
                    for b in batches)
        backend = DPSGDBackend(task, noise_multiplier=sigma, max_grad_norm=args.sgd_clip,
                               delta=args.sgd_delta, seed=args.seeds[0])
        t0 = time.perf_counter()
        recs = Server(task, ClientPrivacyReport(FedAvg(fit=fit), args.sgd_delta), backend,
                      ServerConfig(rounds=args.sgd_rounds, seed=args.seeds[0],
                                   eval_every=args.sgd_rounds)).run()
        worst = max(range(len(sizes)), key=backend.epsilon)
        b = -(-sizes[worst] // args.sgd_batch)
        direct = epsilon_for(sigma, 1 / b, b * args.sgd_rounds, args.sgd_delta)
        reported = recs[-1].extra["client_dp_epsilon_max"]
        rows.append({"mode": "local DP-SGD (example)", "target_epsilon": eps, "sigma": sigma,
                     "q": 1 / b, "steps": b * args.sgd_rounds, "delta": args.sgd_delta,
                     "final_acc": recs[-1].test_acc, "reported_epsilon": reported,
                     "opacus_epsilon": direct, "equal": reported == direct,
                     "wall_s": time.perf_counter() - t0})
    return rows


def json_safe(v: Any) -> Any:
    """inf (no privacy) as the string "inf": strict JSON has no Infinity."""
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, list):
        return [json_safe(x) for x in v]
    return v


def fmt_eps(e: float) -> str:
    return "inf" if math.isinf(e) else f"{e:.4f}"


def main() -> None:
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=UserWarning)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds, one seed")
    ap.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 4.0, 8.0, math.inf])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--clients", type=int, nargs="+", default=[1437, 200],
                    help="client populations N for DP-FedAvg (one curve each)")
    ap.add_argument("--q", type=float, default=0.1)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--delta", type=float, default=1e-4)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=1.0)
    ap.add_argument("--server-lr", type=float, default=1.0)
    ap.add_argument("--no-dpsgd", action="store_true", help="skip the local DP-SGD curve")
    ap.add_argument("--sgd-clients", type=int, default=10)
    ap.add_argument("--sgd-rounds", type=int, default=20)
    ap.add_argument("--sgd-batch", type=int, default=16)
    ap.add_argument("--sgd-lr", type=float, default=0.5)
    ap.add_argument("--sgd-clip", type=float, default=1.0)
    ap.add_argument("--sgd-delta", type=float, default=1e-3)
    ap.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.sgd_rounds, args.seeds = 30, 3, args.seeds[:1]
    start = time.perf_counter()
    rows = [r for n in args.clients for r in dp_fedavg_rows(args, n)]
    if not args.no_dpsgd:
        rows += dp_sgd_rows(args)
    table = Table(title=f"Accuracy vs epsilon on digits ({MODEL}); epsilon reported by the run "
                        "vs Opacus RDP accountant for the same (sigma, q, steps, delta)")
    for col in ("mode", "target eps", "sigma", "q", "steps", "delta", "final acc",
                "reported eps", "Opacus eps", "equal"):
        table.add_column(col, justify="left" if col == "mode" else "right")
    for r in rows:
        table.add_row(r["mode"], fmt_eps(r["target_epsilon"]), f"{r['sigma']:.4f}",
                      f"{r['q']:.4f}", str(r["steps"]), f"{r['delta']:g}",
                      f"{r['final_acc']:.3f}", fmt_eps(r["reported_epsilon"]),
                      fmt_eps(r["opacus_epsilon"]), "yes" if r["equal"] else "NO")
    doc = {"benchmark": "dp_accuracy",
           "workload": f"sklearn digits scaled to [0,1], 360 held-out test samples, {MODEL}",
           "args": {k: v for k, v in vars(args).items() if k != "json"},
           "rows": rows, "all_equal": all(r["equal"] for r in rows),
           "total_s": time.perf_counter() - start}
    emit(Console(width=170), [table], json_safe(doc), args.json)


if __name__ == "__main__":
    main()
