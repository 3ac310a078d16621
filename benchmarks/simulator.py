"""The fleet simulator: scale, fidelity against the real runtime, and the operator's question.

* **Scale**: wall time, CPU time and peak memory to simulate the city scenario
  (examples/sim/city.yaml: phones and cameras sending a request every 5 s while active, over
  48 shared cells, 12 edge servers and a cloud) for 1,000 / 5,000 / 10,000 devices x 30 min,
  and 1,000 devices x 10 / 60 min; each row in its own process, so its peak RSS is its own.
* **Fidelity**: the simulator against `edgeweave serve` processes on this host with the same
  Plan, link shaping, dilation and arrival times (`edgeweave.sim.validate`): one
  device-edge-cloud chain, four devices sharing one edge, a bandwidth step; each simulated
  tier at the speed the runtime measured through the timed run (its requests' stage compute
  times, nothing else of them) with their spread, plus the runtime's per-hop cost measured in
  requests sent one at a time before and after it (a warm-up and a cool-down); beside it,
  calibrated by the warm-up and cool-down alone ("around") and from the Plan's figures; edge
  and cloud batch what is queued as the real nodes' serving engines do, at the batch cost
  measured on the edge stage ("batch marginal": one more request's share of one request).
* **The operator's question** on the campus scenario (examples/sim/campus.yaml): service time
  and failure rate vs devices for every policy (a sweep, as Ray tasks unless --serial), and the
  federated run's rounds- and time-to-accuracy with and without the devices' inference load
  (flat FedAvg and hierarchical), with what training costs inference.

The fidelity rows expect `validate.ROW_REQUESTS` (400) timed requests each, about 17
minutes for the three; `--fidelity-requests 120` takes about 6 but leaves the p95 error's
interval near +-15%. `--fidelity-records F` writes each request's latencies and segments.

    .venv/bin/python benchmarks/simulator.py --json sim.json [--skip-fidelity] [--serial]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from _sim_training import training, training_means
from _zoo import emit

ROOT = Path(__file__).resolve().parent.parent
CITY = ROOT / "examples" / "sim" / "city.yaml"
CAMPUS = ROOT / "examples" / "sim" / "campus.yaml"
SCALE = [(1000, 30), (5000, 30), (10000, 30), (1000, 10), (1000, 60)]
CAMPUS_DEVICES = [100, 500, 1000, 2000]


def scale_row(devices: int, minutes: float, scenario: Path) -> dict[str, Any]:
    """One scale row, measured in this process (run by `scale` in a fresh subprocess)."""
    from edgeweave.sim.run import simulate
    from edgeweave.sim.scenario import load_scenario

    scn = load_scenario(scenario).with_devices(devices).model_copy(
        update={"duration_s": minutes * 60.0})
    t0, c0 = time.perf_counter(), time.process_time()
    run = simulate(scn, training=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    s = run.summary
    return {"devices": devices, "sim_minutes": minutes, "wall_s": wall, "cpu_s": cpu,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "requests": s["requests"], "events": s["events"], "events_per_s": s["events"] / wall,
            "us_per_request_cpu": cpu / max(s["requests"], 1) * 1e6,
            "planner_calls": run.sim.pricing.replans, "policy": s["policy"],
            "load_average": list(os.getloadavg()),  # this host is shared: CPU and wall move
            "service_p50_ms": s["service_ms"]["p50"], "failure_rate": s["failure_rate"]}


def scale(console: Console, rows: list[tuple[int, float]], scenario: Path) -> list[dict]:
    out = []
    for devices, minutes in rows:
        res = subprocess.run([sys.executable, __file__, "--scale-row", str(devices), str(minutes),
                              "--scenario", str(scenario)], capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"scale row {devices} x {minutes} min failed:\n{res.stderr[-2000:]}")
        row = json.loads(res.stdout.strip().splitlines()[-1])
        console.print(f"scale: {devices} devices x {minutes:g} min: {row['wall_s']:.1f} s wall, "
                      f"{row['cpu_s']:.1f} s CPU, {row['peak_rss_mb']:.0f} MB, "
                      f"{row['requests']} requests", highlight=False)
        out.append(row)
    return out


def growth(rows: list[dict]) -> dict[str, Any]:
    """How cost grows, fitted on the rows: CPU time ~ devices^a over the rows sharing the
    most common simulated time, ~ minutes^b over those sharing a device count (least squares
    on logs; 1.0 is linear), CPU seconds per million requests (constant = linear in
    requests, i.e. in devices x simulated time), and peak RSS as a fixed part plus MB per
    1,000 devices and per simulated hour (least squares)."""
    per = [r["cpu_s"] / r["requests"] * 1e6 for r in rows if r["requests"]]
    out: dict[str, Any] = {"cpu_s_per_million_requests": per,
                           "spread": (max(per) - min(per)) / min(per) if per else None,
                           "cpu_exponent_devices": None, "cpu_exponent_minutes": None,
                           "rss_mb_fixed": None, "rss_mb_per_1000_devices": None,
                           "rss_mb_per_sim_hour": None}

    def series(key: str, fixed: str) -> list[dict]:
        groups: dict[float, list[dict]] = {}
        for r in rows:
            groups.setdefault(r[fixed], []).append(r)
        best = max(groups.values(), key=len, default=[])
        return best if len({r[key] for r in best}) >= 2 else []

    by_devices, by_minutes = series("devices", "sim_minutes"), series("sim_minutes", "devices")
    if by_devices:
        x = np.log([r["devices"] for r in by_devices])
        out["cpu_exponent_devices"] = float(np.polyfit(x, np.log([r["cpu_s"] for r in
                                                                  by_devices]), 1)[0])
        slope, fixed = np.polyfit([r["devices"] for r in by_devices],
                                  [r["peak_rss_mb"] for r in by_devices], 1)
        out.update(rss_mb_fixed=float(fixed), rss_mb_per_1000_devices=float(slope * 1000))
        out["devices_at_minutes"] = by_devices[0]["sim_minutes"]
    if by_minutes:
        x = np.log([r["sim_minutes"] for r in by_minutes])
        out["cpu_exponent_minutes"] = float(np.polyfit(x, np.log([r["cpu_s"] for r in
                                                                  by_minutes]), 1)[0])
        out["minutes_at_devices"] = by_minutes[0]["devices"]
        out["rss_mb_per_sim_hour"] = float(np.polyfit(
            [r["sim_minutes"] / 60.0 for r in by_minutes],
            [r["peak_rss_mb"] for r in by_minutes], 1)[0])
    return out


def growth_statement(g: dict[str, Any]) -> str:
    """The growth fit in one sentence, from the measured rows."""
    parts = []
    if g["cpu_exponent_devices"] is not None:
        parts.append(f"CPU time grows as devices^{g['cpu_exponent_devices']:.2f} "
                     f"(at {g['devices_at_minutes']:g} simulated min)")
    if g["cpu_exponent_minutes"] is not None:
        parts.append(f"as simulated minutes^{g['cpu_exponent_minutes']:.2f} "
                     f"(at {g['minutes_at_devices']} devices)")
    if g["spread"] is not None:
        per = g["cpu_s_per_million_requests"]
        parts.append(f"{min(per):.1f}-{max(per):.1f} CPU s per million requests "
                     f"(spread {100 * g['spread']:.0f}%)")
    if g["rss_mb_per_1000_devices"] is not None:
        parts.append(f"peak RSS {g['rss_mb_fixed']:.0f} MB + "
                     f"{g['rss_mb_per_1000_devices']:.0f} MB per 1,000 devices")
    if g["rss_mb_per_sim_hour"] is not None:
        parts.append(f"{g['rss_mb_per_sim_hour']:+.0f} MB per simulated hour "
                     f"(at {g['minutes_at_devices']} devices)")
    return "scale: " + "; ".join(parts) if parts else "scale: too few rows to fit growth"


def fidelity(console: Console, requests: int | None, records: Path | None = None,
             cases: list[str] | None = None) -> list[dict]:
    """The validation's rows, each case sized to ``requests`` timed requests (imported here:
    the validation pulls in torch, which the scale rows' measured RSS must not hold)."""
    import dataclasses

    from edgeweave.sim.validate import CASES, ROW_REQUESTS, measure, validate

    requests = requests or ROW_REQUESTS
    rows, per_request = [], {}
    alexnet = measure("alexnet")
    for name in cases or list(CASES):
        case = dataclasses.replace(CASES[name], requests=requests)
        f = validate(case, alexnet)
        per_request[name] = f.records
        row = {**f.row(), "load_average": list(os.getloadavg())}
        console.print(f"fidelity {name} ({row['requests']} requests, load "
                      f"{row['load_average'][0]:.1f}): sim p50 {row['sim_p50_ms']:.1f} vs real "
                      f"{row['real_p50_ms']:.1f} ms ({100 * row['err_p50']:+.1f}%), p95 "
                      f"{row['sim_p95_ms']:.1f} vs {row['real_p95_ms']:.1f} "
                      f"({100 * row['err_p95']:+.1f}%, {100 * row['ci_level']:.0f}% interval "
                      f"{_pct(row['err_p95_ci'])}); calibrated beside the run only "
                      f"{100 * row['around_err_p50']:+.1f}%/{100 * row['around_err_p95']:+.1f}%",
                      highlight=False)
        rows.append(row)
    if records is not None:
        records.write_text(json.dumps(per_request, indent=1))
        console.print(f"fidelity: per-request records in {records}", highlight=False)
    return rows


