"""FedAvg vs FedSGD rounds to a target accuracy, and FedProx vs FedAvg under label skew.

Workload: sklearn digits scaled to [0, 1] (360 held-out test samples), MLP 64-64-10, 100
clients, 10% of them per round (the FedAvg paper's C = 0.1).

1. Rounds to reach the target test accuracy, IID and pathological non-IID (2 label-sorted shards
   per client), for FedAvg (B = 10, E local epochs) and FedSGD (one full-batch step per client).
   As in McMahan et al. 2017 each method gets its best learning rate from a small grid; the
   ratio FedSGD rounds / FedAvg rounds is the paper's "10-100x fewer rounds" claim measured
   here. A method that misses the target within its cap is reported as ">cap" and the ratio as
   a lower bound. Expect a smaller ratio than the paper's MNIST figures: a digits client holds
   ~14 samples, so FedAvg's local work per round is u = E n / B ~ 28 steps, against u = 1200 for
   the paper's 600-sample MNIST clients at E = 20, B = 10, and the paper's gain grows with u.
2. FedAvg vs FedProx (mu) under Dirichlet(0.1) label skew, 20 clients, half per round, E = 5:
   final accuracy (mean of the last 5 rounds) and how much accuracy swings from round to round
   (std over the last half of the rounds, mean |change|), per seed and averaged.

3. Edge control (edgeweave.train.control) on the same digits workload:
   FedCS greedy selection vs its random baseline (FedLim) under one round deadline on the
   ``multi-device`` fleet (clients per round, accuracy after the same rounds); adaptive local
   steps (Wang et al.) vs fixed tau under one resource budget, for three aggregation/step cost
   ratios; hierarchical FL with 4 edges, 1 vs 3 edge rounds per cloud round for the same 12
   edge aggregations (bytes per tier, accuracy).

    .venv/bin/python benchmarks/fl_convergence.py [--quick] [--no-control] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from _zoo import emit
from edgeweave.topology import load_fleet
from edgeweave.train.control import (
    AdaptiveFrequency,
    FedCS,
    HierarchicalTrainer,
    HierConfig,
    edge_uplink_s,
    fleet_clients,
)
from edgeweave.train.data import make_task
from edgeweave.train.server import Server, ServerConfig
from edgeweave.train.strategies import FedAvg, FedProx, FedSGD
from edgeweave.train.task import Task
from edgeweave.train.types import FitConfig, RoundRecord

MODEL = "mlp:64,64,10"


class _Reached(Exception):
    """Raised from the progress callback to stop a run once the target is met."""


def backend_for(task: Task, **kw):
    try:
        from edgeweave.train.backends.vectorized import VectorizedBackend

        return VectorizedBackend(task, **kw)
    except ImportError:  # the sequential reference gives the same models, only slower
        from edgeweave.train.backends.sequential import SequentialBackend

        return SequentialBackend(task, **kw)


def run(task: Task, strategy, rounds: int, seed: int, target: float | None = None,
        backend=None, deadline_s: float | None = None,
        stop: Callable[[], bool] | None = None) -> list[RoundRecord]:
    records: list[RoundRecord] = []

    def progress(rec: RoundRecord) -> None:
        records.append(rec)
        if (target is not None and rec.test_acc >= target) or (stop is not None and stop()):
            raise _Reached

    config = ServerConfig(rounds=rounds, seed=seed, deadline_s=deadline_s)
    with contextlib.suppress(_Reached):
        Server(task, strategy, backend or backend_for(task), config).run(progress)
    return records


def rounds_to_target(args: argparse.Namespace) -> tuple[Table, list[dict]]:
    table = Table(title=f"Rounds to target accuracy: 100 clients, C=0.1, {MODEL}, digits "
                        "(best learning rate per method; lower is better)")
    for col in ("split", "target", "method", "lr", "rounds", "best acc", "FedSGD/FedAvg",
                "client steps", "wall s"):
        table.add_column(col, justify="right" if col not in ("split", "method") else "left")
    out = []
    grids = {"fedavg": [0.2] if args.quick else [0.05, 0.1, 0.2, 0.4],
             "fedsgd": [1.0] if args.quick else [0.3, 0.6, 1.0, 1.5]}
    for split, target in (("iid", args.target_iid), ("shards:2", args.target_noniid)):
        task = make_task("digits", split, 100, MODEL, seed=args.seed)
        best: dict[str, dict] = {}
        for method, lrs in grids.items():
            for lr in lrs:
                if method == "fedavg":
                    strat = FedAvg(fraction=0.1, fit=FitConfig(lr=lr, batch_size=10,
                                                               epochs=args.epochs))
                    cap = args.cap_fedavg
                else:
                    strat = FedSGD(fraction=0.1, fit=FitConfig(lr=lr))
                    cap = args.cap_fedsgd
                t0 = time.perf_counter()
                recs = run(task, strat, cap, args.seed, target)
                hit = recs[-1].round if recs[-1].test_acc >= target else None
                row = {"split": split, "target": target, "method": method, "lr": lr,
                       "rounds": hit, "cap": cap, "best_acc": max(r.test_acc for r in recs),
                       "rounds_run": len(recs), "wall_s": time.perf_counter() - t0}
                cur = best.get(method)
                key = (hit is None, hit or 0, -row["best_acc"])
                if cur is None or key < (cur["rounds"] is None, cur["rounds"] or 0,
                                         -cur["best_acc"]):
                    best[method] = row
        avg, sgd = best["fedavg"], best["fedsgd"]
        if avg["rounds"] is None:
            ratio, ratio_text = None, "n/a (FedAvg missed)"
        elif sgd["rounds"] is None:
            ratio = sgd["cap"] / avg["rounds"]
            ratio_text = f">{ratio:.1f}x"
        else:
            ratio = sgd["rounds"] / avg["rounds"]
            ratio_text = f"{ratio:.1f}x"
        steps = {"fedavg": f"E={args.epochs}, B=10", "fedsgd": "1 full batch"}
        for m in ("fedavg", "fedsgd"):
            r = best[m]
            r["ratio_fedsgd_over_fedavg"] = ratio
            r["ratio_is_lower_bound"] = sgd["rounds"] is None
            table.add_row(split, f"{target:.2f}", m, f"{r['lr']:g}",
                          str(r["rounds"]) if r["rounds"] else f">{r['cap']}",
                          f"{r['best_acc']:.3f}", ratio_text if m == "fedavg" else "",
                          steps[m], f"{r['wall_s']:.1f}")
            out.append(r)
    return table, out


def prox_vs_avg(args: argparse.Namespace) -> tuple[Table, list[dict]]:
    table = Table(title=f"FedProx vs FedAvg under Dirichlet(0.1): 20 clients, C=0.5, E=5, "
                        f"{args.prox_rounds} rounds")
    for col in ("method", "seed", "final acc", "acc std (last half)", "mean |change|",
                "min acc (last half)"):
        table.add_column(col, justify="left" if col == "method" else "right")
    out = []
    seeds = [args.seed] if args.quick else [args.seed, args.seed + 1]
    for seed in seeds:
        task = make_task("digits", "dirichlet:0.1", 20, MODEL, seed=seed)
        fit = FitConfig(lr=0.1, batch_size=10, epochs=5)
        for name, strat in (("fedavg", FedAvg(fraction=0.5, fit=fit)),
                            (f"fedprox mu={args.mu:g}", FedProx(args.mu, 0.5, fit=fit))):
            accs = [r.test_acc for r in run(task, strat, args.prox_rounds, seed)]
            half = accs[len(accs) // 2:]
            row = {"method": name, "seed": seed, "final_acc": statistics.fmean(accs[-5:]),
                   "acc_std_last_half": statistics.pstdev(half),
                   "mean_abs_change": statistics.fmean(abs(b - a) for a, b in
                                                       itertools.pairwise(half)),
                   "min_acc_last_half": min(half), "acc_by_round": accs}
            out.append(row)
            table.add_row(name, str(seed), f"{row['final_acc']:.3f}",
                          f"{row['acc_std_last_half']:.4f}", f"{row['mean_abs_change']:.4f}",
                          f"{row['min_acc_last_half']:.3f}")
    for name in dict.fromkeys(r["method"] for r in out):
        rows = [r for r in out if r["method"] == name]
        table.add_row(f"{name} (mean)", "all",
                      *(f"{statistics.fmean(r[k] for r in rows):.{d}f}" for k, d in
                        (("final_acc", 3), ("acc_std_last_half", 4), ("mean_abs_change", 4),
                         ("min_acc_last_half", 3))))
    return table, out


def fedcs_vs_random(args: argparse.Namespace) -> tuple[Table, list[dict]]:
    task = make_task("digits", "iid", 100, MODEL, seed=args.seed)
    fleet = load_fleet("multi-device")
    fc = fleet_clients(fleet, task.data.sizes().tolist(), task.model_fn(), (64,), jitter=1.0,
                       seed=args.seed)
    deadline, rounds = args.deadline, args.control_rounds
    table = Table(title=f"FedCS vs random selection (FedLim): multi-device fleet, 100 clients, "
                        f"deadline {deadline:g} s per round (sequential uploads), {rounds} rounds")
    for col in ("policy", "clients/round", "late", "final acc", "sim s/round"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    out = []
    fit = FitConfig(lr=0.2, batch_size=10, epochs=5)
    for policy in ("greedy", "random"):
        backend = backend_for(task, compute_s_per_epoch=fc.compute_s_per_epoch,
                              upload_s=fc.upload_s)
        recs = run(task, FedCS(FedAvg(fit=fit), deadline, policy=policy), rounds, args.seed,
                   backend=backend, deadline_s=deadline)
        row = {"policy": "fedcs greedy" if policy == "greedy" else "random (fedlim)",
               "clients_per_round": statistics.fmean(r.clients for r in recs),
               "late": sum(r.extra["late"] for r in recs), "final_acc": recs[-1].test_acc,
               "sim_round_s": statistics.fmean(r.extra["sim_round_s"] for r in recs),
               "acc_by_round": [r.test_acc for r in recs]}
        out.append(row)
        table.add_row(row["policy"], f"{row['clients_per_round']:.1f}", str(row["late"]),
                      f"{row['final_acc']:.3f}", f"{row['sim_round_s']:.3f}")
    return table, out


def adaptive_vs_fixed(args: argparse.Namespace) -> tuple[Table, list[dict]]:
    task = make_task("digits", "shards:2", 100, MODEL, seed=args.seed)
    budget = args.budget
    table = Table(title=f"Adaptive local steps (Wang et al.) vs fixed tau: shards non-IID, C=0.1, "
                        f"budget {budget:g} = sum over rounds of (c tau + b), c = 1")
    for col in ("b/c", "tau", "rounds", "tau chosen (median)", "spent", "final acc"):
        table.add_column(col, justify="right")
    out = []
    fit = FitConfig(lr=0.2, batch_size=10)
    settings = [(b, "adaptive") for b in args.agg_costs]
    if not args.quick:
        settings += [(5.0, 1), (5.0, 5), (5.0, 20)]
    for b, tau in settings:
        fixed = tau != "adaptive"
        s = AdaptiveFrequency(FedAvg(fraction=0.1, fit=fit), budget=budget, step_cost=1.0,
                              agg_cost=b, tau_init=tau if fixed else 1,
                              tau_max=tau if fixed else 200)
        recs = run(task, s, 10_000, args.seed, stop=lambda s=s: s.exhausted)
        trained = [r for r in recs if r.clients > 0]
        taus = [h.tau for h in s.history]
        row = {"agg_cost_over_step_cost": b, "tau": tau, "rounds": len(s.history),
               "tau_median": statistics.median(taus), "taus": taus, "spent": s.spent,
               "final_acc": trained[-1].test_acc}
        out.append(row)
        table.add_row(f"{b:g}", str(tau), str(row["rounds"]), f"{row['tau_median']:g}",
                      f"{s.spent:g}", f"{row['final_acc']:.3f}")
    return table, out


def hierarchical(args: argparse.Namespace) -> tuple[Table, list[dict]]:
    task = make_task("digits", "shards:2", 100, MODEL, seed=args.seed)
    fleet = load_fleet("multi-device")
    groups = {f"edge{g}": list(range(25 * g, 25 * g + 25)) for g in range(4)}
    total = 12
    table = Table(title=f"Hierarchical FL: 4 edges x 25 clients (20% per edge round), shards "
                        f"non-IID, {total} edge aggregations in all")
    for col in ("edge rounds", "cloud rounds", "device-edge MB", "edge-cloud MB",
                "WAN reduction", "final acc"):
        table.add_column(col, justify="right")
    out = []
    fit = FitConfig(lr=0.2, batch_size=10, epochs=5)
    wan_s = edge_uplink_s(fleet, ["edge"], sum(v.numel() * 4 for v in
                                               task.init_params().values()))["edge"]
    base = None
    for k in (1, 3):
        h = HierarchicalTrainer(task, backend_for(task), groups, FedAvg(fraction=0.2, fit=fit),
                                HierConfig(cloud_rounds=total // k, edge_rounds=k,
                                           seed=args.seed),
                                edge_cloud_s=dict.fromkeys(groups, wan_s))
        recs = h.run()
        dev = sum(r.extra["device_edge_up"] + r.extra["device_edge_down"] for r in recs)
        wan = sum(r.bytes_up + r.bytes_down for r in recs)  # the cloud's record: the WAN
        base = base or wan
        row = {"edge_rounds": k, "cloud_rounds": total // k, "device_edge_bytes": dev,
               "edge_cloud_bytes": wan, "wan_reduction": base / wan,
               "final_acc": recs[-1].test_acc}
        out.append(row)
        table.add_row(str(k), str(total // k), f"{dev / 1e6:.2f}", f"{wan / 1e6:.3f}",
                      f"{base / wan:.1f}x", f"{row['final_acc']:.3f}")
    return table, out


def main() -> None:
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=UserWarning)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one learning rate and one seed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=20, help="FedAvg local epochs E")
    ap.add_argument("--target-iid", type=float, default=0.95)
    ap.add_argument("--target-noniid", type=float, default=0.90)
    ap.add_argument("--cap-fedavg", type=int, default=100)
    ap.add_argument("--cap-fedsgd", type=int, default=500)
    ap.add_argument("--mu", type=float, default=0.1, help="FedProx proximal weight")
    ap.add_argument("--prox-rounds", type=int, default=40)
    ap.add_argument("--no-control", action="store_true", help="skip the edge-control part")
    ap.add_argument("--deadline", type=float, default=0.2, help="FedCS round deadline, s")
    ap.add_argument("--control-rounds", type=int, default=10)
    ap.add_argument("--budget", type=float, default=300.0, help="adaptive-tau resource budget")
    ap.add_argument("--agg-costs", type=float, nargs="+", default=[1.0, 5.0, 25.0],
                    help="aggregation costs b (step cost c = 1) for adaptive tau")
    ap.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()
    start = time.perf_counter()
    t1, rows1 = rounds_to_target(args)
    t2, rows2 = prox_vs_avg(args)
    tables = [t1, t2]
    control: dict[str, list[dict]] = {}
    if not args.no_control:
        for key, fn in (("fedcs", fedcs_vs_random), ("adaptive_tau", adaptive_vs_fixed),
                        ("hierarchical", hierarchical)):
            t, rows = fn(args)
            tables.append(t)
            control[key] = rows
    doc = {"benchmark": "fl_convergence",
           "workload": "sklearn digits scaled to [0,1], 360 held-out test samples, "
                       f"{MODEL}, SGD",
           "args": {k: v for k, v in vars(args).items() if k != "json"},
           "rounds_to_target": rows1, "fedprox_vs_fedavg": rows2, "edge_control": control,
           "total_s": time.perf_counter() - start}
    emit(Console(width=170), tables, doc, args.json)


if __name__ == "__main__":
    main()
