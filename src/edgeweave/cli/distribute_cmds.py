"""`edgeweave distribute`: plan a model across a fleet's cluster of devices and run the plan on
local processes (one worker per device, dilated to its hardware; the shared Wi-Fi emulated in
the gateway), printing the partition, each device's work, and predicted vs measured latency.
The wiring (the options are in edgeweave.cli.commands.distribute); runtime.cluster.session
does the work."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from edgeweave.cli.options import OptionError


def distribute(console: Console, *, model: str, fleet: str, cluster: str | None,
               devices: str | None, method: str, depth: int | None, grid: str | None,
               reuse: str, scheduler: str, sources: str | None, frames: int, objective: str,
               mbps: float | None, input_codec: str, result_codec: str, repeats: int,
               json_out: Path | None, report: Path | None = None,
               layer_split: str = "overlap", layer_devices: int | None = None,
               time_scale: str = "auto", gather_at_source: bool = False,
               calibrate: int = 3, in_flight: int = 1, max_blocks: int = 3,
               gateway_tiles: bool = True) -> None:
    """Profile, plan and run (the options: edgeweave.cli.commands.distribute)."""
    from edgeweave.graph import capture_spec
    from edgeweave.profile import profile_graph
    from edgeweave.runtime.cluster.drive import check_in_flight
    from edgeweave.runtime.cluster.session import plan_emulated, run_cluster
    from edgeweave.runtime.inputs import load_input
    from edgeweave.topology import load_fleet

    check_in_flight(in_flight, "--in-flight")
    scale = _time_scale(time_scale)
    fl = load_fleet(fleet)
    chosen = fl.cluster(cluster)
    device_list = _names("--devices", devices, chosen.devices)
    source_list = _names("--sources", sources, device_list or chosen.devices) or None
    if mbps is not None:
        fl = _with_medium(fl, chosen.name, mbps)
    graph = capture_spec(model)
    if not gateway_tiles and method == "layer-wise":
        raise OptionError("--no-gateway-tiles applies to fused tiles; a layer-wise plan's "
                          "gateway computes its own parts")
    pins = _pins(graph, "fused-tiles" if not gateway_tiles else method, depth, _grid(grid))
    if layer_split != "overlap" and "layer-wise" not in pins["methods"]:
        raise OptionError(f"--layer-split {layer_split} applies to layer-wise plans; it does "
                          "not go with --method fused-tiles, --depth or --grid")
    if gather_at_source and scheduler != "stealing":
        raise OptionError(f"--gather-at-source applies to --scheduler stealing; --scheduler "
                          f"{scheduler} gathers every frame at the gateway")
    if gather_at_source and method == "layer-wise":
        raise OptionError("--gather-at-source applies to fused tiles; a layer-wise plan "
                          "gathers every layer at its gateway")
    in_use = device_list or chosen.devices
    if not gateway_tiles and not set(in_use) - {chosen.gateway_name}:
        raise OptionError(f"--no-gateway-tiles: cluster {chosen.name!r} has no device besides "
                          f"its gateway {chosen.gateway_name!r} to compute the tiles")
    if layer_devices is not None:
        if "layer-wise" not in pins["methods"]:
            raise OptionError(f"--layer-devices {layer_devices} applies to layer-wise plans; "
                              "it does not go with --method fused-tiles, --depth or --grid")
        if layer_devices > len(in_use):
            raise OptionError(f"--layer-devices {layer_devices}: expected 1 to {len(in_use)} "
                              f"(the devices of cluster {chosen.name!r} in use: "
                              f"{', '.join(in_use)})")
    with console.status(f"profiling {model} on this host"):
        profile = profile_graph(graph, fl, chosen.gateway_name, warmup=1, repeats=repeats)
        profile = _calibrated(graph, profile, pins["methods"])
    overlapped = in_flight * len(source_list or [chosen.gateway_name])  # frames in the system
    # frames overlapped for throughput (pipelined, or from several sources): priced as work
    # stealing across them, from where they come
    stolen = objective == "throughput" and overlapped > 1 and scheduler != "static"
    with console.status(f"planning {model} across cluster {chosen.name!r}"):
        plan = plan_emulated(
            graph, profile, fl, cluster=chosen.name, objective=objective,
            methods=pins["methods"], depth=depth, grid=pins["grid"],
            reuse=None if reuse == "auto" else reuse == "on", devices=device_list,
            input_codec=input_codec, result_codec=result_codec, model_spec=model,
            layer_split=layer_split, layer_devices=layer_devices, max_blocks=max_blocks,
            gateway_tiles=gateway_tiles,
            in_flight=overlapped if stolen else None,
            sources=source_list if stolen else None)
    part = plan.partition
    assert part is not None
    _print_plan(console, plan)
    if part.method == "single":
        console.print("[yellow]the plan keeps the model on one device: splitting it does not "
                      "pay here[/] (try --method fused-tiles or layer-wise, or --mbps)")
        return
    if source_list and part.method == "layer-wise" and source_list != [part.gateway]:
        raise OptionError(f"--sources: a layer-wise plan takes frames from its gateway "
                          f"{part.gateway!r} only")
    remote = any(t != "device" for t in plan.placement.values())
    if gather_at_source and part.method != "fused-tiles":
        raise OptionError(f"--gather-at-source: the optimiser chose a {part.method} plan, "
                          "which gathers at its gateway; pin --method fused-tiles or drop "
                          "the flag")
    if gather_at_source and remote:
        raise OptionError("--gather-at-source: the plan runs the rest of the model on the "
                          "edge or cloud, which only the gateway deploys; drop the flag")
    if scale not in ("auto", 1.0) and remote:
        raise OptionError(f"--time-scale {time_scale}: the plan runs the rest of the model on "
                          "the edge or cloud, which slow motion cannot slow down; use 1 or auto")
    xs = [load_input(None, graph.input_shape, seed=k) for k in range(frames)]
    with console.status(f"running {frames} frame(s) on {len(part.devices)} worker processes"):
        run = run_cluster(graph, plan, profile, fl, xs, scheduler=scheduler, time_scale=scale,
                          sources=source_list, models=_installs(model),
                          gather_at_source=gather_at_source, calibrate=calibrate,
                          in_flight=in_flight)
    from edgeweave.runtime.cluster.loaded import loaded_price

    # frames from several sources, or pipelined, wait for each other: the prediction to
    # hold the measured latency against is the plan's with them all in the system
    loaded = loaded_price(graph, run)
    table = _print_run(console, run, loaded)
    if report is not None:
        from edgeweave.cli import reporting

        reporting.write_tables(console, report, "edgeweave distribute", [table], **run.to_json())
    if json_out is not None:
        from edgeweave.cli.options import write_output

        # the plan that ran (priced again from the calibration pass, if any)
        doc = {"plan": json.loads(run.plan.model_dump_json()), "run": run.to_json(),
               "loaded_prediction": loaded.to_json()}
        write_output("--json", json_out, json.dumps(doc, indent=1, default=str))
        console.print(f"written to {json_out}")


def _calibrated(graph, profile, methods):
    """The profile with each tile's per-layer call cost measured on this host
    (profile.tile_calibration), when the plan may cut the model into tiles or parts; a
    profile not measured here (or a model with no fusable prefix) is kept as is, and
    the plan then notes that its tasks are priced at their FLOP share."""
    from edgeweave.graph.blocks import cut_depths
    from edgeweave.profile.tile_calibration import calibrate_tiles

    if tuple(methods) == ("single",) or not cut_depths(graph) or (
            profile.model_extra or {}).get("latency_source") == "analytic":
        return profile
    return calibrate_tiles(graph, profile)


def _time_scale(text: str) -> float | str:
    """``--time-scale``: auto, or a finite factor of at least 1."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value < 1.0 or value > 1000.0:
        raise OptionError(f"--time-scale: expected auto or a number from 1 to 1000, got "
                          f"{text!r}")
    return value


