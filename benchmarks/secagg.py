"""Secure aggregation (Bonawitz et al. 2017; k-regular graphs: Bell et al. 2020): exactness under
dropouts, and what it costs per client and at the server against plain FedAvg.

1. Correctness. One round of real local training on sklearn digits (MLP 64-64-10, 4,810
   parameters, iid split) from a common initial model; each client's example-weighted update
   is fixed-point encoded in Z_{2^32} (clip 1.0, fractional bits chosen from the round's total
   weight) and securely summed while 0%, 10% and 30% of the clients drop after ShareKeys. The
   table shows whether the unmasked ring sum equals the plain integer sum of the survivors'
   same quantised inputs (so the de-quantised sum is bit-for-bit the plain de-quantised sum),
   the largest error of the de-quantised weighted mean against the float64 FedAvg mean, and the
   quantisation bound it must stay under (step/2).
2. Overhead at 10, 100 and 1,000 clients, complete graph and random k-regular graph (k chosen so
   that the sum survives the dropout rate with 99% probability): per-client payload bytes up and
   down (every protocol message, measured from the messages; a client that stays to the end)
   against plain FedAvg's float32 model upload/download, per-client compute time (the time of
   that client's own protocol work, mean and max over clients) against one client's local
   training, and the server's time against plain FedAvg's aggregation. Inputs here are random
   updates of the same model size: cost does not depend on the values.

Everything runs in this process on one thread (`torch.set_num_threads(1)`); times are CPU
seconds of that thread (``time.thread_time``) on this host, for the protocol and for the plain
FedAvg baselines alike, so other processes on a shared machine do not inflate them. The
complete graph at 1,000 clients takes a few minutes (two million key agreements):
``--max-full`` caps the sizes that run it.

3. ``--active`` (instead of 1 and 2): the same overhead runs once in the honest-but-curious
   mode and once in active mode (signed advertisements + ConsistencyCheck, against a server
   that may lie), and what active mode adds per client in bytes and compute time.

    .venv/bin/python benchmarks/secagg.py [--quick] [--max-full 1000] [--active] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from _zoo import emit
from edgeweave.train.backends.sequential import SequentialBackend
from edgeweave.train.data import make_task
from edgeweave.train.local import train_client
from edgeweave.train.models import build_model
from edgeweave.train.secagg import graph as graphs
from edgeweave.train.secagg.messages import Params as SecAggParams
from edgeweave.train.secagg.simulate import make_graph, secure_sum
from edgeweave.train.secagg.vector import UpdateVector
from edgeweave.train.strategies import FedAvg
from edgeweave.train.task import params_of
from edgeweave.train.types import FitConfig, TrainError, Updates

MODEL = "mlp:64,64,10"
RING_BITS = 32
CLIP = 1.0


def _protocol(ids: list[int], inputs: dict[int, np.ndarray], length: int, k: int | None,
              dropout: float, seed: int, active: bool = False):
    g = make_graph(ids, k, seed)
    degree = min(len(v) for v in g.values())
    p = SecAggParams(RING_BITS, graphs.threshold(degree + 1), length, b"bench %d" % seed,
                     active=active)
    rng = np.random.default_rng(seed)
    drop = {ids[int(i)] for i in rng.choice(len(ids), size=round(dropout * len(ids)),
                                            replace=False)}
    return secure_sum(inputs, p, g, drop_before_masking=drop), p, degree


def correctness(n: int, k: int | None, rates: list[float], seed: int) -> list[dict]:
    task = make_task("digits", "iid", n, MODEL, seed=seed)
    w = task.init_params()
    ids = list(range(n))
    upd = SequentialBackend(task).fit(1, w, ids, FitConfig(lr=0.1, batch_size=16))
    weights = [int(x) for x in upd.num_examples.tolist()]
    vec = UpdateVector.for_model(w, sum(weights), CLIP, RING_BITS)
    deltas = upd.deltas(w)
    flat = torch.cat([d.reshape(n, -1).double() for d in deltas.values()], dim=1).numpy()
    inputs = {}
    for i in ids:
        d = OrderedDict((name, v[i]) for name, v in deltas.items())
        inputs[i] = vec.encode(d, weights[i], float(upd.train_loss[i]))
    rows = []
    for rate in rates:
        try:
            res, p, degree = _protocol(ids, inputs, vec.length, k, rate, seed)
        except TrainError as e:  # shown, not hidden: the sum was lost at this setting
            rows.append({"clients": n, "graph": f"k={k}", "dropout": rate, "aborted": str(e)})
            continue
        plain = np.sum(np.stack([inputs[u] for u in res.survivors]), axis=0, dtype=np.uint32)
        exact = bool(np.array_equal(res.total, plain))
        deq_equal = bool(np.array_equal(vec.delta.decode(res.total), vec.delta.decode(plain)))
        sw = np.array([weights[u] for u in res.survivors], np.float64)
        float_mean = sw @ flat[res.survivors] / sw.sum()
        mean, weight, _ = vec.decode(res.total)
        sec_mean = torch.cat([m.reshape(-1) for m in mean.values()]).numpy()
        rows.append({
            "clients": n, "graph": "complete" if degree == n - 1 else f"k={degree}",
            "threshold": p.threshold, "dropout": rate, "survivors": len(res.survivors),
            "exact_int_match": exact, "dequantised_bit_equal": deq_equal,
            "max_abs_err": float(np.abs(sec_mean - float_mean).max()),
            "bound_step_half": vec.delta.step / 2, "clipped_coords": int((np.abs(flat) > CLIP)
                                                                          .sum()),
            "weight_match": weight == int(sw.sum()), "wall_s": time.perf_counter(),
        })
    return rows


def plain_costs(n: int, params: int, seed: int) -> tuple[float, float]:
    """(one client's local training seconds, FedAvg aggregation seconds at n clients)."""
    task = make_task("digits", "iid", 100, MODEL, seed=seed)
    model = build_model(MODEL)
    w = params_of(model)
    x, y = task.data.client(0)
    t0 = time.thread_time()
    reps = 5
    for r in range(reps):
        train_client(model, w, x, y, FitConfig(lr=0.1, batch_size=16), r, 0)
    train_s = (time.thread_time() - t0) / reps
    g = torch.Generator().manual_seed(seed)
    stacked = {k: v.unsqueeze(0) + 0.01 * torch.randn((n, *v.shape), generator=g)
               for k, v in w.items()}
    upd = Updates(list(range(n)), stacked, torch.full((n,), 14.0, dtype=torch.float64),
                  torch.zeros(n, dtype=torch.float64))
    t0 = time.thread_time()
    FedAvg().aggregate(1, w, upd)
    return train_s, time.thread_time() - t0


def _random_inputs(n: int, seed: int) -> tuple[UpdateVector, dict[int, np.ndarray]]:
    w = params_of(build_model(MODEL))
    vec = UpdateVector.for_model(w, 14 * n, CLIP, RING_BITS)
    rng = np.random.default_rng(seed)
    inputs = {}
    for i in range(n):
        d = OrderedDict((name, torch.from_numpy(rng.normal(0, 0.01, v.shape))) for name, v
                        in w.items())
        inputs[i] = vec.encode(d, 14, 0.5)
    return vec, inputs


def active_overhead(n: int, k: int | None, dropout: float, seed: int) -> dict:
    """One run per mode on the same inputs, graph and dropouts."""
    vec, inputs = _random_inputs(n, seed)
    ids = list(range(n))
    out: dict = {"clients": n, "params": vec.length - 2}
    for mode in ("passive", "active"):
        res, p, degree = _protocol(ids, inputs, vec.length, k, dropout, seed,
                                   active=mode == "active")
        plain = np.sum(np.stack([inputs[u] for u in res.survivors]), axis=0, dtype=np.uint32)
        cs = np.array(list(res.client_s.values()))
        out.update({"graph": "complete" if degree == n - 1 else f"k={degree}",
                    "threshold": p.threshold, f"{mode}_exact": bool(np.array_equal(res.total,
                                                                                   plain)),
                    f"{mode}_up_B": res.client_bytes_up, f"{mode}_down_B": res.client_bytes_down,
                    f"{mode}_bytes_up_by_msg": res.bytes_up,
                    f"{mode}_bytes_down_by_msg": res.bytes_down,
                    f"{mode}_client_s_mean": float(cs.mean()), f"{mode}_server_s": res.server_s})
    for d in ("up", "down"):
        out[f"extra_{d}_B"] = out[f"active_{d}_B"] - out[f"passive_{d}_B"]
        out[f"extra_{d}_pct"] = 100 * out[f"extra_{d}_B"] / out[f"passive_{d}_B"]
    out["extra_client_s_pct"] = 100 * (out["active_client_s_mean"]
                                       / out["passive_client_s_mean"] - 1)
    return out


def active_main(args, sizes: list[int]) -> None:
    rows = []
    for n in sizes:
        for k in (None, graphs.default_k(n, args.dropout)):
            if (k is None and n > args.max_full) or (k is not None and k >= n - 1):
                continue
            rows.append(active_overhead(n, k, args.dropout, args.seed))
            print(f"active vs passive at {n} clients, {rows[-1]['graph']} done", file=sys.stderr)
    t = Table(title=f"Active (signed keys + ConsistencyCheck) vs passive secure aggregation, per "
                    f"client ({MODEL}, {rows[0]['params']} params, {args.dropout:.0%} dropout)")
    for col in ("clients", "graph", "t", "exact p/a", "up B passive", "up B active", "up +%",
                "down B passive", "down B active", "down +%", "client s p/a", "client s +%"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(str(r["clients"]), r["graph"], str(r["threshold"]),
                  f"{r['passive_exact']}/{r['active_exact']}", f"{r['passive_up_B']:,.0f}",
                  f"{r['active_up_B']:,.0f}", f"{r['extra_up_pct']:.1f}",
                  f"{r['passive_down_B']:,.0f}", f"{r['active_down_B']:,.0f}",
                  f"{r['extra_down_pct']:.1f}",
                  f"{r['passive_client_s_mean']:.4f} / {r['active_client_s_mean']:.4f}",
                  f"{r['extra_client_s_pct']:.0f}")
    doc = {"benchmark": "secagg-active", "model": MODEL, "ring_bits": RING_BITS, "clip": CLIP,
           "seed": args.seed, "quick": args.quick, "dropout": args.dropout,
           "max_full": args.max_full, "threads": torch.get_num_threads(), "rows": rows}
    emit(Console(width=230), [t], doc, args.json)


def overhead(n: int, k: int | None, dropout: float, seed: int) -> dict:
    vec, inputs = _random_inputs(n, seed)
    ids = list(range(n))
    t0 = time.perf_counter()
    res, p, degree = _protocol(ids, inputs, vec.length, k, dropout, seed)
    wall = time.perf_counter() - t0
    plain = np.sum(np.stack([inputs[u] for u in res.survivors]), axis=0, dtype=np.uint32)
    nparams = vec.length - 2
    model_bytes = 4 * nparams
    train_s, agg_s = plain_costs(n, nparams, seed)
    cs = np.array(list(res.client_s.values()))
    up = res.client_bytes_up
    down = model_bytes + res.client_bytes_down  # the global model still comes down
    return {
        "clients": n, "graph": "complete" if degree == n - 1 else f"k={degree}", "threshold":
        p.threshold, "dropout": dropout, "survivors": len(res.survivors),
        "exact": bool(np.array_equal(res.total, plain)), "params": nparams,
        "plain_up_B": model_bytes, "secagg_up_B": up, "up_x": up / model_bytes,
        "plain_down_B": model_bytes, "secagg_down_B": down, "down_x": down / model_bytes,
        "bytes_up_by_msg": res.bytes_up, "bytes_down_by_msg": res.bytes_down,
        "plain_client_train_s": train_s, "secagg_client_s_mean": float(cs.mean()),
        "secagg_client_s_max": float(cs.max()), "client_time_x": float(cs.mean()) / train_s,
        "plain_server_agg_s": agg_s, "secagg_server_s": res.server_s, "sim_wall_s": wall,
    }


def main() -> None:
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dropout", type=float, default=0.1, help="dropout of the overhead table")
    ap.add_argument("--max-full", type=int, default=1000,
                    help="largest client count run on the complete graph")
    ap.add_argument("--active", action="store_true",
                    help="only compare active mode (signed keys + ConsistencyCheck) to passive")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    sizes = [10, 30] if args.quick else [10, 100, 1000]
    if args.active:
        active_main(args, sizes)
        return
    rates = [0.0, 0.1, 0.3]
    corr_cfg = [(30, None), (60, graphs.default_k(60, 0.3))] if args.quick else [
        (100, None), (1000, graphs.default_k(1000, 0.3))]
    t_start = time.perf_counter()
    corr = []
    for n, k in corr_cfg:
        corr += correctness(n, k, rates, args.seed)
        print(f"correctness at {n} clients done", file=sys.stderr)
    ct = Table(title="Secure aggregation correctness: one digits round, drops after ShareKeys")
    for col in ("clients", "graph", "t", "dropout", "survivors", "int sum exact",
                "dequantised bit-equal", "max |err| vs float", "bound step/2", "clipped"):
        ct.add_column(col, justify="right")
    for r in corr:
        if "aborted" in r:
            ct.add_row(str(r["clients"]), r["graph"], "", f"{r['dropout']:.0%}", "aborted",
                       r["aborted"][:60], "", "", "", "")
            continue
        ct.add_row(str(r["clients"]), r["graph"], str(r["threshold"]), f"{r['dropout']:.0%}",
                   str(r["survivors"]), str(r["exact_int_match"]),
                   str(r["dequantised_bit_equal"]), f"{r['max_abs_err']:.2e}",
                   f"{r['bound_step_half']:.2e}", str(r["clipped_coords"]))
        r.pop("wall_s")
    over = []
    for n in sizes:
        for k in (None, graphs.default_k(n, args.dropout)):
            if k is None and n > args.max_full:
                continue
            if k is not None and k >= n - 1:
                continue  # k-regular would be the complete graph
            over.append(overhead(n, k, args.dropout, args.seed))
            print(f"overhead at {n} clients, {over[-1]['graph']} done", file=sys.stderr)
    ot = Table(title=f"Secure aggregation overhead per client vs plain FedAvg ({MODEL}, "
                     f"{over[0]['params']} params, {args.dropout:.0%} dropout)")
    for col in ("clients", "graph", "t", "exact", "up B (plain)", "up B (secagg)", "up x",
                "down B (secagg)", "down x", "client s (train)", "client s secagg mean/max",
                "server s (plain agg)", "server s secagg"):
        ot.add_column(col, justify="right")
    for r in over:
        ot.add_row(str(r["clients"]), r["graph"], str(r["threshold"]), str(r["exact"]),
                   f"{r['plain_up_B']:,}", f"{r['secagg_up_B']:,.0f}", f"{r['up_x']:.2f}",
                   f"{r['secagg_down_B']:,.0f}", f"{r['down_x']:.2f}",
                   f"{r['plain_client_train_s']:.4f}",
                   f"{r['secagg_client_s_mean']:.4f} / {r['secagg_client_s_max']:.4f}",
                   f"{r['plain_server_agg_s']:.4f}", f"{r['secagg_server_s']:.3f}")
    doc = {"benchmark": "secagg", "model": MODEL, "ring_bits": RING_BITS, "clip": CLIP,
           "seed": args.seed, "quick": args.quick, "overhead_dropout": args.dropout,
           "max_full": args.max_full, "threads": torch.get_num_threads(),
           "correctness": corr, "overhead": over, "total_s": time.perf_counter() - t_start}
    emit(Console(width=230), [ct, ot], doc, args.json)


if __name__ == "__main__":
    main()
