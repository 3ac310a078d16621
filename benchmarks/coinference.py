"""Co-inference across real processes: predicted vs measured, overhead, speedups, adaptation.

Edge and cloud are `edgeweave serve` OS processes on loopback; the device is this process. The
Raspberry Pi 4 device is emulated by time dilation of its compute (factor printed); edge and
cloud run at this host's speed and the planner is told so. Links are shaped in the application
(token bucket + RTT/2 per direction) to the fleet's rates, bandwidth overridden per row; the
real loopback transfer happens inside the emulated link time (`edgeweave.runtime.flight`).

Two predictions per row: the plan's, made once from the profile before the run, and the
runtime's online one, made before each request from the plan with each tier's compute scaled
by its load factor (measured / predicted compute on earlier requests; Neurosurgeon's load
factor). The host's speed drifts over seconds (printed), which only the second can follow.

    .venv/bin/python benchmarks/coinference.py [--models ...] [--requests 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from _zoo import emit
from edgeweave.graph import capture_spec
from edgeweave.profile import profile_graph
from edgeweave.profile.build import calibration_samples
from edgeweave.profile.measure import IDLE_S
from edgeweave.runtime.client import ClientOptions, CoInferenceClient
from edgeweave.runtime.lab import LocalLab
from edgeweave.runtime.load import LoadFactors
from edgeweave.runtime.session import RunSummary, device_dilation, plan_for
from edgeweave.topology import DEFAULT_FLEET, load_fleet

MODELS = ["alexnet", "vgg16", "resnet18", "mobilenet_v2"]
BANDWIDTHS = (1.0, 5.0, 20.0, 100.0)
NEUROSURGEON_AVG_SPEEDUP = 3.1
NOTE = ("EMULATED: device = Raspberry Pi 4 by time dilation of this host's compute; edge and "
        "cloud = separate server processes at this host's speed; links shaped in the "
        "application (token bucket + RTT/2 each way) on loopback, the real transfer inside "
        "the emulated link time.")


def floor_ms(summary, chosen) -> float:
    """Measured compute + bytes/bandwidth + RTT for each hop used: the physical minimum."""
    seg = summary.median_segments()
    total = sum(v for k, v in seg.items() if k.endswith("_compute"))
    for hop, v in chosen.predicted["hops"].items():
        link = chosen.links[hop]
        for direction in ("up", "down"):
            if v[f"{direction}_ms"] > 0:
                total += link.rtt_ms / 2 + v[f"{direction}_bytes"] * 8 / (link.mbps * 1000)
    return total


def host_drift(seconds=6.0, window=0.5):
    """How much this host's single-thread speed moves over seconds: the reference convolution's
    median CPU time per half-second window, max/min."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False).eval()
    x = torch.randn(1, 64, 56, 56)
    medians = []
    with torch.inference_mode():
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ts, stop = [], time.monotonic() + window
            while time.monotonic() < stop:
                t0 = time.thread_time()
                conv(x)
                ts.append(time.thread_time() - t0)
            medians.append(statistics.median(ts) * 1000)
    return {"windows": len(medians), "min_ms": min(medians), "max_ms": max(medians),
            "max_over_min": max(medians) / min(medians)}


def variant(chosen, mode):
    """The chosen plan, or one of its recorded alternatives (device-only, edge-only)."""
    return chosen if mode == "chosen" else chosen.priced(mode=mode)


def interleaved(configs, lab, graph, x, dilation, requests):
    """Run every configuration's requests round-robin, one request each per round.

    This host's speed drifts by 20-40% over seconds (a shared VM: `benchmarks/coinference.py`
    notes measured drift in its output). Run one row after another and each row samples a
    different phase of the drift; round-robin, every row's median covers the same long window,
    as the profile's many repeats do, so predicted and measured see the same host.

    The clients share one set of load factors: they emulate one device using one edge, so each
    request's measured compute tells all of them how fast the tiers are right now."""
    clients = {}
    load = LoadFactors()
    for key, (p, prof) in configs.items():
        opts = ClientOptions(device_dilation=dilation)
        c = CoInferenceClient(graph, p, lab.edge_target, token=lab.token, options=opts,
                              profile=prof, load=load)
        if c.deployment.route:
            c.deploy(x)
        for _ in range(2):  # TorchScript specialises on its first calls
            c.infer(x)
        clients[key] = c
    results = {key: [] for key in configs}
    for _ in range(requests):
        for key, c in clients.items():
            results[key].append(c.infer(x))
    return {key: RunSummary(clients[key].deployment.plan, results[key], dilation,
                            clients[key].switches) for key in configs}, load


