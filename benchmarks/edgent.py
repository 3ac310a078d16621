"""Edgent: joint exit + device/edge partition under a latency requirement, static and dynamic.

Trains the Edgent digits CNN (three exits, sklearn's digits upsampled to 32x32, a few seconds
on CPU), profiles it once (regression latency predictions), then:

* static mode: for latency requirements from tight to loose and first-hop bandwidths 1, 5, 20
  and 100 Mbit/s, the chosen (exit, cut), its predicted latency, its EMULATED measured latency
  and its accuracy on the digits test split;
* dynamic mode: over bandwidth traces (the fleets' LTE trace and a generated step trace), the
  deadline-miss rate and mean accuracy of the dynamic selector vs the best static
  configuration for the trace's mean bandwidth (and the conservative one for its minimum).

EMULATION: the device (the default fleet's Raspberry Pi 4) is this host with its compute
stretched by time dilation (host GFLOP/s / device GFLOP/s x this thread's CPU time, busy-waiting:
edgeweave.runtime.dilation, as the runtime does);
the edge server is this host at full speed (so the prediction's edge tier is this host too);
the transfer is the actual tensor bytes / bandwidth + the link's RTT, computed, not sent.

    .venv/bin/python benchmarks/edgent.py [--epochs 6] [--repeats 15] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import secrets
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from _zoo import emit
from edgeweave.errors import PlanError
from edgeweave.graph import split
from edgeweave.plan.branchy import (
    STAGE_ORDER,
    BranchyProfile,
    digits_branchy,
    exit_graph,
    exit_placement,
    profile_branchy,
)
from edgeweave.plan.edgent import (
    EdgentOption,
    branches_from_profile,
    option_plan,
    plan_edgent,
    price_all,
)
from edgeweave.plan.edgent_dynamic import (
    EdgentSelector,
    bandwidth_states,
    build_config_map,
    replay,
)
from edgeweave.profile import retarget
from edgeweave.runtime import dilation as dilate
from edgeweave.runtime.bandwidth import BandwidthEstimator
from edgeweave.runtime.client import ClientOptions, CoInferenceClient
from edgeweave.runtime.edgent_client import EdgentClient
from edgeweave.runtime.node import ServeOptions, start_node
from edgeweave.runtime.server import NodeConfig
from edgeweave.runtime.session import host_tier_path
from edgeweave.topology import DEFAULT_FLEET, load_fleet, load_trace, transfer_ms
from edgeweave.topology.fleet import BUILTIN_FLEETS_DIR

MBPS = (1.0, 5.0, 20.0, 100.0)
SLO_FACTORS = (0.8, 1.2, 1.8, 2.5, 4.0)  # x the fastest option's predicted latency


def traced_stages(stages, placeholder, x):
    """Each stage as the traced TorchScript program the runtime executes on every tier (and the
    profiler's whole-model calibration times), warmed past TorchScript's specialising calls."""
    env, out = {placeholder: x}, {}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for key in ("device", "edge"):
            if key not in stages:
                continue
            s = stages[key]
            args = tuple(env[i] for i in s.inputs)
            out[key] = torch.jit.trace(s.module, args, check_trace=False)
            for _ in range(2):
                out[key](*args)
            env.update(zip(s.outputs, out[key](*args), strict=True))
    return out


def measure_option(bp: BranchyProfile, opt: EdgentOption, x: torch.Tensor, dilation: float,
                   repeats: int) -> tuple[float, float, int, int]:
    """Median emulated device ms, median edge ms, bytes up, bytes down of one (exit, cut)."""
    branch = bp.branches[opt.exit]
    stages = {s.key: s for s in split(bp.graph, exit_placement(bp.graph, branch, opt.cut),
                                      STAGE_ORDER)}
    placeholder, out_name = bp.graph.placeholders[0], bp.graph.outputs[opt.exit]
    dev_ms, edge_ms, up, down = [], [], 0, 0
    programs = traced_stages(stages, placeholder, x[:1])
    with torch.no_grad():
        for r in range(repeats + 2):  # two warm-up runs
            xi = x[r % len(x): r % len(x) + 1]
            env = {placeholder: xi}
            mark = dilate.start()
            if "device" in stages:
                s = stages["device"]
                env.update(zip(s.outputs, programs["device"](*(env[i] for i in s.inputs)),
                               strict=True))
            device = dilate.finish(mark, dilation)
            edge, up, down = 0.0, 0, 0
            if "edge" in stages:
                s = stages["edge"]
                up = sum(env[i].numel() * env[i].element_size() for i in s.inputs)
                t1 = time.thread_time()  # the profiler's clock: CPU time of this thread
                env.update(zip(s.outputs, programs["edge"](*(env[i] for i in s.inputs)),
                               strict=True))
                edge = 1e3 * (time.thread_time() - t1)
                down = env[out_name].numel() * env[out_name].element_size()
            if r >= 2:
                dev_ms.append(device)
                edge_ms.append(edge)
    return statistics.median(dev_ms), statistics.median(edge_ms), up, down


def static_sweep(bp, x, dilation, rtt_ms, repeats):
    fastest = min(o.latency_ms for o in price_all(bp.branches, max(MBPS)))
    slos = [round(f * fastest * 2) / 2 for f in SLO_FACTORS]
    cache: dict[tuple[int, int], tuple[float, float, int, int]] = {}
    rows = []
    for slo in slos:
        for mbps in MBPS:
            try:
                opt = plan_edgent(bp.branches, slo, mbps).chosen
            except PlanError as e:
                rows.append({"slo_ms": slo, "mbps": mbps, "feasible": False,
                             "error": str(e)})
                continue
            if opt.key not in cache:
                cache[opt.key] = measure_option(bp, opt, x, dilation, repeats)
            dev, edge, up, down = cache[opt.key]
            net = (transfer_ms(up, mbps, rtt_ms) if up else 0.0) + (
                transfer_ms(down, mbps, rtt_ms) if up else 0.0)
            measured = dev + net + edge
            rows.append({"slo_ms": slo, "mbps": mbps, "feasible": True, "exit": opt.exit,
                         "cut": opt.cut, "n_ops": opt.n_ops, "where": opt.where,
                         "accuracy": opt.accuracy, "predicted_ms": opt.latency_ms,
                         "measured_ms": measured, "measured_device_ms": dev,
                         "measured_edge_ms": edge, "transfer_ms": net, "up_bytes": up,
                         "measured_meets_slo": measured <= slo})
    return slos, rows


def step_trace(seconds: int, low: float, high: float, period: int, seed: int) -> list[float]:
    """1 s samples alternating between a low and a high bandwidth every ``period`` seconds,
    each sample jittered by +-20% (seeded): a Wi-Fi link that keeps losing and regaining
    signal."""
    rng = np.random.default_rng(seed)
    base = [low if (t // period) % 2 else high for t in range(seconds)]
    return [b * float(rng.uniform(0.8, 1.2)) for b in base]


def dynamic_runs(bp, slos, traces, per_second, states, seed):
    rows, maps = [], {}
    for tname, samples in traces.items():
        bw = [s for s in samples for _ in range(per_second)]  # requests follow the trace
        mean, low = float(np.mean(samples)), float(min(samples))
        st = bandwidth_states(samples, states)
        for slo in slos:
            cmap = build_config_map(bp.branches, st, slo)
            maps[f"{tname}@{slo:g}ms"] = cmap.to_json()
            policies = {"dynamic (Edgent map)": EdgentSelector(
                cmap, initial_mbps=bw[0], estimator=BandwidthEstimator(), confirm=2)}
            for label, at in (("static @ mean", mean), ("static @ min", low)):
                with contextlib.suppress(PlanError):  # infeasible there: no such static policy
                    policies[f"{label} {at:.3g} Mbit/s"] = plan_edgent(bp.branches, slo,
                                                                        at).chosen
            for name, policy in policies.items():
                out = replay(bp.branches, bw, slo, policy, name,
                             times=[i / per_second for i in range(len(bw))], noise=0.1,
                             seed=seed)
                cfg = (f"{len(out.switches)} state changes, "
                       f"{sum(s['config_changed'] for s in out.switches)} config switches"
                       if isinstance(policy, EdgentSelector) else policy.label())
                rows.append({"trace": tname, "slo_ms": slo, "config": cfg, **out.to_json()})
    return rows, maps


def runtime_runs(bp, slo, samples, per_sample, states, dilation, x):
    """The same comparison on the REAL runtime: an in-process edge server over gRPC, links
    shaped to each trace sample, the device dilated; EdgentClient vs a static client."""
    token = secrets.token_hex(16)
    server, _, port = start_node(NodeConfig("edge", "edge"),
                                 ServeOptions("127.0.0.1:0", token=token))
    target, hop = f"127.0.0.1:{port}", bp.profile.hop_names()[0]
    cmap = build_config_map(bp.branches, bandwidth_states(samples, states), slo)
    opts = ClientOptions(device_dilation=dilation)
    mean = float(np.mean(samples))
    rows = []
    try:
        policies = {"dynamic (EdgentClient)": EdgentClient(
            bp.graph, bp.branches, cmap, target, link_mbps=samples[0], token=token,
            options=opts)}
        with contextlib.suppress(PlanError):
            opt = plan_edgent(bp.branches, slo, mean).chosen
            branch = bp.branches[opt.exit]
            static = CoInferenceClient(exit_graph(bp.graph, branch),
                                       option_plan(branch, opt, mean, slo), target,
                                       token=token, options=opts)
            if static.deployment.route:
                static.deploy(x)
            policies[f"static @ mean {mean:.3g} Mbit/s: {opt.label()}"] = static
        for name, client in policies.items():
            edgent_client = isinstance(client, EdgentClient)
            for _ in range(2):  # TorchScript specialises on its first calls
                client.infer(x)
            lat, slow = [], []
            for b in samples:
                for _ in range(per_sample):
                    if edgent_client:
                        client.set_link_mbps(b)
                    else:
                        client.set_link_mbps(hop, b)
                    lat.append(client.infer(x).total_ms)
                    slow.append(b < mean)
            switches = client.switches if edgent_client else []
            rows.append({"policy": name, "slo_ms": slo, "requests": len(lat),
                         "miss_rate": float(np.mean([v > slo for v in lat])),
                         "median_ms": float(np.median(lat)), "p95_ms": float(np.percentile(
                             lat, 95)),
                         "slow_link_median_ms": float(np.median(
                             [v for v, w in zip(lat, slow, strict=True) if w])),
                         "fast_link_median_ms": float(np.median(
                             [v for v, w in zip(lat, slow, strict=True) if not w])),
                         "config_switches": sum(s["config_changed"] for s in switches)})
    finally:
        server.stop(0)
    return rows


def tables(static_rows, dyn_rows, dilation, rt_rows):
    t1 = Table(title="Edgent static mode: chosen (exit, cut) per latency requirement and "
                     f"bandwidth; MEASURED = EMULATED (device dilated x{dilation:.1f})")
    for col in ("SLO ms", "Mbit/s", "exit", "cut", "where", "pred ms", "meas ms",
                "meas <= SLO", "dev/net/edge ms", "acc %"):
        t1.add_column(col, justify="right")
    for r in static_rows:
        if not r["feasible"]:
            t1.add_row(f"{r['slo_ms']:g}", f"{r['mbps']:g}", "-", "-", "infeasible", "", "",
                       "", "", "")
            continue
        t1.add_row(f"{r['slo_ms']:g}", f"{r['mbps']:g}", str(r["exit"]),
                   f"{r['cut']}/{r['n_ops']}", r["where"], f"{r['predicted_ms']:.2f}",
                   f"{r['measured_ms']:.2f}", "yes" if r["measured_meets_slo"] else "NO",
                   f"{r['measured_device_ms']:.2f}/{r['transfer_ms']:.2f}/"
                   f"{r['measured_edge_ms']:.2f}", f"{100 * r['accuracy']:.1f}")
    t2 = Table(title="Edgent dynamic mode over bandwidth traces (one request per 0.1 s; cost "
                     "model latency at the actual bandwidth)")
    for col in ("trace", "SLO ms", "policy", "config", "miss %", "acc %", "mean ms"):
        t2.add_column(col, justify="right")
    for r in dyn_rows:
        t2.add_row(r["trace"], f"{r['slo_ms']:g}", r["policy"], r["config"],
                   f"{100 * r['miss_rate']:.1f}", f"{100 * r['mean_accuracy']:.1f}",
                   f"{r['mean_latency_ms']:.2f}")
    t3 = Table(title="the same on the REAL runtime (gRPC edge server in process, shaped link, "
                     "device dilated; MEASURED end to end)")
    for col in ("SLO ms", "policy", "requests", "miss %", "median ms", "p95 ms",
                "slow-link med", "fast-link med", "switches"):
        t3.add_column(col, justify="right")
    for r in rt_rows:
        t3.add_row(f"{r['slo_ms']:g}", r["policy"], str(r["requests"]),
                   f"{100 * r['miss_rate']:.1f}", f"{r['median_ms']:.2f}", f"{r['p95_ms']:.2f}",
                   f"{r['slow_link_median_ms']:.2f}", f"{r['fast_link_median_ms']:.2f}",
                   str(r["config_switches"]))
    return [t1, t2, t3]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=15, help="timed runs per option (median)")
    ap.add_argument("--states", type=int, default=4, help="bandwidth states of the map")
    ap.add_argument("--runtime-seconds", type=int, default=40,
                    help="step-trace samples replayed on the real runtime (0: skip)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    torch.set_num_threads(1)
    started = time.perf_counter()
    tb = digits_branchy(epochs=args.epochs, seed=args.seed)
    trained_s = time.perf_counter() - started
    fleet = load_fleet(DEFAULT_FLEET)
    bp = profile_branchy(tb.net, fleet, tb.accuracies, tb.input_shape, spec=tb.spec)
    host = float(bp.profile.model_extra["host"]["gflops"])
    device_hw = fleet.tier_path().nodes[0].hardware
    dilation = max(1.0, host / device_hw.gflops)
    # like for like: the edge server is this host, so predict it at this host's speed
    emulated = retarget(bp.profile, host_tier_path(fleet, None, host), fleet.name)
    bp = BranchyProfile(bp.graph, emulated, branches_from_profile(emulated, tb.accuracies))
    rtt = emulated.links[emulated.hop_names()[0]].rtt_ms

    slos, static_rows = static_sweep(bp, tb.data.x_test, dilation, rtt, args.repeats)
    lte = load_trace(BUILTIN_FLEETS_DIR / "lte-trace.csv")
    traces = {"lte-trace.csv": list(lte.mbps),
              "step 1.5/80 Mbit/s": step_trace(120, 1.5, 80.0, 15, args.seed)}
    dyn_slos = slos[1:4]
    dyn_rows, maps = dynamic_runs(bp, dyn_slos, traces, 10, args.states, args.seed)
    step = step_trace(args.runtime_seconds, 1.5, 80.0, 10, args.seed)
    rt_rows = [] if args.runtime_seconds == 0 else runtime_runs(
        bp, slos[3], step, 3, args.states, dilation, tb.data.x_test[:1])

    ok = [r for r in static_rows if r["feasible"]]
    err = [abs(r["measured_ms"] - r["predicted_ms"]) / r["predicted_ms"] for r in ok]
    doc = {"model": "edgent digits CNN", "exit_accuracy_test": tb.accuracies,
           "input_shape": list(tb.input_shape), "epochs": args.epochs, "seed": args.seed,
           "train_s": trained_s, "fleet": fleet.name, "device": device_hw.name,
           "host_gflops": host, "device_dilation": dilation, "rtt_ms": rtt,
           "slos_ms": slos, "mbps": list(MBPS), "static": static_rows,
           "median_abs_pred_error_pct": 100 * statistics.median(err) if err else math.nan,
           "dynamic": dyn_rows, "config_maps": maps, "load_avg_1m": os.getloadavg()[0],
           "note": "EMULATED: device = this host dilated by host/device GFLOP/s (busy wait); "
                   "edge = this host; transfer = actual tensor bytes / bandwidth + RTT, "
                   "computed. Dynamic-mode latencies are the cost model's at each request's "
                   "actual bandwidth; the selector sees each upload's throughput (10% noise) "
                   "or a 1.5 KB heartbeat when nothing is uploaded."}
    doc["runtime"] = {"trace": f"step 1.5/80 Mbit/s every 10 s, {args.runtime_seconds} s, "
                               "3 requests per sample", "rows": rt_rows}
    emit(Console(width=140), tables(static_rows, dyn_rows, dilation, rt_rows), doc, args.json)


if __name__ == "__main__":
    main()