def _names(flag: str, text: str | None, known: list[str]) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        if name not in known:
            raise OptionError(f"{flag}: unknown device {name!r} (the cluster's devices: "
                              f"{', '.join(known)})")
    if not names:
        raise OptionError(f"{flag}: expected comma-separated device names")
    return names


def _grid(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    rows, sep, cols = text.lower().partition("x")
    if not sep or not rows.isdigit() or not cols.isdigit() or int(rows) < 1 or int(cols) < 1:
        raise OptionError(f"--grid: expected ROWSxCOLS with positive integers, e.g. 3x3; got "
                          f"{text!r}")
    return int(rows), int(cols)


def _pins(graph, method: str, depth: int | None, grid: tuple[int, int] | None
          ) -> dict[str, Any]:
    """The methods to search, checking a pinned fused-tile choice before any profiling (a
    model with no fusable prefix, a depth it lacks, a grid larger than the feature map)."""
    from edgeweave.graph.blocks import fused_block
    from edgeweave.graph.tiles import tile_grid

    fused = method == "fused-tiles" or depth is not None or grid is not None
    if fused and method == "layer-wise":
        raise OptionError("--depth and --grid pin fused tiles; they do not apply to "
                          "--method layer-wise")
    if fused:
        block = fused_block(graph, depth)  # GraphError names the model / the valid depths
        if grid is not None and depth is not None:
            tile_grid(block, grid)  # GraphError: larger than the feature map
    methods = ("fused-tiles",) if fused else ("layer-wise",) if method == "layer-wise" \
        else ("fused-tiles", "layer-wise", "single")
    return {"methods": methods, "grid": grid}


def _with_medium(fleet, cluster: str, mbps: float):
    clusters = [c.model_copy(update={"medium": c.medium.model_copy(update={"mbps": mbps})})
                if c.name == cluster else c for c in fleet.clusters]
    return fleet.model_copy(update={"clusters": clusters})


def _installs(model: str) -> tuple[str, ...]:
    from edgeweave.cli.runtime_cmds import installs

    return installs(model)


def _print_plan(console: Console, plan) -> None:
    part = plan.partition
    pred = part.predicted
    what = (f"{part.describe_blocks()}, reuse "
            f"{'on' if part.reuse else 'off'}" if part.method == "fused-tiles"
            else f"{len(part.layers)} split layer(s), {part.layer_split} split"
            if part.method == "layer-wise" else "")
    one = pred.get("one_device_ms")
    console.print(f"[bold]{part.model}[/] on cluster {part.cluster!r} ({len(part.devices)} "
                  f"devices, {part.medium.kind} {part.medium.mbps:g} Mbit/s shared, codecs "
                  f"{part.input_codec}/{part.result_codec}): {part.method} {what}; the rest "
                  f"{part.rest_mode}; predicted {pred['latency_ms']:.1f} ms"
                  + (f" (one device {one:.1f} ms, x{one / pred['latency_ms']:.2f})" if one
                     else ""), highlight=False)
    if part.method == "fused-tiles":
        by_device: dict[str, list[str]] = {}
        for t in part.all_tiles():  # numbered on across blocks
            by_device.setdefault(t.device, []).append(f"{t.index}")
        placed = "; ".join(f"{d}: {', '.join(v)}" for d, v in by_device.items())
        console.print(f"tiles (the plan's assignment; stealing and sharing may move them): "
                      f"{placed}", highlight=False)


def _print_run(console: Console, run, loaded) -> Table:
    part = run.plan.partition
    work = run.device_work()
    table = Table(title=f"per device, per frame ({run.scheduler}; sources "
                        f"{', '.join(run.sources)})")
    for col in ("device", "hardware", "dilation", "tasks planned", "tasks run",
                "compute planned ms", "compute measured ms", "memory planned MiB",
                "weights+tasks measured MiB"):
        table.add_column(col, justify="right")
    loads = {x.name: x for x in part.load}
    for name in part.devices + sorted(set(work) - set(part.devices)):
        load, got = loads.get(name), work.get(name, {})
        table.add_row(name, load.hardware if load else "-",
                      f"{run.dilations.get(name, 1.0):.1f}" if name in run.dilations else "-",
                      str(load.tasks) if load else "-",
                      f"{got.get('tasks_per_frame', 0):.1f}",
                      f"{load.compute_ms:.1f}" if load else "-",
                      f"{got.get('compute_ms_per_frame', 0):.1f}",
                      f"{load.memory_bytes / 2**20:.1f}" if load else "-",
                      f"{got['task_memory_mb']:.1f}" if got.get("task_memory_mb") == got.get(
                          "task_memory_mb") and "task_memory_mb" in got else "-")
    console.print(table)
    idle = [name for name in part.devices if name not in run.dilations]
    if idle:
        console.print(f"not started (the plan gives them no work): {', '.join(idle)}",
                      highlight=False)
    emulation = run.emulation
    console.print(f"emulation: one worker process per device, each task's CPU time stretched "
                  f"by the device's dilation and slept, so the devices need "
                  f"{emulation['host_cores_needed']:.2f} of this host's "
                  f"{emulation['host_cores']} cores; {emulation['overrun_tasks']:.0f} of "
                  f"{emulation['tasks']:.0f} tasks waited for a core past their stretch"
                  + (f"; played {run.time_scale:g}x slower (dilations and the medium) on this "
                     "loaded host, the times divided back" if run.time_scale > 1 else ""),
                  highlight=False)
    if run.calibration is not None and run.uncalibrated is not None:
        before = run.uncalibrated.partition.predicted["latency_ms"]
        scales = ", ".join(f"{d} x{k:.2f}" for d, k in run.calibration.compute_scale.items())
        console.print(f"calibrated on {run.calibration.frames} dummy frame(s) before the "
                      f"measured ones: compute {scales or '-'}, rest "
                      f"x{run.calibration.rest_scale:.2f}; predicted {before:.1f} ms from "
                      "the profile alone", highlight=False)
    overhead, codec = run.task_overhead_ms, run.task_codec_ms
    if overhead == overhead:  # some task was shipped to a device and timed
        console.print(f"a task's cost besides compute and the medium: {overhead:.1f} ms "
                      f"(median), of which the device decoding and encoding {codec:.1f} ms; "
                      "the rest is the RPC and the gateway's encoding and decoding",
                      highlight=False)
    homes = sorted({r.home for r in run.results if r.home})
    if homes and homes != [part.gateway]:
        console.print(f"frames gathered (and their rest run) at: {', '.join(homes)}",
                      highlight=False)
    if loaded.forecast is not None:
        spread = ", ".join(f"{d} {n:.1f}" for d, n in loaded.forecast.tasks_per_frame.items())
        console.print(f"{loaded.frames} frames in the system ({len(run.sources)} source(s) "
                      f"x {run.in_flight} in flight): a frame also waits for the others; "
                      f"forecast with them by the run's own scheduler on a simulated clock "
                      f"(a frame alone: {loaded.one_frame_ms:.1f} ms): {loaded.latency_ms:.1f} "
                      f"ms, {loaded.fps or float('nan'):.2f} frames/s, tiles a frame: "
                      f"{spread}", highlight=False)
    elif loaded.period_ms is not None:
        console.print(f"{loaded.frames} frames in the system ({len(run.sources)} source(s) "
                      f"x {run.in_flight} in flight): a frame also waits for the others, "
                      f"so it is predicted at {loaded.latency_ms:.1f} ms, the larger of a "
                      f"frame alone ({loaded.one_frame_ms:.1f} ms) and {loaded.frames} "
                      f"periods of {loaded.period_ms:.1f} ms ({loaded.basis}); a bound",
                      highlight=False)
    console.print(f"latency: predicted {loaded.latency_ms:.1f} ms, measured "
                  f"{run.latency_ms:.1f} ms (median of {len(run.results)}); "
                  f"{run.fps:.2f} frames/s"
                  + (f" ({run.in_flight} frames in flight per source)" if run.in_flight > 1
                     else "") + "; "
                  f"{run.bytes_per_frame / 1e3:.0f} kB per frame on "
                  f"the medium", highlight=False)
    return table
