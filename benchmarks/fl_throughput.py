"""Federated simulation throughput: client updates per second and final accuracy, per backend and
against peer frameworks, on one fixed workload.

Workload (issue 5): digits scaled to [0, 1], 360 held-out test samples, IID split of the rest over
N clients, MLP 64-64-10, SGD lr 0.1, batch 16, 1 local epoch, FedAvg, all clients every round.
Every backend and peer starts from the same initial weights on the same split.

A round's time is local training plus aggregation (evaluation only after the last round).
``client_updates_per_s`` is the steady state, N * (R - 1) over rounds 2..R: the first round
carries one-off costs (Flower starts its Ray actors, torch.func traces) and is reported apart
(``first_round_s``, and ``client_updates_per_s_all_rounds`` over all R).

    python benchmarks/fl_throughput.py --clients 100 --rounds 20 --json out/fl_tp.json --vs-peers

Peers (``--vs-peers``) run in a subprocess with the interpreter given by ``--peers-python``
(default ``.venv-peers/bin/python``, see ``benchmarks/_fl_peers.py`` for why a separate venv).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

import _peer_launch
from _zoo import emit
from edgeweave.train.backends.base import Backend
from edgeweave.train.backends.sequential import SequentialBackend
from edgeweave.train.backends.vectorized import VectorizedBackend
from edgeweave.train.data import make_task
from edgeweave.train.strategies.fedavg import FedAvg
from edgeweave.train.task import Task
from edgeweave.train.types import FitConfig, Params

MODEL = "mlp:64,64,10"
FIT = FitConfig(lr=0.1, batch_size=16, epochs=1)
PEERS = ("pfl", "flower")

#: backend name -> factory(task). Other backends (grpc, ray) register here to be measured.
BACKENDS: dict[str, Callable[[Task], Backend]] = {
    "vectorized": VectorizedBackend,
    "sequential": SequentialBackend,
}


def workload(clients: int, seed: int) -> Task:
    return make_task("digits", "iid", clients, MODEL, seed=seed, test_size=360)


def accuracy(task: Task, params: Params) -> float:
    model = task.model_fn()
    model.load_state_dict(params, strict=False)
    model.eval()
    with torch.no_grad():
        return float((model(task.test_x).argmax(1) == task.test_y).float().mean())


def entry(name: str, clients: int, round_s: list[float], acc: float, **extra) -> dict:
    steady = round_s[1:] or round_s
    return {
        "backend": name,
        "client_updates_per_s": clients * len(steady) / sum(steady),
        "client_updates_per_s_all_rounds": clients * len(round_s) / sum(round_s),
        "final_acc": acc,
        "first_round_s": round_s[0],
        "round_s": round_s,
        **extra,
    }


def run_backend(name: str, task: Task, rounds: int) -> dict:
    backend = BACKENDS[name](task)
    strategy = FedAvg(fit=FIT)
    params = task.init_params()
    ids = list(range(task.data.num_clients))
    round_s = []
    metrics: dict = {}
    with backend:
        for r in range(rounds):
            start = time.perf_counter()
            updates = backend.fit(r, params, ids, FIT)
            params = strategy.aggregate(r, params, updates)
            round_s.append(time.perf_counter() - start)
            metrics = updates.metrics
    extra = {"fallback": metrics["backend_fallback"]} if "backend_fallback" in metrics else {}
    return entry(name, len(ids), round_s, accuracy(task, params), **extra)


def run_peer(peer: str, task: Task, rounds: int, python: str, threads: int,
             timeout: float) -> dict:
    """The same workload on a peer framework, in a subprocess; errors become the entry."""
    res = _peer_launch.run_peer(peer, task, FIT, rounds, python, threads, timeout, model=MODEL)
    if "error" in res:
        return {"backend": peer, "client_updates_per_s": None, "final_acc": None, **res}
    return entry(peer, task.data.num_clients, res["round_s"], res["final_acc"],
                 version=res["version"], process_wall_s=res["process_wall_s"],
                 python=res["python"])


def table(results: list[dict], clients: int, rounds: int, threads: int) -> Table:
    t = Table(title=f"FL throughput: digits IID, {clients} clients, {rounds} rounds, "
                    f"MLP 64-64-10, SGD lr {FIT.lr} batch {FIT.batch_size}, 1 epoch "
                    f"(torch threads {threads})")
    for col in ("backend", "updates/s (steady)", "updates/s (all rounds)", "first round s",
                "final acc", "vs pfl", "vs flower", "note"):
        t.add_column(col, justify="left" if col in ("backend", "note") else "right")
    rate = {r["backend"]: r.get("client_updates_per_s") for r in results}
    for r in results:
        ups = r.get("client_updates_per_s")
        vs = [f"{ups / rate[p]:.1f}x" if ups and rate.get(p) else "-" for p in PEERS]
        t.add_row(r["backend"], f"{ups:,.0f}" if ups else "-",
                  f"{r['client_updates_per_s_all_rounds']:,.0f}" if ups else "-",
                  f"{r['first_round_s']:.2f}" if ups else "-",
                  f"{r['final_acc']:.4f}" if r.get("final_acc") is not None else "-", *vs,
                  (r.get("error") or r.get("fallback") or r.get("version") or "")[:60])
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--vs-peers", action="store_true", help="also run pfl and Flower")
    ap.add_argument("--peers", default=",".join(PEERS), help="which peers, comma-separated")
    ap.add_argument("--backends", default="vectorized,sequential",
                    help=f"comma-separated, from {sorted(BACKENDS)}")
    ap.add_argument("--peers-python", default=None,
                    help="interpreter with the peers installed (default .venv-peers/bin/python)")
    ap.add_argument("--peer-timeout", type=float, default=1800)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for every backend and peer process (Flower's Ray runs "
                         "one client process per core on top)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.rounds < 2:
        ap.error("--rounds must be >= 2 (the first round is reported apart)")
    torch.set_num_threads(args.threads)
    task = workload(args.clients, args.seed)
    results = []
    for name in [b for b in args.backends.split(",") if b]:
        if name not in BACKENDS:
            ap.error(f"unknown backend {name!r}; have {sorted(BACKENDS)}")
        results.append(run_backend(name, task, args.rounds))
        print(f"{name}: {results[-1]['client_updates_per_s']:,.0f} updates/s", file=sys.stderr)
    if args.vs_peers:
        python = _peer_launch.peers_python(args.peers_python)
        for peer in [p for p in args.peers.split(",") if p]:
            results.append(run_peer(peer, task, args.rounds, python, args.threads,
                                    args.peer_timeout))
            print(f"{peer}: {results[-1].get('client_updates_per_s') or results[-1]['error']}",
                  file=sys.stderr)
    doc = {
        "workload": {"dataset": "digits", "test_size": 360, "partition": "iid",
                     "clients": args.clients, "rounds": args.rounds, "model": MODEL,
                     "lr": FIT.lr, "batch_size": FIT.batch_size, "epochs": FIT.epochs,
                     "strategy": "fedavg", "seed": args.seed, "threads": args.threads},
        "host": {"cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]},
        "results": results,
    }
    tables = [table(results, args.clients, args.rounds, args.threads)]
    emit(Console(width=150), tables, doc, args.json)


if __name__ == "__main__":
    main()