def fidelity_cases(ap: argparse.ArgumentParser, text: str | None) -> list[str] | None:
    """``--fidelity-cases``: names of `sim.validate.CASES` (None: all)."""
    if text is None:
        return None
    from edgeweave.sim.validate import CASES

    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown or not names:
        ap.error(f"--fidelity-cases {text}: expected a comma list of {', '.join(CASES)}")
    return names


def _pct(ci: list[float]) -> str:
    return f"[{100 * ci[0]:+.1f}%, {100 * ci[1]:+.1f}%]"


def _batches(sizes: dict[str, int]) -> str:
    return " ".join(f"{b}:{k}" for b, k in sizes.items()) or "-"


def operator(console: Console, serial: bool, minutes: float, seeds: list[int],
             devices: list[int]) -> list[dict]:
    from edgeweave.sim.policies import list_policies
    from edgeweave.sim.scenario import load_scenario
    from edgeweave.sim.sweep import sweep

    scn = load_scenario(CAMPUS).model_copy(update={"duration_s": minutes * 60.0})
    t0 = time.perf_counter()
    rows = sweep(scn, devices, list_policies(), seeds, ray=not serial)
    console.print(f"campus sweep: {len(rows)} runs in {time.perf_counter() - t0:.0f} s")
    return rows


def _f(v: Any, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def _change(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:+.1f}%"


def tables(scale_rows, fid_rows, sweep_rows, train_rows) -> list[Table]:
    out = []
    t = Table(title="scale: city scenario, edgeweave policy, one process per row")
    for col in ("devices", "sim min", "requests", "wall s", "CPU s", "peak MB", "events/s",
                "us/request (CPU)", "planner calls"):
        t.add_column(col, justify="right")
    for r in scale_rows:
        t.add_row(str(r["devices"]), f"{r['sim_minutes']:g}", str(r["requests"]),
                  _f(r["wall_s"]), _f(r["cpu_s"]), f"{r['peak_rss_mb']:.0f}",
                  f"{r['events_per_s']:,.0f}", _f(r["us_per_request_cpu"]),
                  str(r["planner_calls"]))
    out.append(t)
    if fid_rows:
        t = Table(title="fidelity: simulator vs real runtime (same Plan, shaping, dilation, "
                        "arrivals)")
        for col in ("scenario", "mode", "requests", "sim p50", "real p50", "err p50",
                    "sim p95", "real p95", "err p95", "around err p50/p95",
                    "plan-only err p50/p95",
                    "compute cv (in run)", "overhead ms/hop", "drift across run",
                    "batch marginal"):
            t.add_column(col, justify="left" if col in ("scenario", "mode") else "right")
        for r in fid_rows:
            t.add_row(r["scenario"], r["mode"], str(r["requests"]), _f(r["sim_p50_ms"]),
                      _f(r["real_p50_ms"]), f"{100 * r['err_p50']:+.1f}%", _f(r["sim_p95_ms"]),
                      _f(r["real_p95_ms"]), f"{100 * r['err_p95']:+.1f}%",
                      f"{100 * r['around_err_p50']:+.1f}%/{100 * r['around_err_p95']:+.1f}%",
                      f"{100 * r['plan_only_err_p50']:+.1f}%/{100 * r['plan_only_err_p95']:+.1f}%",
                      " ".join(f"{k} {v:.2f}" for k, v in r["compute_cv"].items()),
                      f"{r['overhead_ms']:.1f} (cv {r['overhead_cv']:.2f})",
                      " ".join(f"{k} {100 * v:+.0f}%" for k, v in r["drift"].items()),
                      "-" if r["batch_marginal"] is None else f"{r['batch_marginal']:.2f}")
        out.append(t)
        t = Table(title="fidelity: how far each row may move (paired block bootstrap over the "
                        "requests), the timed run's compute against the warm-up's and cool-down's "
                        "(p50/p95), the sim given the timed run's compute in order (replay, one "
                        "device) and regardless of when (timed-compute), and the edge's batches "
                        "(requests per batch size)")
        for col in ("scenario", "requests", "above real p95", "real p95 interval ms",
                    "err p50 interval", "err p95 interval", "timed run vs warm/cool",
                    "replay err p50/p95", "timed-compute err p50/p95",
                    "edge batch mean real/sim", "edge batches real", "edge batches sim",
                    "load avg"):
            t.add_column(col, justify="left" if col == "scenario" else "right")
        for r in fid_rows:
            lo, hi = r["real_p95_ci_ms"]
            t.add_row(r["scenario"], str(r["requests"]), str(r["tail_requests"]),
                      f"{lo:.0f}-{hi:.0f}", _pct(r["err_p50_ci"]), _pct(r["err_p95_ci"]),
                      " ".join(f"{k} {100 * v['p50']:+.0f}/{100 * v['p95']:+.0f}%"
                               for k, v in r["timed_drift"].items()),
                      (f"{100 * r['replay_err_p50']:+.1f}%/{100 * r['replay_err_p95']:+.1f}%"
                       if "replay_err_p50" in r else "-"),
                      f"{100 * r['timed_compute_err_p50']:+.1f}%/"
                      f"{100 * r['timed_compute_err_p95']:+.1f}%",
                      f"{_f(r['edge_batch_mean_real'], '.2f')}/"
                      f"{_f(r['edge_batch_mean_sim'], '.2f')}",
                      _batches(r["edge_batch_real"]), _batches(r["edge_batch_sim"]),
                      f"{r['load_average'][0]:.1f}")
        out.append(t)
    if sweep_rows:
        t = Table(title="campus: service time and failure rate vs devices per policy")
        for col in ("devices", "policy", "requests", "mean ms", "p95 ms", "failed %",
                    "mob/net/cap/dl"):
            t.add_column(col, justify="left" if col == "policy" else "right")
        for r in sweep_rows:
            f = r["failures"]
            t.add_row(str(r["devices"]), r["policy"], str(r["requests"]),
                      _f(r["service_ms"]["mean"]), _f(r["service_ms"]["p95"]),
                      f"{100 * r['failure_rate']:.2f}",
                      f"{f['mobility']}/{f['network']}/{f['capacity']}/{f['deadline']}")
        out.append(t)
    if train_rows:
        t = Table(title="campus: federated training on the fleet, with and without inference "
                        "(mean over seeds; change: paired, same seed)")
        for col in ("training", "inference", "seeds at target", "round to target",
                    "time to target s", "time change", "mean round s", "round change",
                    "final acc", "moved away", "inference p95 ms alone/with"):
            t.add_column(col, justify="right")
        for r in training_means(train_rows):
            load = r["inference_load"]
            inf = (f"{r['inference_p95_ms_alone']:.0f}/{r['inference_p95_ms_with']:.0f}"
                   if load else "-")
            t.add_row(r["training"], "on" if load else "off", f"{r['reached']}/{r['seeds']}",
                      _f(r["round_to_target"]), _f(r["time_to_target_s"]),
                      _change(r.get("time_to_target_change")), _f(r["mean_round_s"], ".2f"),
                      _change(r.get("mean_round_s_change")), _f(r["final_accuracy"], ".3f"),
                      _f(r["dropped_mobility"]), inf)
        out.append(t)
    return out


def _int_list(ap: argparse.ArgumentParser, flag: str, text: str, least: int) -> list[int]:
    """``text`` as comma-separated integers of at least ``least``, or one argparse error
    naming ``flag``."""
    items = [x.strip() for x in text.split(",")]
    if not items or any(not x.isdigit() or int(x) < least for x in items):
        ap.error(f"{flag} {text!r}: expected comma-separated integers of at least {least}")
    return [int(x) for x in items]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--skip-fidelity", action="store_true")
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--skip-operator", action="store_true")
    ap.add_argument("--serial", action="store_true", help="sweep in this process, not on Ray")
    ap.add_argument("--fidelity-requests", type=int, default=None,
                    help="timed requests each fidelity case expects (its p95 rests on 1 in "
                         "20 of them; default: edgeweave.sim.validate.ROW_REQUESTS)")
    ap.add_argument("--fidelity-records", type=Path, default=None,
                    help="write each fidelity case's per-request records (arrival, device, "
                         "simulated and real latency, the real edge's batch, the runtime's "
                         "segments) to this JSON file")
    ap.add_argument("--fidelity-cases", default=None,
                    help="fidelity cases to run, comma-separated (default: all of "
                         "edgeweave.sim.validate.CASES)")
    ap.add_argument("--campus-minutes", type=float, default=30.0)
    ap.add_argument("--training-minutes", type=float, default=10.0)
    ap.add_argument("--seeds", default="1", help="campus sweep seeds, comma-separated")
    ap.add_argument("--training-seeds", default="1,2,3",
                    help="seeds of the training rows, comma-separated (each a paired run with "
                         "and without inference)")
    ap.add_argument("--campus-devices", default=",".join(map(str, CAMPUS_DEVICES)))
    ap.add_argument("--training-devices", type=int, default=1000)
    ap.add_argument("--scale-rows", default=",".join(f"{n}x{m:g}" for n, m in SCALE),
                    help="DEVICESxMINUTES,... (e.g. 1000x30,10000x30)")
    ap.add_argument("--scenario", type=Path, default=CITY, help=argparse.SUPPRESS)
    ap.add_argument("--scale-row", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.fidelity_requests is not None and args.fidelity_requests < 20:
        ap.error(f"--fidelity-requests {args.fidelity_requests}: need at least 20 (a p95 of "
                 "fewer rests on no request)")
    if args.scale_row:
        print(json.dumps(scale_row(int(args.scale_row[0]), float(args.scale_row[1]),
                                   args.scenario)))
        return
    # every list parsed before anything runs: a typo must not surface after the fidelity rows
    seeds = _int_list(ap, "--seeds", args.seeds, 0)
    counts = _int_list(ap, "--campus-devices", args.campus_devices, 1)
    train_seeds = _int_list(ap, "--training-seeds", args.training_seeds, 0)
    try:
        rows = [(int(n), float(m)) for n, m in (x.split("x") for x in args.scale_rows.split(","))]
    except ValueError:
        ap.error(f"--scale-rows {args.scale_rows!r}: expected DEVICESxMINUTES,... (e.g. "
                 "1000x30,10000x30)")
    console = Console(width=150)
    scale_rows = [] if args.skip_scale else scale(console, rows, args.scenario)
    scale_growth = growth(scale_rows)
    scale_growth["statement"] = growth_statement(scale_growth)
    if scale_rows:
        console.print(scale_growth["statement"], highlight=False)
    fid_rows = [] if args.skip_fidelity else fidelity(console, args.fidelity_requests,
                                                         args.fidelity_records,
                                                         fidelity_cases(ap, args.fidelity_cases))
    sweep_rows = [] if args.skip_operator else operator(console, args.serial,
                                                         args.campus_minutes, seeds, counts)
    train_rows = [] if args.skip_operator else training(console, args.training_devices,
                                                        args.training_minutes, train_seeds)
    doc = {"benchmark": "simulator", "format_version": 1,
           "scale": scale_rows, "scale_growth": scale_growth, "fidelity": fid_rows,
           "campus_sweep": sweep_rows, "training": train_rows,
           "training_means": training_means(train_rows),
           "load_average": list(os.getloadavg()),
           "note": ("Scale rows run the city scenario under its edgeweave policy, each in its "
                    "own process (peak RSS is that process's). Fidelity: real = `edgeweave "
                    "serve` processes on this host; sim_* gives the simulated servers each "
                    "tier's compute as the runtime reported it through the timed run (a "
                    "stage's compute time only, at the speed in effect at each point of the "
                    "run; no latency, link or queue time) and the per-hop cost measured "
                    "before and after it; around_* takes the compute from before and after "
                    "the timed run too (warm-up, cool-down); plan_only_* uses the Plan's "
                    "figures alone; timed_compute_* draws the timed run's compute at random "
                    "and replay_* (one device) replays it in order. Training rows: one per "
                    "seed, training_means their means.")}
    emit(console, tables(scale_rows, fid_rows, sweep_rows, train_rows), doc, args.json)


if __name__ == "__main__":
    main()