def model_rows(name, lab, requests, fleet, codecs=("none",), calibration=None, idle_s=IDLE_S):
    graph = capture_spec(name)
    # medians over many repeats spread over seconds: the host's speed drifts (see interleaved)
    measured = profile_graph(graph, fleet, warmup=3, repeats=30, calibration=calibration,
                             idle_s=idle_s)
    x = torch.randn(graph.input_shape, generator=torch.Generator().manual_seed(0))
    dilation = device_dilation(measured, fleet)
    configs, chosen_at = {}, {}
    for mbps in BANDWIDTHS:
        prof, chosen = plan_for(measured, fleet, mbps=mbps, codecs=codecs)
        chosen_at[mbps] = (prof, chosen)
        configs.setdefault(("device-only", None), (variant(chosen, "device-only"), prof))
        for mode in ("chosen", "edge-only"):
            p = variant(chosen, mode)
            if p.mode == "device-only":
                continue  # bandwidth-independent: the one device-only run serves
            configs.setdefault((p.mode, mbps), (p, prof))
    runs, load = interleaved(configs, lab, graph, x, dilation, requests)
    device_only = runs[("device-only", None)]
    rows = []
    for mbps in BANDWIDTHS:
        prof, chosen = chosen_at[mbps]
        summary = runs.get((chosen.mode, mbps), device_only)
        edge_only = runs[("edge-only", mbps)]
        measured_ms = summary.median_ms
        floor = floor_ms(summary, chosen)
        # the runtime's own prediction for each request, made before it ran: the plan's, with
        # each tier's compute scaled by its load factor as measured on earlier requests
        online = statistics.median(r.predicted_now_ms for r in summary.results)
        per_request = statistics.median(abs(r.total_ms - r.predicted_now_ms) / r.predicted_now_ms
                                        for r in summary.results) * 100
        rows.append({
            "model": name, "mbps": mbps, "mode": chosen.mode, "dilation": summary.dilation,
            "predicted_ms": chosen.predicted["total_ms"], "measured_ms": measured_ms,
            "error_pct": (measured_ms - chosen.predicted["total_ms"])
            / chosen.predicted["total_ms"] * 100,
            "predicted_online_ms": online,
            "error_online_pct": (measured_ms - online) / online * 100,
            "median_request_error_online_pct": per_request,
            "load_factors_at_end": load.scaled(),
            "floor_ms": floor, "overhead_ms": measured_ms - floor,
            "overhead_pct": (measured_ms - floor) / floor * 100,
            "device_only_ms": device_only.median_ms, "edge_only_ms": edge_only.median_ms,
            "speedup_vs_device": device_only.median_ms / measured_ms,
            "speedup_vs_edge": edge_only.median_ms / measured_ms,
            "cuts": chosen.cuts,
            "segments_measured": summary.median_segments(),
            "segments_predicted": summary.results[-1].predicted,
        })
        print(f"{name} @ {mbps:g} Mbit/s: {chosen.mode} predicted "
              f"{rows[-1]['predicted_ms']:.1f} (online {online:.1f}) measured "
              f"{measured_ms:.1f} ms", flush=True)
    return rows


