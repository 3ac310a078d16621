"""One federated round of 10,000 clients on this machine: wall time and peak memory.

Data: FedProx's Synthetic(1, 1) (Li et al. 2020; LogNormal(4, 2) + 50 samples per client, 60
features, 10 classes), model: logistic regression 60 -> 10, local SGD (lr 0.01, batch 10, as in
FedProx, 1 epoch), FedAvg, every client in the round. The round is timed from the server's call
into the vectorized backend to the aggregated model (schedule, local training, aggregation);
generating the data is reported apart.

Memory: the process's peak resident set (``ru_maxrss``: data generation included), and the
round's own peak (Linux ``VmHWM`` after resetting it through ``/proc/self/clear_refs`` just
before the round; the data already resident is part of it). Targets (issue 5): under 5 s, 4 GB.
The round's CPU time is printed beside its wall time: on a shared machine the wall time
includes waiting for a core, and with one torch thread the CPU time is what an idle core takes.

``--sequential-sample K`` also times the sequential reference on the K clients with the most data
(the slowest ones, so its extrapolation to all clients is conservative for the vectorized side)
and reports both rates on those clients.

    python benchmarks/fl_scale.py --clients 10000 --json out/fl_scale.json
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from _zoo import emit
from edgeweave.train.backends.sequential import SequentialBackend
from edgeweave.train.backends.vectorized import VectorizedBackend
from edgeweave.train.data import make_task
from edgeweave.train.strategies.fedavg import FedAvg
from edgeweave.train.types import FitConfig

GB = 1 << 30


def rss_status(field: str) -> int | None:
    """A ``/proc/self/status`` memory field in bytes (None off Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def accuracy(model: torch.nn.Module, params, x: torch.Tensor, y: torch.Tensor) -> float:
    model.load_state_dict(params)
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=10_000)
    ap.add_argument("--model", default="logreg:60,10", help="logreg:60,10 or mlp:60,H,10")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sequential-sample", type=int, default=0, metavar="K")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    task = make_task("synthetic:1,1", "natural", args.clients, args.model, seed=args.seed)
    gen_s = time.perf_counter() - start
    assert task.data is not None
    sizes = task.data.sizes()
    config = FitConfig(lr=args.lr, batch_size=args.batch_size, epochs=1, seed=args.seed)
    backend = VectorizedBackend(task)
    params0 = task.init_params()
    ids = list(range(args.clients))
    rss_before = rss_status("VmRSS")
    hwm_reset = reset_peak_rss()

    start, cpu = time.perf_counter(), time.process_time()
    updates = backend.fit(0, params0, ids, config)
    params = FedAvg(fit=config).aggregate(0, params0, updates)
    round_s, round_cpu_s = time.perf_counter() - start, time.process_time() - cpu

    round_peak = rss_status("VmHWM") if hwm_reset else None
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    model = task.model_fn()
    doc = {
        "workload": {"data": "synthetic:1,1", "clients": args.clients, "model": args.model,
                     "samples": int(sizes.sum()), "largest_client": int(sizes.max()),
                     "lr": args.lr, "batch_size": args.batch_size, "epochs": 1,
                     "threads": args.threads, "seed": args.seed},
        "host": {"cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]},
        "data_generation_s": gen_s,
        "round_s": round_s,
        "round_cpu_s": round_cpu_s,
        "client_updates_per_s": args.clients / round_s,
        "rss_before_round_bytes": rss_before,
        "round_peak_rss_bytes": round_peak,
        "process_peak_rss_bytes": max_rss,
        "test_acc_before": accuracy(model, params0, task.test_x, task.test_y),
        "test_acc_after": accuracy(model, params, task.test_x, task.test_y),
        "targets": {"round_s": 5.0, "peak_bytes": 4 * GB},
    }
    doc["local_steps_total"] = int(((sizes + args.batch_size - 1) // args.batch_size).sum())
    if args.sequential_sample:
        doc["sequential_sample"] = sample_rates(task, backend, params0, config,
                                                args.sequential_sample)

    t = Table(title=f"One round of {args.clients:,} clients: Synthetic(1,1), {args.model}, "
                    f"SGD lr {args.lr} batch {args.batch_size}, 1 epoch "
                    f"(torch threads {args.threads}, load {doc['host']['load_avg_1m']:.1f})")
    for col in ("measure", "value", "target"):
        t.add_column(col, justify="left" if col == "measure" else "right")
    t.add_row("samples / client steps", f"{doc['workload']['samples']:,} / "
              f"{doc['local_steps_total']:,}", "")
    t.add_row("data generation", f"{gen_s:.2f} s", "")
    t.add_row("round wall time (vectorized + FedAvg)", f"{round_s:.2f} s", "< 5 s")
    t.add_row("round CPU time (this process)", f"{round_cpu_s:.2f} s", "")
    t.add_row("client updates / s", f"{args.clients / round_s:,.0f}", "")
    if round_peak:
        t.add_row("peak RSS during the round", f"{round_peak / GB:.2f} GB", "< 4 GB")
    t.add_row("process peak RSS (incl. data generation)", f"{max_rss / GB:.2f} GB", "< 4 GB")
    t.add_row("test accuracy before -> after", f"{doc['test_acc_before']:.3f} -> "
              f"{doc['test_acc_after']:.3f}", "")
    if args.sequential_sample:
        s = doc["sequential_sample"]
        t.add_row(f"sequential vs vectorized, {s['clients']} largest clients",
                  f"{s['sequential_s']:.2f} s vs {s['vectorized_s']:.2f} s", "")
    emit(Console(width=150), [t], doc, args.json)


def sample_rates(task, backend: VectorizedBackend, params0, config: FitConfig, k: int) -> dict:
    """Both backends on the k clients with the most data (allclose is what the tests check;
    here only time)."""
    ids = torch.argsort(task.data.sizes(), descending=True)[:k].tolist()
    start = time.perf_counter()
    backend.fit(0, params0, ids, config)
    vec = time.perf_counter() - start
    start = time.perf_counter()
    SequentialBackend(task).fit(0, params0, ids, config)
    seq = time.perf_counter() - start
    return {"clients": k, "vectorized_s": vec, "sequential_s": seq,
            "samples": int(task.data.sizes()[ids].sum())}


if __name__ == "__main__":
    main()
