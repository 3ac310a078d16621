"""Federated time to accuracy: wall time and rounds until a CNN reaches a target test accuracy on
non-IID clients, for EdgeWeave's backends and for pfl and Flower, side by side in one run.

Workload (issue 17): the ``cnn:32,64,128`` CNN (151,306 parameters) on sklearn digits, upsampled:
each of the 1,437 training images also appears shifted by one pixel in each of the 8 directions
(9x, 12,933 samples, so 1,000 clients hold ~13 each), the 360 test images untouched.
Dirichlet(0.3) label skew over N clients, 10% of them a round, E local epochs of SGD (lr, batch
B), FedAvg weighted by examples. Every system trains the same cohorts (drawn once from the seed,
round r's cohort the same for all), from the same initial weights, with the same settings; the
target is a test accuracy the centralised model reaches easily (~0.98 on this data).

Per row:

- ``rounds``: rounds until the test accuracy first reaches ``target_acc`` (evaluated after every
  round, outside the timed part);
- ``wall_s``: the time of those rounds (client training plus aggregation) plus the system's
  set-up (EdgeWeave's backend construction, for the ray backend starting Ray and its actors;
  pfl's model and backend; Flower's simulation start-up with its Ray actors); the interpreter's
  start and imports are excluded;
- ``flops_per_s``: the training FLOPs of those rounds (forward + backward of every convolution
  and linear layer, for every sample of every local epoch; the same count for every system)
  over ``wall_s``;
- ``roofline_ratio``: that rate over this machine's measured peak for the same layers (the
  model's forward + backward at batch ``--peak-batch``, one process with ``--threads``): how far
  each system is from what the hardware does with these convolutions.

Threads: single-process systems (vectorized, pfl) run torch with ``--threads`` (default 1: on a
shared, loaded machine OpenMP threads that wait on each other are far slower than one); the
Ray-based ones (EdgeWeave's ray backend, Flower's simulation) run one single-threaded actor per
core. Wall times on a loaded machine are inflated: the JSON records the load average.

    python benchmarks/fl_time_to_accuracy.py --json out/fl_tta.json
    python benchmarks/fl_time_to_accuracy.py --clients 100 --systems vectorized,pfl --max-rounds 50

Peers run in their own venv (``.venv-peers``; see ``benchmarks/_fl_peers.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

import _peer_launch
from _zoo import emit
from edgeweave.train.backends.base import Backend
from edgeweave.train.data import partition_indices
from edgeweave.train.data.datasets import digits
from edgeweave.train.models import build_model
from edgeweave.train.strategies.fedavg import FedAvg
from edgeweave.train.task import FederatedData, Task
from edgeweave.train.types import FitConfig, Params

MODEL = "cnn:32,64,128"
PEERS = ("pfl", "flower")
SYSTEMS = ("vectorized", "ray", "sequential", *PEERS)
KEYS = ("system", "clients", "target_acc", "reached", "rounds", "wall_s", "final_acc",
        "flops_per_s", "roofline_ratio")


def upsampled_digits(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Digits as (N, 1, 8, 8); the training images with their 8 one-pixel shifts (zero fill)."""
    x, y, test_x, test_y = digits(seed=seed, flat=False)
    shifted = []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            s = torch.roll(x, (dy, dx), dims=(2, 3))
            if dy:
                s[:, :, 0 if dy > 0 else -1, :] = 0
            if dx:
                s[:, :, :, 0 if dx > 0 else -1] = 0
            shifted.append(s)
    return torch.cat(shifted), y.repeat(9), test_x, test_y


def workload(clients: int, alpha: float, seed: int) -> Task:
    x, y, test_x, test_y = upsampled_digits(seed)
    parts = partition_indices(f"dirichlet:{alpha:g}", y.numpy(), clients, seed)
    return Task(lambda: build_model(MODEL), FederatedData.from_parts(x, y, parts), test_x,
                test_y, name=f"digits-x9/dirichlet:{alpha:g}/{clients}", init_seed=seed)


def cohorts(clients: int, fraction: float, rounds: int, seed: int) -> np.ndarray:
    """(rounds, k) client ids, sorted within a round: the schedule every system follows."""
    k = max(1, round(fraction * clients))
    rng = np.random.default_rng([seed, 0xC0407])
    return np.stack([np.sort(rng.choice(clients, k, replace=False)) for _ in range(rounds)])


