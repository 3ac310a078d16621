"""Inference across several end devices: the partition figures, the optimiser's predictions,
and the plans run on real worker processes, measured next to predicted (issue 14).

1-3 are benchmarks/_multi_device_figures.py.
1. Fused tiles (DeepThings): per fused depth and grid, the redundant halo FLOPs, the largest
   tile's input + output + weights bytes and each tile's traffic; data reuse on vs off FLOPs.
   Reuse on vs off also as the optimiser's predicted latency.
2. Memory per device: the largest tile vs the whole block on one device, analytic and measured
   (peak-RSS growth of running the tile once in a fresh process, benchmarks/_tile_rss.py).
3. Layer-wise delivery (MoDNN): bytes per frame and their time on the shared medium, speed-biased
   1-D split vs the 2-D grid split, 2-4 devices; sparse FC co-clustering vs plain and grid.
4. The optimiser's predicted latency and speedup vs one device for 1..6 devices (the builtin
   pi-cluster fleet's devices in order, rpi4/rpi3, without its edge and cloud), per method.

5. Measured (benchmarks/_multi_device_runs.py): each plan run by a gateway and one worker
   process per device (gRPC on loopback, dilated to rpi4 / rpi3 from the host speed recorded
   with the measured profile; the stretch is slept, so the devices need the sum of
   1/dilation of a core; slow motion on a loaded host, --time-scale), the shared Wi-Fi one
   shaped link: speedup vs one device (the faster of its two ways to run the model alone: a
   fused tile on its worker, or all of it in the gateway's process; ``one_device_basis``),
   fused tiles with stealing on 1..6 devices, layer-wise on 2..4 (the planner's layer-wise
   keeps each device's rows between split layers, only halo rows cross, and each device
   computes its interior rows while its edges' halo crosses),
   workers' peak RSS, stealing vs sharing with every device a data source (their frames
   overlap, so ``predicted_ms`` there is the run forecast by its own scheduler on a simulated
   clock, _multi_device_runs.loaded_price and runtime.cluster.forecast: ``predicted_basis``
   says so, ``predicted_one_frame_ms`` is one frame's alone), reuse off vs on,
   layer-wise bytes and delivery time per frame, MoDNN's biased 1-D (every layer scattered and
   gathered) vs 2-D grid vs resident rows (a barrier at every layer) vs overlapped. Plans
   price each
   task's cost beyond its FLOP share: the tile call cost measured here before planning
   (profile.tile_calibration) and the runtime's cost per MiB a task carries, measured by the
   first (1-device) run and given to every later plan. Then each run calibrates
   (--calibrate N, default 3): its workers compute N frames of dummy input under the plan,
   and the plan is priced again from what they took (plan.run_calibration: each device's
   compute and the gateway's rest scaled, the cost per MiB measured there) before the
   measured frames; ``predicted_ms`` is that price, ``uncalibrated_predicted_ms`` the
   profile's alone (on a loaded host the emulated devices compute 3-50% slower than profiled).
   --in-flight 1,2 runs the speedup rows once per value: frames the source keeps unanswered
   (2: DeepThings' pipelining, the next frame once every tile of the last is taken); such a
   row's ``speedup_vs_one`` is its frames/s over one device's with one frame in flight.
   Needs --profile measured (the host speed); --no-runs leaves those rows out.
6. The papers' setup (--setups gateway; benchmarks/_multi_device_setups.py): DeepThings'
   gateway of its own, an extra emulated rpi4 with no tile that runs every frame's rest, N
   edge devices computing the tiles with stealing, frames pipelined (--gateway-in-flight),
   the plan maximising frames/s; frames/s vs one rpi4 running the whole model, measured and
   predicted (``setup``, ``speedup_basis`` and ``extra_devices`` say what each row is). The
   planner's rows of where a frame's time goes (medium, busiest tile device, the gateway's
   rest) for both setups come with it, also under --only-plans. --setups pipelined: the
   same stream (throughput plan, frames in flight) on the N devices alone, the first being
   the gateway (no extra device). --setups stream: on the N devices alone, the plan priced as
   work stealing across the frames in flight (plan.stealing_price; --stream-in-flight, default
   2N + 2 up to 16), so the optimiser may give each device whole frames' fused blocks.

    PYTHONPATH=src .venv/bin/python benchmarks/multi_device.py [--profile analytic] [--json out]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

import _multi_device_runs
from _multi_device_figures import layerwise_rows, memory_rows, sparse_rows, tiling_rows
from _multi_device_plans import reuse_rows, speedup_rows
from _multi_device_runs import (
    layer_split_runs,
    ms_per_mb_of,
    reuse_runs,
    scheduler_runs,
    speedup_runs,
)
from _multi_device_setups import (
    cluster_fleet,
    gateway_plan_rows,
    gateway_runs,
    one_device_run,
)
from _zoo import profile_zoo
from edgeweave.errors import EdgeWeaveError
from edgeweave.graph import capture_spec
from edgeweave.graph.blocks import cut_depths
from edgeweave.plan.fused_search import TileCache
from edgeweave.plan.medium_codecs import MEDIUM_CODECS
from edgeweave.profile import analytic_profile
from edgeweave.profile.tile_calibration import calibrate_tiles
from edgeweave.runtime.cluster.drive import MAX_IN_FLIGHT, check_in_flight
from edgeweave.topology import Fleet, load_fleet

MODELS = ["vgg16", "resnet18"]
DEFAULT_FLEET = "pi-cluster"
FLEET = DEFAULT_FLEET  # --fleet


MEDIUM_MBPS: float | None = None  # --mbps: the shared medium's bandwidth instead of the fleet's
DEVICE_MEMORY_MB: float | None = None  # --device-memory-mb: every device but the gateway capped


def local_fleet(n: int) -> Fleet:
    """The first ``n`` devices of the fleet's cluster (--fleet: the builtin pi-cluster), on its
    shared Wi-Fi, no edge/cloud: every frame stays on the devices, as in the papers' setups."""
    return cluster_fleet(n, FLEET, MEDIUM_MBPS, memory_mb=DEVICE_MEMORY_MB)


