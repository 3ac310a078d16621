"""Edge serving under open-loop load: EdgeWeave's serving engine vs the node as it was (batch 1,
first come first served) vs Ray Serve with @serve.batch, side by side in one run.

For each model (ResNet-18 and MobileNetV2 at 224x224, and the digits tenants: five tasks
fine-tuned from one backbone, served as one shared-stem forest at the depths Mainstream chose)
one edge process per system serves it on this host's cores: EdgeWeave's node (`edgeweave
serve`, `--max-concurrency` workers of one intra-op thread, dynamic batching, EDF with deadline
shedding), the same node in its old mode (`--policy fifo --max-batch 1` with the old defaults:
4 requests at once, 16 waiting), and Ray Serve (`_serving_ray.py`, run by the interpreter that
has ray[serve], `--ray-python`: as many replicas as EdgeWeave has workers, one CPU and one
thread each, the same batch size, its `max_queued_requests` as load shedding). The load
generator (`edgeweave.serve.loadgen`, the same seeded Poisson arrivals for every system) plays
1000 devices; a request a system refuses is answered by its device's fallback (counted, not
timed). EdgeWeave's devices throttle themselves as its device client can (`--throttle`,
`runtime.throttle`: requests beyond that many times what the node has lately accepted are
answered by the device without a round trip, counted as throttled); the old node's and Ray
Serve's clients send everything. Every system's open loops are played by the same number of
sender processes (`--senders`): for Ray Serve, each is a Ray driver of its own calling the
application through its own handle; each run's worst sender lag is in the JSON
(`sender_lag_ms`), so a load generator that fell behind its schedule shows.

First the calibration, in `--capacity-rounds` rounds: the single-request latency on
EdgeWeave's node (SLO = `--slo-factor` x the median of the rounds' measures, never below
`--min-slo-ms`; one calm or busy moment set it before) and the most a system serves without
deadlines, closed loop (workers x max batch devices) or with its queues kept full (open loop at
three times that), EdgeWeave and Ray Serve taking turns in the same window (the order reversed
every other round), the median counting. Then the capacity that 100% load means
(`--capacity slo`, the default): MLPerf Inference's server scenario, the highest Poisson rate
at which a system answers 99% of the requests sent within the SLO, searched alike for every
system (`_serving_capacity.py`: bisection, the systems taking turns probe by probe); loads are
shares of the highest of them. The capacity without deadlines was the reference before
(`--capacity unconstrained`), and it is not one any system can serve within the SLO: measured
with ResNet-18, it is reached in batches of 8 that take longer than the SLO, while every batch
run under the SLO at "100%" and "200%" of it was of size 1 (see `_serving_capacity.py`).
Every measure is in the JSON, and both capacities are printed.
Then, for each load (50% ... 200% of that capacity), every system plays the same seeded
arrivals for `--duration` seconds in `--slices` parts, taking turns (A B, then B A), so a slow
spell of the host falls on every system alike; EdgeWeave with adaptive batching (AIMD against
half the SLO, Clipper) also runs at `--aimd-loads`. Each row: offered, throughput (answered),
goodput (answered within the deadline), p50/p99 of the answers, SLO attainment (answered in
time / sent), rejected (refused with a status), fallback (answered by the device), lost
(neither: must be 0). The summary compares the systems at the same p99 objective (the SLO): the most
throughput each reached at a load where its p99 stayed within the SLO. The shared-stems tables
(`benchmarks/shared_stems.py`, real training and test accuracy) compare the tenants' total
quality under Mainstream's choice, no sharing and max sharing at the same compute budgets.

Emulated hardware is explicit: `--dilation` (time dilation, `edgeweave.runtime.dilation`)
stretches each batch's compute on every system alike, and the tables and JSON say which model
ran dilated. By default only the digits tenants do (x30): at a few ms per request on this host
their serving is otherwise a measure of the RPC stack and the load generator, not of serving.
The stretch sleeps (the emulated hardware's time holds no host core and no GIL, in every
system), so the old node is given `--workers` requests at once on dilated models (its default
4 would emulate 4 slow processors where the others have `--workers`).

THE EDGE IS THIS HOST: every system under test runs on the same core(s) (`--serve-cores`,
default the last one: its node process, or Ray's GCS, raylet and replicas) and the load
generator on the others (the benchmark, its sender processes, Ray's driver and its senders),
capacity measures included (`_serving_cores`; what the kernel allows each process is read back
into the JSON, `cores`). Ray's own processes stay up, idle, while EdgeWeave runs, and the host
is shared with other work, so absolute figures are this machine's on the day; the systems are
compared under the same conditions, load level by load level.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
from pathlib import Path

from rich.console import Console

import _serving_capacity as capacity_at_slo
import _serving_cores as cores_of
import _serving_node_stats as node_view
import _serving_report as report
import _serving_runners as batch_runners
from _serving_dilation import dilation_note, dilations
from _serving_peer import CLIENTS, ROOT, RayPeer
from _serving_stems import TENANTS, served_model, shared_stems
from _zoo import emit
from edgeweave.runtime.lab import LocalLab
from edgeweave.runtime.loadgen_target import GrpcTarget
from edgeweave.runtime.whole_model import WholeModel
from edgeweave.serve import ServingConfig
from edgeweave.serve.loadgen import Fallback, Row, Run, SenderPool, open_loop, poisson
from edgeweave.serve.loadgen import summarize as summarize_run

MODELS = ("resnet18", "mobilenet_v2", "digits-tenants")
LOADS = (0.5, 0.8, 1.0, 1.5, 2.0)
HOST_NOTE = ("the edge is this host ({cores} cores): every system under test runs on core(s) "
             "{serve} (its node process, or Ray's GCS, raylet and replicas), the load "
             "generator (the benchmark, its senders, Ray's driver and senders) on {send}; "
             "Ray's processes stay up (idle) while the EdgeWeave nodes run; {dilation}")


def node_args(workers: int, max_batch: int, queue: int, factor: float
              ) -> dict[str, list[str]]:
    """Each node's flags. The old node computes 4 requests at once (its default); on emulated
    hardware (dilation) the stretch sleeps, so 4 at once would emulate 4 slow processors where
    EdgeWeave and Ray Serve get `workers`: there it gets `workers` too."""
    slow = ["--dilation", str(factor), "--summary-s", "0"]
    old = ["--max-concurrency", str(workers)] if factor > 1.0 else []
    return {"edgeweave": ["--max-concurrency", str(workers), "--max-batch", str(max_batch),
                          "--max-queue", str(queue), *slow],
            "fifo": ["--policy", "fifo", "--max-batch", "1", *old, *slow]}


#: How the SLO is set, said in the output and the JSON.
SLO_METHOD = ("SLO = {factor:g} x the median of {rounds} single-request latencies on "
              "EdgeWeave's node, one measured in each capacity round ({ms} ms), at least "
              "{floor:g} ms: {slo:.0f} ms")

def bench_model(wm: WholeModel, label: str, args, console: Console) -> tuple[list[Row], dict]:
    model, shape = wm.name, wm.graph.input_shape
    args_of = node_args(args.workers, args.max_batch, args.max_queue, args.dilation[label])
    systems = [s for s in args.systems.split(",") if s]
    with cores_of.spawning_on(args.serve_cores, args.sender_cores):
        labs = {s: LocalLab(roles=("edge",), extra_args={"edge": args_of[s]}).__enter__()
                for s in systems if s in args_of}
    ray = None
    pools: dict[str, SenderPool] = {}
    try:
        def target(system: str, throttle: float = 0.0) -> GrpcTarget:
            """A fresh device population: what one run learns of the node (its margins, its
            load, its throttle) does not carry into the next."""
            return GrpcTarget([labs[system].edge_target], [wm], labs[system].token,
                              seed=args.seed, throttle_k=throttle)

        targets = {s: target(s) for s in labs}
        if args.senders > 1:  # the open loops' sender processes, one pool per node
            pools = {s: SenderPool(t.sender_factory(), args.senders) for s, t in targets.items()}

        def play(system: str, arrivals, slo: dict[str, float], span: float) -> Run:
            """One open-loop run against `system`'s node by a fresh device population
            (EdgeWeave's devices throttle themselves, `--throttle`)."""
            k = args.throttle if system == "edgeweave" else 0.0
            if system in pools:
                return pools[system].open_loop(arrivals, slo, Fallback(), drain_s=args.drain_s,
                                               duration_s=span, throttle_k=k)
            return open_loop(target(system, k), arrivals, slo, Fallback(),
                             drain_s=args.drain_s, duration_s=span)

        fixed = ServingConfig(max_batch=args.max_batch, max_delay_ms=args.max_delay_ms)
        if "fifo" in targets:
            targets["fifo"].deploy(ServingConfig(max_batch=1))
        ew = targets["edgeweave"]
        ew.deploy(fixed)
        if "ray" in systems:
            with cores_of.spawning_on(args.serve_cores, args.sender_cores):
                ray = RayPeer(args.ray_python, model, shape, args.workers, args.max_batch,
                              args.max_queue, args.max_delay_ms / 1000.0,
                              args.dilation[label], args.seed, args.senders, args.sender_cores)
            console.print(f"ray serve up in {ray.ready['start_s']:.0f} s")
        load_before = os.getloadavg()[0]  # other processes on this host, if any
        measured, ones = capacity_at_slo.unconstrained(
            ew, ray, model, args.workers * args.max_batch, args.capacity_s,
            args.capacity_rounds, args.seed, CLIENTS, pools.get("edgeweave"))
        one_s = statistics.median(ones)
        unconstrained = statistics.median(measured["edgeweave"])
        slo_s = max(args.slo_factor * one_s, args.min_slo_ms / 1000.0)

        def probe(system: str, rate: float, seed: int) -> Run:
            """One capacity-search probe: `system` at `rate` for --slo-capacity-s."""
            span = args.slo_capacity_s
            if system == "ray":
                assert ray is not None
                return ray.run(rate, span, seed, slo_s, args.drain_s)
            return play(system, poisson({model: rate}, span, CLIENTS, seed), {model: slo_s},
                        span)

        capacity, at_slo = unconstrained, {}
        capacity_method = capacity_at_slo.UNCONSTRAINED_METHOD.format(
            rounds=args.capacity_rounds, seconds=args.capacity_s,
            both=("Ray Serve measured the same way in the same rounds, the systems "
                  "taking turns" if ray else "EdgeWeave only"))
        if args.capacity == "slo":
            high = 1.2 * max(statistics.median(v) for v in measured.values())
            at_slo = capacity_at_slo.at_slo(
                {s: functools.partial(probe, s) for s in systems}, high,
                args.slo_capacity_probes, args.seed)
            reference = max(at_slo, key=lambda s: at_slo[s].low)
            if at_slo[reference].low > 0:
                capacity = at_slo[reference].low
                capacity_method = capacity_at_slo.METHOD.format(
                    att=capacity_at_slo.ATTAINMENT, probes=args.slo_capacity_probes,
                    seconds=args.slo_capacity_s, high=high, systems=", ".join(systems),
                    reference=reference, capacity=capacity)
            else:
                capacity_method += (" (no system met the SLO at any rate probed: the capacity "
                                    "at the SLO could not be measured)")
            console.print(f"{label}: capacity at the SLO " + "; ".join(
                f"{s} {v.low:.1f} req/s (rate:attainment "
                f"{', '.join(f'{r:.1f}:{a:.0%}' for r, a in v.probes)})"
                for s, v in at_slo.items()), highlight=False)
        load_at_calibration = os.getloadavg()[0]
        slo_method = SLO_METHOD.format(factor=args.slo_factor, rounds=len(ones),
                                       ms=", ".join(f"{x * 1000:.0f}" for x in ones),
                                       floor=args.min_slo_ms,
                                       slo=slo_s * 1000)
        said = "; ".join(f"{s} {statistics.median(v):.1f} req/s (rounds "
                         f"{', '.join(f'{x:.1f}' for x in v)})" for s, v in measured.items())
        console.print(f"{label}: capacity {said}; {slo_method} (host load average "
                      f"{load_before:.1f} before, {load_at_calibration:.1f} after, on "
                      f"{os.cpu_count()} cores)", highlight=False)
        rows = []
        lags: dict[str, dict[str, float]] = {}  # system -> load -> its senders' worst lag (ms)
        misses: dict[str, dict[str, dict]] = {}  # system -> load -> why requests were missed
        nodes: dict[str, dict[str, dict]] = {}  # system -> load -> its node's batches, sheds
        for k, load in enumerate(float(x) for x in args.loads.split(",")):
            rate = load * capacity
            plays = [(s, None) for s in systems]
            if load in [float(x) for x in args.aimd_loads.split(",") if x]:
                plays.append(("edgeweave-aimd", ServingConfig(
                    max_batch=args.max_batch, max_delay_ms=args.max_delay_ms,
                    slo_ms=slo_s * 500.0, adaptive=True)))
            runs: dict[str, list[Run]] = {system: [] for system, _ in plays}
            seen: dict[str, list[dict]] = {}  # system -> what its node saw in each slice
            span = args.duration / args.slices
            for j in range(args.slices):  # the systems take turns, ABBA (see module doc)
                seed = args.seed + 100 * k + j
                arrivals = poisson({model: rate}, span, CLIENTS, seed)
                for system, knobs in (plays if j % 2 == 0 else plays[::-1]):
                    if system == "ray":
                        runs[system].append(ray.run(rate, span, seed, slo_s, args.drain_s))
                        continue
                    if knobs is not None:
                        ew.deploy(knobs)
                    node = targets["edgeweave" if knobs is not None else system]
                    before = node_view.snapshot(node)
                    runs[system].append(play("edgeweave" if knobs is not None else system,
                                             arrivals, {model: slo_s}, span))
                    seen.setdefault(system, []).append(
                        node_view.delta(before, node_view.snapshot(node)))
                    if knobs is not None:
                        ew.deploy(fixed)
            for system, parts in runs.items():
                run = Run([r for p in parts for r in p.records], args.duration,
                          max(p.lag_s for p in parts))
                (row,) = summarize_run(run, system, load)
                lags.setdefault(system, {})[f"{load:g}"] = run.lag_s * 1000.0
                misses.setdefault(system, {})[f"{load:g}"] = report.misses(run.records)
                row.model = label
                rows.append(row)
                if system in seen:
                    nodes.setdefault(system, {})[f"{load:g}"] = node_view.merge(seen[system])
                console.print(f"  {system:15s} {load:4.0%}: {row.throughput_rps:5.1f} req/s, "
                              f"goodput {row.goodput_rps:5.1f}, p99 {row.p99_ms:6.0f} ms, "
                              f"SLO {row.slo_attainment:6.1%}, rejected {row.rejected}, "
                              f"throttled {row.throttled}, lost {row.lost}, "
                              f"sender lag {run.lag_s * 1000:.0f} ms, "
                              f"host load {os.getloadavg()[0]:.1f}", highlight=False)
                if system in seen:
                    console.print(f"  {'':15s} node: {node_view.said(nodes[system][f'{load:g}'])}",
                                  highlight=False)
        info = {"one_request_ms": one_s * 1000,
                "one_request_rounds_ms": [x * 1000 for x in ones], "slo_method": slo_method,
                "capacity_rps": capacity,
                "capacity_definition": args.capacity,
                "capacity_method": capacity_method,
                "capacity_unconstrained_rps": unconstrained,
                "capacity_rounds_rps": measured,
                "capacity_at_slo_rps": {s: v.low for s, v in at_slo.items()},
                "capacity_at_slo_probes": {s: v.probes for s, v in at_slo.items()},
                "sender_lag_ms": lags,
                "misses": misses,
                "node": nodes,
                "host_load_avg_1m_at_calibration": load_at_calibration,
                "host_load_avg_1m_after": os.getloadavg()[0],
                "slo_ms": slo_s * 1000, "ray_start_s": ray.ready["start_s"] if ray else None,
                "cores": cores_of.pinned(labs, ray, pools)}
        return rows, info
    finally:
        for pool in pools.values():
            pool.close()
        if ray is not None:
            ray.close()
        for lab in labs.values():
            lab.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None, help="goodput and p99 against load")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--systems", default="edgeweave,fifo,ray")
    ap.add_argument("--loads", default=",".join(map(str, LOADS)))
    ap.add_argument("--aimd-loads", default="1.0,1.5",
                    help="loads at which EdgeWeave also runs with adaptive batching")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per load level")
    ap.add_argument("--drain-s", type=float, default=30.0)
    ap.add_argument("--capacity-s", type=float, default=5.0,
                    help="seconds per capacity measure (each of --capacity-rounds)")
    ap.add_argument("--capacity-rounds", type=int, default=3,
                    help="capacity measured this many times per system, systems in turn; "
                         "the median counts")
    ap.add_argument("--capacity", choices=("slo", "unconstrained"), default="slo",
                    help="what 100%% load is: 'slo' the highest Poisson rate a system "
                         "sustains answering 99%% of requests within the SLO (MLPerf's "
                         "server scenario; the highest over the systems, each searched "
                         "alike), 'unconstrained' the most EdgeWeave serves without "
                         "deadlines")
    ap.add_argument("--slo-capacity-s", type=float, default=8.0,
                    help="seconds per probe of the capacity search at the SLO")
    ap.add_argument("--slo-capacity-probes", type=int, default=5,
                    help="bisection steps of the capacity search at the SLO")
    ap.add_argument("--slices", type=int, default=2,
                    help="each load level is played in this many parts, the systems taking "
                         "turns (ABBA), so slow spells of a shared host hit every system")
    ap.add_argument("--workers", type=int, default=None,
                    help="EdgeWeave workers and Ray replicas (one thread each; default: one "
                         "per serving core)")
    ap.add_argument("--serve-cores", default=None,
                    help="the cores every system under test runs on, alike (its node process, "
                         "or Ray's processes), e.g. 1 or 2-3; the load generator (this "
                         "process, its senders, Ray's driver and senders) runs on the others "
                         "(default: the last core serves, the rest send)")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--max-delay-ms", type=float, default=0.0)
    ap.add_argument("--max-queue", type=int, default=32)
    ap.add_argument("--slo-factor", type=float, default=5.0,
                    help="SLO = this x the single-request latency on EdgeWeave's node")
    ap.add_argument("--min-slo-ms", type=float, default=100.0,
                    help="the SLO is never below this (a model of a few ms is served over RPC "
                         "on a shared host: its SLO cannot be 5x its compute)")
    ap.add_argument("--throttle", type=float, default=1.5,
                    help="EdgeWeave's devices keep back what the node has been refusing, "
                         "sending it at most this many times what it accepts (client-side "
                         "throttling, runtime.throttle; 0: off); the old node's and Ray "
                         "Serve's clients do not")
    ap.add_argument("--senders", type=int, default=2,
                    help="sender processes playing each open loop, for every system alike (1: "
                         "the driver's own process; for Ray Serve, each a Ray driver with its "
                         "own handle)")
    ap.add_argument("--runners", action="store_true",
                    help="also time eager vs traced batch runners")
    ap.add_argument("--ray-python", default=None,
                    help="interpreter with ray[serve] (default .venv-peers/bin/python)")
    ap.add_argument("--dilation", default=None,
                    help="emulate a slower edge by time dilation, on every system alike: "
                         "FACTOR for every model or MODEL=FACTOR,... (1 = this host's speed; "
                         "by default the digits tenants, a few ms here, run 30x slower so "
                         "that their compute, not this host's RPC stack, is what is served)")
    ap.add_argument("--quick-stems", action="store_true",
                    help="train the digits tenants small and fast (less accurate)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    venv = ROOT / ".venv-peers" / "bin" / "python"
    args.ray_python = args.ray_python or str(venv if venv.exists() else sys.executable)
    if "ray" in args.systems.split(",") and subprocess.run(
            [args.ray_python, "-c", "import ray.serve"], capture_output=True).returncode:
        ap.error(f"Ray Serve cannot be imported by {args.ray_python}: set up .venv-peers "
                 "(./run peers), give --ray-python, or leave it out (--systems edgeweave,fifo)")
    console = Console(width=150, stderr=True)
    cores = os.cpu_count()
    models = [m for m in args.models.split(",") if m]
    default = f"{TENANTS}=30" if TENANTS in models else "1"
    args.dilation = dilations(args.dilation or default, models)
    args.serve_cores, args.sender_cores = cores_of.split(args.serve_cores,
                                                         os.sched_getaffinity(0))
    args.workers = args.workers or len(args.serve_cores)
    note = HOST_NOTE.format(cores=cores, serve=cores_of.fmt(args.serve_cores),
                            send=cores_of.fmt(args.sender_cores),
                            dilation=dilation_note(args.dilation))
    console.print(note, highlight=False)
    if args.serve_cores == args.sender_cores:
        console.print("one core only: the systems and the load generator share it",
                      highlight=False)
    stems, stem_tables, stem_out = None, [], []
    if TENANTS in models:
        stems, stem_tables, stem_out = shared_stems(args.quick_stems, args.seed, console)
    rows, infos = [], {}
    cores_of.pin(os.getpid(), args.sender_cores)  # what it starts runs there (see bench_model)
    for model in models:
        got, infos[model] = bench_model(served_model(model, args.image_size, stems), model,
                                        args, console)
        rows += got
    summary_table, summary_rows, goals = report.summary(rows, infos)
    goals += report.stem_goals(stem_out)
    tables = [report.rows_table(rows, note), summary_table, *stem_tables]
    runners = []
    if args.runners:
        for model in [m for m in models if m != TENANTS]:
            runners += batch_runners.runner_times(model, (1, 3, args.image_size, args.image_size),
                                    (1, 2, 4, 8), 3)
        tables.append(batch_runners.runners_table(runners))
    doc = {"host": {"cores": cores, "note": note, "dilation": args.dilation,
                    "serve_cores": sorted(args.serve_cores),
                    "sender_cores": sorted(args.sender_cores),
                    "load_avg_1m": os.getloadavg()[0]},
           "config": {k: sorted(v) if isinstance(v, set) else v for k, v in vars(args).items()
                      if k not in ("json", "plot")},
           "models": infos, "rows": [r.as_json() for r in rows], "summary": summary_rows,
           "goals": goals, "runners": runners, "shared_stems": stem_out}
    emit(Console(width=150), tables, doc, args.json)
    for line in goals:
        print(line)
    if args.plot:
        from edgeweave.serve.loadgen.plot import plot_sweep

        print(f"plot written to {plot_sweep(rows, args.plot)}")


if __name__ == "__main__":
    main()