def bandwidth_step(lab, fleet, before=50.0, after=2.0, requests=12):
    graph = capture_spec("alexnet")
    measured = profile_graph(graph, fleet, warmup=1, repeats=3)
    prof, chosen = plan_for(measured, fleet, mbps=before)
    client = CoInferenceClient(graph, chosen, lab.edge_target, token=lab.token, profile=prof,
                               options=ClientOptions(adapt=True,
                                                     device_dilation=device_dilation(
                                                         measured, fleet)))
    x = torch.randn(graph.input_shape)
    client.deploy(x)
    client.infer(x)
    pre = [client.infer(x).total_ms for _ in range(requests // 2)]
    client.set_link_mbps("device-edge", after)
    post, switched_at = [], None
    for i in range(requests):
        r = client.infer(x)
        post.append((r.total_ms, r.plan_mode))
        if switched_at is None and any(s["switched"] for s in client.switches):
            switched_at = i + 1
    settled = [ms for ms, _ in post[switched_at:]] if switched_at else []
    return {
        "model": "alexnet", "before_mbps": before, "after_mbps": after,
        "mode_before": chosen.mode, "mode_after": client.deployment.plan.mode,
        "requests_until_replan": switched_at,
        "median_ms_before": statistics.median(pre),
        "median_ms_after_replan": statistics.median(settled) if settled else None,
        "first_ms_after_step": post[0][0], "switches": client.switches,
    }


def throughput(lab, fleet, clients=(1, 8), seconds=6.0):
    graph = capture_spec("resnet18")
    measured = profile_graph(graph, fleet, warmup=1, repeats=3)
    _, chosen = plan_for(measured, fleet, mbps=1000.0)
    edge_only = chosen.model_copy(update={"placement": chosen.alternative("edge-only").placement})
    x = torch.randn(graph.input_shape)
    out = {}
    for n in clients:
        cs = [CoInferenceClient(graph, edge_only, lab.edge_target, token=lab.token,
                                options=ClientOptions(shape_bandwidth=False)) for _ in range(n)]
        for c in cs:
            c.deploy(x)
            c.infer(x)
        done = [0] * n
        stop = time.monotonic() + seconds
        threads = [threading.Thread(target=_loop, args=(c, x, stop, done, i))
                   for i, c in enumerate(cs)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out[n] = sum(done) / (time.monotonic() - start)
    return {"model": "resnet18", "placement": "edge-only", "requests_per_s": out}


def _loop(client, x, stop, done, i) -> None:
    while time.monotonic() < stop:
        client.infer(x)
        done[i] += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--requests", type=int, default=10)
    ap.add_argument("--codec", default="none", help="candidate cut codecs, comma-separated")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--idle-ms", type=float, default=IDLE_S * 1000,
                    help="profiler's idle gap before each timed run (0 = back to back)")
    ap.add_argument("--rows-only", action="store_true",
                    help="skip the bandwidth step and the throughput runs")
    args = ap.parse_args()
    torch.set_num_threads(1)  # the profile was measured on one thread; so is the device
    fleet = load_fleet(DEFAULT_FLEET)
    console = Console(width=150)
    drift = host_drift()
    with LocalLab(extra_args={"edge": ["--max-concurrency", "2"]}) as lab:
        codecs = tuple(args.codec.split(","))
        calib = calibration_samples()
        rows = [r for m in args.models
                for r in model_rows(m, lab, args.requests, fleet, codecs, calib,
                                    args.idle_ms / 1000)]
        step = None if args.rows_only else bandwidth_step(lab, fleet)
        tput = None if args.rows_only else throughput(lab, fleet)
    table = Table(title="co-inference, measured across processes (median per row)")
    for col in ("model", "Mbit/s", "mode", "predicted ms", "measured ms", "error %",
                "pred. online", "error %", "floor ms", "overhead", "x vs device", "x vs edge"):
        table.add_column(col, justify="left" if col in ("model", "mode") else "right")
    for r in rows:
        table.add_row(r["model"], f"{r['mbps']:g}", r["mode"], f"{r['predicted_ms']:.1f}",
                      f"{r['measured_ms']:.1f}", f"{r['error_pct']:+.1f}",
                      f"{r['predicted_online_ms']:.1f}", f"{r['error_online_pct']:+.1f}",
                      f"{r['floor_ms']:.1f}",
                      f"{r['overhead_ms']:.1f} ms ({r['overhead_pct']:.1f}%)",
                      f"{r['speedup_vs_device']:.2f}", f"{r['speedup_vs_edge']:.2f}")
    summary = {
        "max_abs_error_pct": max(abs(r["error_pct"]) for r in rows),
        "rows_within_10pct": sum(abs(r["error_pct"]) <= 10 for r in rows),
        "max_abs_error_online_pct": max(abs(r["error_online_pct"]) for r in rows),
        "rows_within_10pct_online": sum(abs(r["error_online_pct"]) <= 10 for r in rows),
        "rows_overhead_ok": sum(r["overhead_ms"] <= max(2.0, 0.05 * r["floor_ms"])
                                for r in rows),
        "rows": len(rows),
        "profile_idle_ms": args.idle_ms,
        "mean_speedup_vs_device": statistics.mean(r["speedup_vs_device"] for r in rows),
        "neurosurgeon_avg_speedup": NEUROSURGEON_AVG_SPEEDUP,
        "mean_speedup_vs_edge": statistics.mean(r["speedup_vs_edge"] for r in rows),
    }
    console.print(f"summary: {summary}")
    console.print(f"host speed drift (reference conv, 0.5 s windows over 6 s): {drift}")
    console.print(f"bandwidth step: {step}")
    console.print(f"server throughput: {tput}")
    console.print(NOTE)
    emit(console, [table], {"benchmark": "coinference", "rows": rows, "summary": summary,
                            "bandwidth_step": step, "throughput": tput, "host_drift": drift,
                            "note": NOTE},
         args.json)


if __name__ == "__main__":
    main()