def _gateway_fleet(n: int) -> Fleet:
    """DeepThings' setup: the first ``n`` devices of the cluster and an extra rpi4 gateway."""
    return cluster_fleet(n, FLEET, MEDIUM_MBPS, extra_gateway=True, memory_mb=DEVICE_MEMORY_MB)


def _table(title: str, rows: list[dict[str, Any]], cols: list[str]) -> Table:
    table = Table(title=title)
    for col in cols:
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*(_fmt(row.get(c)) for c in cols))
    return table


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--profile", choices=["measured", "analytic"], default="measured",
                    help="layer latencies: measured on this host and scaled (as `edgeweave "
                         "profile` does) or FLOPs only")
    ap.add_argument("--out", type=Path, default=Path("out/profiles"))
    ap.add_argument("--reuse", action="store_true", help="reuse saved profiles in --out")
    ap.add_argument("--fleet", default=DEFAULT_FLEET,
                    help="fleet YAML file or built-in name with a clusters: section: its first "
                         "cluster's devices in order are the 1..N devices, the first the "
                         "gateway and the one-device baseline (default: pi-cluster, rpi4/rpi3)")
    ap.add_argument("--mbps", type=float, help="shared medium bandwidth (default: the fleet's "
                                               "cluster's; pi-cluster: 18.88)")
    ap.add_argument("--only-plans", action="store_true", help="only the optimiser rows")
    ap.add_argument("--no-runs", action="store_true", help="no measured rows (no processes)")
    ap.add_argument("--no-figures", action="store_true", help="no tiling, memory, layer-wise "
                    "delivery or sparse FC figures (the plans and the runs only)")
    ap.add_argument("--frames", type=int, default=3, help="measured frames per run (after one "
                                                          "warm-up frame)")
    ap.add_argument("--run-devices", default=None,
                    help="device counts of the measured fused-tile runs (default: 1 to 6, at "
                         "most the cluster's devices)")
    ap.add_argument("--in-flight", default="1", help="comma-separated frames the source "
                    "keeps unanswered in the measured speedup runs, a run per value")
    ap.add_argument("--input-codec", default="none", choices=MEDIUM_CODECS,
                    help="codec of the frame's crops on the medium, every plan")
    ap.add_argument("--result-codec", default="none", choices=MEDIUM_CODECS,
                    help="codec of computed feature maps on the medium, every plan (+zstd, "
                    "+lz4: compressed losslessly after it)")
    ap.add_argument("--max-blocks", default="1,3",
                    help="comma-separated: the measured fused-tile speedup runs once per value "
                         "(1: one fused block, DeepThings; 3: up to 3 consecutive blocks, "
                         "DeeperThings), each on 2 or more devices")
    ap.add_argument("--run-layerwise", default=None,
                    help="device counts of the measured layer-wise runs (default: 2 to 4, at "
                         "most the cluster's devices)")
    ap.add_argument("--run-schedulers", nargs="*", help="models whose stealing vs sharing and "
                    "reuse off/on are measured, on 3 and 4 devices (default: every model, "
                    "on a cluster of 4 or more)")
    ap.add_argument("--run-layer-split", type=int, default=None,
                    help="devices of the measured layer-wise biased 1-D vs 2-D grid vs "
                         "resident rows vs overlapped runs (0: none; the grid is 2-D from 4)")
    ap.add_argument("--time-scale", default="auto",
                    help="slow motion for the measured runs: a factor >= 1, or auto (from the "
                         "load average)")
    ap.add_argument("--calibrate", type=int, default=_multi_device_runs.CALIBRATE,
                    help="frames of dummy input each measured run computes first, on the same "
                         "workers, to price its plan from what they took (0: the profile "
                         "alone)")
    ap.add_argument("--setups", default="single-source",
                    help="comma-separated: single-source (the gateway one of the N devices; "
                         "every row of 1-5 above), gateway (DeepThings' extra gateway, 6 "
                         "above), pipelined (the same stream on the N devices alone), stream "
                         "(the N devices alone, planned as stealing across frames in flight)")
    ap.add_argument("--gateway-devices", default=None,
                    help="edge-device counts of the measured gateway-setup runs (default: 1 "
                         "to 6, at most the cluster's devices)")
    ap.add_argument("--gateway-in-flight", type=int, default=3,
                    help="frames in flight in the gateway-setup runs")
    ap.add_argument("--stream-in-flight", type=int, default=None,
                    help="frames in flight in the stream-setup runs (default 2N + 2, at most "
                         "16)")
    ap.add_argument("--device-memory-mb", type=float, default=None,
                    help="cap the memory the model may use on every device but the gateway, "
                         "in MiB (DeepThings' devices had less than 23 MB each): the planner "
                         "must then choose shallower blocks and finer grids")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    setups = {x.strip() for x in args.setups.split(",") if x.strip()}
    if not setups or setups - {"single-source", "gateway", "pipelined", "stream"}:
        ap.error(f"--setups {args.setups!r}: expected some of single-source, gateway, "
                 "pipelined, stream")
    global MEDIUM_MBPS, DEVICE_MEMORY_MB, FLEET
    MEDIUM_MBPS, DEVICE_MEMORY_MB, FLEET = args.mbps, args.device_memory_mb, args.fleet
    try:
        cluster_size = len(load_fleet(FLEET).cluster().devices)
    except EdgeWeaveError as e:
        ap.error(f"--fleet {args.fleet!r}: {e}")
    _multi_device_runs.MAX_DEVICES = most = min(6, cluster_size)
    counts = ",".join(str(n) for n in range(1, most + 1))  # the defaults: what the cluster has
    if args.run_devices is None:
        args.run_devices = counts
    if args.gateway_devices is None:
        args.gateway_devices = counts
    if args.run_layerwise is None:
        args.run_layerwise = ",".join(str(n) for n in range(2, min(4, cluster_size) + 1))
    if args.run_layer_split is None:
        args.run_layer_split = min(4, cluster_size) if cluster_size >= 2 else 0
    if args.run_schedulers is None and cluster_size < 4:
        args.run_schedulers = []
    gateway_devices = [int(n) for n in args.gateway_devices.split(",") if n.strip().isdigit()]
    if len(gateway_devices) != len([n for n in args.gateway_devices.split(",") if n.strip()]) \
            or any(not 1 <= n <= 6 for n in gateway_devices):
        ap.error(f"--gateway-devices {args.gateway_devices!r}: expected comma-separated "
                 "counts from 1 to 6")
    try:
        check_in_flight(args.gateway_in_flight, "--gateway-in-flight")
        if args.stream_in_flight is not None:
            check_in_flight(args.stream_in_flight, "--stream-in-flight")
    except EdgeWeaveError as e:
        ap.error(str(e))
    if args.device_memory_mb is not None and not 0 < args.device_memory_mb <= 1024:
        ap.error(f"--device-memory-mb {args.device_memory_mb:g}: expected more than 0 and at "
                 "most 1024 MiB (the rpi3's memory, the smallest device of the cluster)")
    if args.calibrate < 0:
        ap.error(f"--calibrate {args.calibrate}: expected 0 or more frames")
    _multi_device_runs.CALIBRATE = args.calibrate
    _multi_device_runs.CODECS.update(input_codec=args.input_codec,
                                     result_codec=args.result_codec)
    if args.time_scale != "auto":
        try:
            _multi_device_runs.TIME_SCALE = float(args.time_scale)
        except ValueError:
            ap.error(f"--time-scale {args.time_scale!r}: expected a number >= 1 or auto")
    if args.mbps is not None and not 0 < args.mbps < float("inf"):
        ap.error(f"--mbps {args.mbps:g}: expected a bandwidth above 0")
    torch.set_num_threads(1)
    console = Console(width=160)
    medium = local_fleet(1).cluster().medium
    doc: dict[str, Any] = {
        "benchmark": "multi_device",
        "medium": {**medium.model_dump(), "input_codec": args.input_codec,
                   "result_codec": args.result_codec,
                   "fleet": FLEET,
                   "note": "one medium shared by every device of the cluster (the fleet's; "
                           "pi-cluster: Wi-Fi at Neurosurgeon's measured average, 18.88 "
                           "Mbit/s, 5 ms RTT), unless --mbps overrides its bandwidth"},
        "device_memory_mb": {"cap_mb": args.device_memory_mb,
                             "note": "what the model may use on every device but the "
                                     "gateway (--device-memory-mb; null: each device's own)"},
        "measured_fields_null": "in the predicted rows (speedup, reuse): latency_ms, fps, "
                                "speedup_vs_one, peak_rss_mb are measured in the rows of "
                                "'measured', 'schedulers' and 'reuse_measured'",
        "tiling": [], "memory": [], "layerwise": [], "sparse_fc": [], "speedup": [],
        "reuse": [], "measured": [], "schedulers": [], "reuse_measured": [],
        "layer_split_measured": [], "tile_calibration": {}, "runtime_ms_per_mb": {},
        "where_time_goes": [], "gateway_setup": [],
        "load_average_at_start": os.getloadavg(), "host_cores": os.cpu_count()}
    runs = not args.no_runs and args.profile == "measured"
    run_devices = [int(n) for n in args.run_devices.split(",") if n.strip()]
    run_layerwise = [int(n) for n in args.run_layerwise.split(",") if n.strip()]
    max_blocks = [int(n) for n in args.max_blocks.split(",") if n.strip().isdigit()]
    if not max_blocks or min(max_blocks) < 1 or len(max_blocks) != len(
            args.max_blocks.split(",")):
        ap.error(f"--max-blocks {args.max_blocks!r}: expected comma-separated whole numbers "
                 "of 1 or more")
    asked = {"--run-devices": run_devices, "--run-layerwise": run_layerwise,
             "--run-layer-split": [args.run_layer_split]}
    if setups & {"gateway", "pipelined", "stream"}:
        asked["--gateway-devices"] = gateway_devices
    if runs and "single-source" in setups and (args.run_schedulers is None
                                                or set(args.run_schedulers) & set(args.models)):
        asked["--run-schedulers (three sources, reuse on four devices)"] = [4]
    for flag, wanted in asked.items():
        if wanted and max(wanted) > cluster_size:
            ap.error(f"{flag} {max(wanted)}: the fleet {args.fleet!r}'s cluster has "
                     f"{cluster_size} devices")
    in_flight = sorted({int(n) for n in args.in_flight.split(",") if n.strip().isdigit()})
    if not in_flight or min(in_flight) < 1 or max(in_flight) > MAX_IN_FLIGHT or len(
            in_flight) != len(args.in_flight.split(",")):
        ap.error(f"--in-flight {args.in_flight!r}: expected comma-separated whole numbers "
                 f"from 1 to {MAX_IN_FLIGHT}, each once")
    profiles = (profile_zoo(args.models, args.out, 3, args.reuse)
                if args.profile == "measured" else {})
    for name in args.models:
        graph = capture_spec(name)
        if not args.only_plans and not args.no_figures:
            doc["tiling"] += tiling_rows(graph)
            depths = sorted(cut_depths(graph))
            picks = sorted({depths[len(depths) // 3], depths[len(depths) // 2], depths[-1]})
            doc["memory"] += memory_rows(name, picks, ["1x1", "2x2", "3x3", "5x5"])
            doc["layerwise"] += layerwise_rows(graph, load_fleet(FLEET))
            if name == args.models[0]:
                doc["sparse_fc"] += sparse_rows(graph)
        profile = (profiles[name][0] if args.profile == "measured"
                   else analytic_profile(graph, local_fleet(1)))
        if args.profile == "measured":  # each tile's per-layer call cost, measured here
            profile = calibrate_tiles(graph, profile)
            host = (profile.model_extra or {})["host"]
            doc["tile_calibration"][name] = {"tile_call_ms": host["tile_call_ms"],
                                             **host["tile_calibration"]}
        cache: TileCache = {}
        ms_per_mb = 0.0
        if setups & {"gateway", "pipelined", "stream"}:
            gw_blocks = max(max_blocks)
            if runs:
                one = one_device_run(graph, profile, local_fleet, args.frames, cache)
                doc["gateway_setup"].append(one)
                for extra in (True, False):
                    if ("gateway" if extra else "pipelined") in setups:
                        doc["gateway_setup"] += gateway_runs(
                            graph, profile, _gateway_fleet if extra else local_fleet,
                            [n for n in gateway_devices if extra or n > 1], args.frames,
                            cache, one, args.gateway_in_flight, gw_blocks, extra)
                if "stream" in setups:
                    doc["gateway_setup"] += gateway_runs(
                        graph, profile, local_fleet, gateway_devices, args.frames, cache, one,
                        args.stream_in_flight, gw_blocks, False, stream=True)
                ms_per_mb = ms_per_mb_of([one])
                doc["runtime_ms_per_mb"][name] = ms_per_mb
            doc["where_time_goes"] += gateway_plan_rows(
                graph, profile, _gateway_fleet, local_fleet, cache, args.profile, ms_per_mb,
                gw_blocks)
        if "single-source" not in setups:
            if args.json:
                args.json.write_text(json.dumps(doc, indent=1, default=str))
            continue
        if runs:  # first: the 1-device run measures the runtime's cost per MiB of a task
            measured = speedup_runs(graph, profile, local_fleet, run_devices, run_layerwise,
                                    args.frames, cache, in_flight=in_flight,
                                    max_blocks=max_blocks)
            doc["measured"] += measured
            ms_per_mb = ms_per_mb_of(measured)
            doc["runtime_ms_per_mb"][name] = ms_per_mb
        doc["speedup"] += speedup_rows(graph, profile, args.profile, cache, local_fleet,
                                       ms_per_mb)
        doc["reuse"] += reuse_rows(graph, profile, cache, local_fleet, ms_per_mb)
        if runs:
            if args.run_schedulers is None or name in args.run_schedulers:
                doc["schedulers"] += scheduler_runs(graph, profile, local_fleet, 3,
                                                    3 * args.frames, cache, ms_per_mb)
                doc["reuse_measured"] += reuse_runs(graph, profile, local_fleet, 4,
                                                    args.frames, cache, ms_per_mb)
            if args.run_layer_split:
                doc["layer_split_measured"] += layer_split_runs(
                    graph, profile, local_fleet, args.run_layer_split, args.frames, ms_per_mb)
        if args.json:  # what is done so far, in case a long run is stopped
            args.json.write_text(json.dumps(doc, indent=1, default=str))
    measured = ["model", "method", "devices", "devices_computing", "scheduler", "latency_ms",
                "predicted_ms",
                "measured_vs_predicted_pct", "uncalibrated_predicted_ms",
                "measured_vs_uncalibrated_pct", "cluster_ms", "predicted_cluster_ms", "rest_ms",
                "predicted_rest_ms", "compute_vs_plan_pct", "replayed_ms",
                "measured_vs_replayed_pct", "in_flight", "fps", "speedup_vs_one",
                "fps_speedup_vs_one", "max_blocks", "blocks",
                "peak_rss_mb", "task_memory_mb", "bytes_per_frame", "grid", "reuse",
                "task_overhead_ms", "task_codec_ms", "time_scale", "overrun_tasks", "load"]
    gateway_cols = ["model", "setup", "devices", "extra_devices", "in_flight", "steady_fps",
                    "fps", "predicted_fps", "measured_vs_predicted_fps_pct", "simulated_fps",
                    "measured_vs_simulated_pct", "speedup_vs_one",
                    "speedup_vs_one_stream",
                    "wall_speedup_vs_one", "predicted_speedup_vs_one", "latency_ms",
                    "predicted_ms", "rest_ms", "predicted_rest_ms", "blocks", "grid",
                    "bytes_per_frame", "time_scale", "overrun_tasks", "load"]
    squares = [r for r in doc["tiling"] if r["grid"][0] == r["grid"][1]]
    tables = [
        _table("fused tiles: halo and traffic (square grids; every grid in the JSON)", squares,
               ["model", "fused_depth", "grid", "halo_pct", "largest_tile_bytes",
                "max_tile_received_bytes", "max_tile_sent_bytes", "saved_pct"]),
        _table("memory per device: largest tile vs whole block (MiB)", doc["memory"],
               ["model", "fused_depth", "grid", "weights_mb", "analytic_activation_mb",
                "measured_activation_mb", "analytic_saving_vs_whole_pct",
                "measured_saving_vs_whole_pct", "measured_feature_map_saving_pct"]),
        _table("layer-wise delivery per frame (conv layers)", doc["layerwise"],
               ["model", "devices", "scheme", "delivery_bytes_per_frame",
                "delivery_ms_on_medium"]),
        _table("sparse FC split", doc["sparse_fc"],
               ["layer", "devices", "method", "nnz", "off_block_nnz", "crossing_values"]),
        _table("data reuse forced off / on, best fused-tile plan, PREDICTED", doc["reuse"],
               ["model", "devices", "reuse", "predicted_ms", "tile_compute_ms",
                "bytes_per_frame", "fused_depth", "grid"]),
        _table("optimiser, PREDICTED (measured columns need the runtime)", doc["speedup"],
               ["model", "method", "method_choice", "devices", "predicted_ms",
                "predicted_speedup_vs_one", "one_block_speedup", "multi_block_speedup",
                "blocks", "bytes_per_frame", "reuse", "split_layers", "exact"]),
        _table("MEASURED on worker processes (rpi4/rpi3 by dilation, shared medium), one source",
               doc["measured"], measured),
        _table("MEASURED stealing vs sharing, every device a data source (what each scheduler "
               "does: the JSON's scheduler_does)", doc["schedulers"],
               [*measured[:4], "hardware", "fps", "stealing_fps_vs_this",
                "predicted_fps_of_run", "latency_ms", "predicted_ms",
                "measured_vs_predicted_pct", "predicted_one_frame_ms", "replayed_ms",
                "measured_vs_replayed_pct",
                "stolen_per_frame", "bytes_per_frame", "homes", "time_scale",
                "overrun_tasks", "load"]),
        _table("tile call cost measured on this host (profile.tile_calibration) and the "
               "runtime's cost per MiB a task carries (measured by the 1-device run)",
               [{"model": m, "depths": f"{b['from_depth']}-{b['to_depth']}",
                 "tile_call_ms": b["tile_call_ms"], "whole_block_ms": b["whole_block_ms"],
                 "runtime_ms_per_mb": doc["runtime_ms_per_mb"].get(m)}
                for m, c in doc["tile_calibration"].items() for b in c["blocks"]],
               ["model", "depths", "whole_block_ms", "tile_call_ms", "runtime_ms_per_mb"]),
        _table("MEASURED data reuse off / on", doc["reuse_measured"],
               [*measured[:4], "reuse", "grid", "tile_flops", "latency_ms", "predicted_ms",
                "bytes_per_frame"]),
        _table("MEASURED layer-wise delivery per frame: biased 1-D vs 2-D grid vs rows kept "
               "on the devices (resident) vs their compute overlapping the halo (overlap)",
               doc["layer_split_measured"],
               [*measured[:3], "layer_split", "split_layers", "bytes_per_frame", "delivery_ms",
                "predicted_medium_ms", "latency_ms", "predicted_ms"]),
        _table("PREDICTED where a frame's time goes (ms): the medium, the busiest tile device, "
               "the gateway's tiles and rest; single source vs DeepThings' extra gateway",
               doc["where_time_goes"],
               ["model", "setup", "objective", "devices", "extra_devices", "predicted_ms",
                "predicted_fps", "predicted_fps_speedup_vs_one", "medium_busy_ms",
                "busiest_tile_device_ms", "gateway_tiles_ms", "gateway_rest_ms", "blocks"]),
        _table("MEASURED frames pipelined, throughput plans, vs one rpi4 (one-device); "
               "deepthings-gateway: N edge devices + an extra rpi4 gateway (no tile, runs the "
               "rest; not counted in devices); single-source-pipelined: N devices alone; "
               "stealing-stream: N devices alone, planned as stealing across frames",
               doc["gateway_setup"], gateway_cols),
    ]
    doc["load_average_at_end"] = os.getloadavg()
    for table in tables:
        console.print(table)
    text = json.dumps(doc, indent=1, default=str)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