def train_flops_per_sample(model: nn.Module, x: torch.Tensor) -> float:
    """Forward + backward FLOPs of the conv and linear layers for one sample: 2 MACs forward,
    2 for the weight gradient, 2 for the input gradient (not for the first layer, whose input
    needs none). Activations, pooling and the loss are left out (a few percent)."""
    macs: list[float] = []

    def hook(m: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        if isinstance(m, nn.Conv2d):
            per_out = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            macs.append(out[0].numel() * per_out)
        else:
            macs.append(m.in_features * m.out_features)

    hooks = [m.register_forward_hook(hook) for m in model.modules()
             if isinstance(m, nn.Conv2d | nn.Linear)]
    with torch.no_grad():
        model(x[:1])
    for h in hooks:
        h.remove()
    return sum(2 * m * (2 if i == 0 else 3) for i, m in enumerate(macs))


def measured_peak(task: Task, flops_per_sample: float, batch: int, threads: int) -> float:
    """This machine's training FLOP/s on the same layers: the model's forward + backward on one
    large batch (the best of 5), with every thread."""
    torch.set_num_threads(threads)
    model = task.model_fn()
    x = task.data.x[:batch].repeat((batch + len(task.data.x) - 1) // len(task.data.x), 1, 1, 1)
    x, y = x[:batch], task.data.y.repeat(batch // len(task.data.y) + 1)[:batch]
    best = float("inf")
    for _ in range(6):
        start = time.perf_counter()
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        best = min(best, time.perf_counter() - start)
    return flops_per_sample * batch / best


def accuracy(task: Task, params: Params) -> float:
    model = task.model_fn()
    model.load_state_dict(params)
    model.eval()
    with torch.no_grad():
        return float((model(task.test_x).argmax(1) == task.test_y).float().mean())


def make_backend(name: str, task: Task) -> Backend:
    if name == "vectorized":
        from edgeweave.train.backends.vectorized import VectorizedBackend

        return VectorizedBackend(task)
    if name == "ray":
        from edgeweave.train.backends.ray_backend import RayBackend

        return RayBackend(task, num_cpus=os.cpu_count() or 1)
    from edgeweave.train.backends.sequential import SequentialBackend

    return SequentialBackend(task)


def run_edgeweave(name: str, task: Task, fit: FitConfig, plan: np.ndarray, target: float,
                  threads: int) -> dict:
    torch.set_num_threads(threads)
    strategy = FedAvg(fit=fit)
    params = task.init_params()
    round_s: list[float] = []
    acc: list[float] = []
    start = time.perf_counter()  # the backend's set-up (Ray and its actors) is part of round 1
    with make_backend(name, task) as backend:
        for r, cohort in enumerate(plan):
            updates = backend.fit(r, params, cohort.tolist(), fit)
            params = strategy.aggregate(r, params, updates)
            round_s.append(time.perf_counter() - start)
            acc.append(accuracy(task, params))
            if acc[-1] >= target:
                break
            start = time.perf_counter()
    return {"round_s": round_s, "acc_by_round": acc, "final_acc": acc[-1]}


def row(system: str, task: Task, plan: np.ndarray, res: dict, target: float,
        flops_sample: float, peak: float, epochs: int) -> dict:
    """The JSON row (exactly KEYS) from a system's per-round times and accuracies."""
    if "error" in res:
        return dict.fromkeys(KEYS) | {"system": system, "clients": task.data.num_clients,
                                      "target_acc": target, "reached": False}
    rounds = len(res["round_s"])
    wall = float(sum(res["round_s"]))
    sizes = task.data.sizes().numpy()
    samples = float(sum(sizes[c].sum() for c in plan[:rounds])) * epochs
    rate = flops_sample * samples / wall
    reached = bool(res["acc_by_round"]) and res["acc_by_round"][-1] >= target
    return {"system": system, "clients": task.data.num_clients, "target_acc": target,
            "reached": reached, "rounds": rounds, "wall_s": wall,
            "final_acc": float(res["final_acc"]), "flops_per_s": rate,
            "roofline_ratio": rate / peak}


def table(rows: list[dict], fit: FitConfig, args: argparse.Namespace, peak: float) -> Table:
    t = Table(title=f"Time to {args.target:.0%} test accuracy: {MODEL} on digits x9, "
                    f"Dirichlet({args.alpha:g}), {args.fraction:.0%} of clients a round, "
                    f"E={fit.epochs}, lr {fit.lr:g}, B={fit.batch_size}; peak "
                    f"{peak / 1e9:.1f} GFLOP/s ({args.threads} threads)")
    for col in ("system", "clients", "reached", "rounds", "wall s", "s/round", "final acc",
                "GFLOP/s", "roofline", "vs pfl", "vs flower"):
        t.add_column(col, justify="left" if col == "system" else "right")
    for r in rows:
        same = {p["system"]: p for p in rows if p["clients"] == r["clients"]}
        vs = []
        for peer in PEERS:
            p = same.get(peer)
            ok = p and p["reached"] and r["reached"]
            vs.append(f"{p['wall_s'] / r['wall_s']:.1f}x" if ok else "-")
        if r["wall_s"] is None:
            t.add_row(r["system"], str(r["clients"]), "error", *["-"] * 8)
            continue
        t.add_row(r["system"], str(r["clients"]), "yes" if r["reached"] else "NO",
                  str(r["rounds"]), f"{r['wall_s']:.2f}", f"{r['wall_s'] / r['rounds']:.3f}",
                  f"{r['final_acc']:.4f}", f"{r['flops_per_s'] / 1e9:.2f}",
                  f"{r['roofline_ratio']:.1%}", *vs)
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", default="100,1000", help="comma-separated client counts")
    ap.add_argument("--systems", default="vectorized,ray,pfl,flower",
                    help=f"comma-separated, from {', '.join(SYSTEMS)}")
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--max-rounds", type=int, default=150)
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--alpha", type=float, default=0.3, help="Dirichlet label skew")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--peak-batch", type=int, default=2048)
    ap.add_argument("--peers-python", default=None,
                    help="interpreter with the peers installed (default .venv-peers/bin/python)")
    ap.add_argument("--peer-timeout", type=float, default=3600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    systems = [s for s in args.systems.split(",") if s]
    for s in systems:
        if s not in SYSTEMS:
            ap.error(f"--systems: unknown system {s!r}; have {', '.join(SYSTEMS)}")
    fit = FitConfig(lr=args.lr, batch_size=args.batch_size, epochs=args.epochs, seed=args.seed)
    python = _peer_launch.peers_python(args.peers_python)
    rows: list[dict] = []
    details: list[dict] = []
    peak = 0.0
    for n in [int(c) for c in args.clients.split(",") if c]:
        task = workload(n, args.alpha, args.seed)
        plan = cohorts(n, args.fraction, args.max_rounds, args.seed)
        flops_sample = train_flops_per_sample(task.model_fn(), task.data.x)
        peak = peak or measured_peak(task, flops_sample, args.peak_batch, args.threads)
        for system in systems:
            start = time.perf_counter()
            if system in PEERS:
                threads = 1 if system == "flower" else args.threads
                res = _peer_launch.run_peer(system, task, fit, args.max_rounds, python, threads,
                                            args.peer_timeout, model=MODEL, cohorts=plan,
                                            target=args.target)
            else:
                threads = 1 if system == "ray" else args.threads
                res = run_edgeweave(system, task, fit, plan, args.target, threads)
            rows.append(row(system, task, plan, res, args.target, flops_sample, peak,
                            fit.epochs))
            details.append({"system": system, "clients": n, "threads": threads,
                            "process_s": time.perf_counter() - start, **res})
            r = rows[-1]
            print(f"{system} @ {n}: " + (f"{r['rounds']} rounds, {r['wall_s']:.1f} s, acc "
                                         f"{r['final_acc']:.4f}" if r["wall_s"] is not None
                                         else f"error: {res['error']}"), file=sys.stderr)
    doc = {"benchmark": "fl_time_to_accuracy",
           "workload": {"dataset": "digits, train x9 by one-pixel shifts", "test_size": 360,
                        "model": MODEL, "partition": f"dirichlet:{args.alpha:g}",
                        "fraction": args.fraction, "lr": fit.lr, "batch_size": fit.batch_size,
                        "epochs": fit.epochs, "strategy": "fedavg", "target_acc": args.target,
                        "max_rounds": args.max_rounds, "seed": args.seed,
                        "threads": args.threads, "peak_batch": args.peak_batch},
           "host": {"cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
                    "torch": torch.__version__},
           "peak_flops_per_s": peak, "rows": rows, "details": details}
    emit(Console(width=160), [table(rows, fit, args, peak)], doc, args.json)


if __name__ == "__main__":
    main()
