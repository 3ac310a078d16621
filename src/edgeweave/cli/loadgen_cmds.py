"""`edgeweave loadgen`: many devices against one or more nodes (wiring only: the load generator
is edgeweave.serve.loadgen, the nodes are reached through edgeweave.runtime.loadgen_target)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from edgeweave.cli import common
from edgeweave.cli.options import SEED_MAX, integer, number, output_file
from edgeweave.cli.reporting import report_option
from edgeweave.errors import EdgeWeaveError


def _shape(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        dims = tuple(int(d) for d in text.split(","))
    except ValueError:
        dims = ()
    if not dims or any(d < 1 for d in dims):
        raise EdgeWeaveError(f"--input-shape {text!r}: expected positive integers separated "
                             f"by commas, e.g. 1,3,224,224")
    return dims


def _sizes(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError:
        raise EdgeWeaveError(f"--preferred-batch {text!r}: expected batch sizes separated by "
                             f"commas, e.g. 4,8") from None


def loadgen(
    edge: list[str] = typer.Option(..., "--edge", help="host:port of a node (repeat for "
                                   "several; each request goes to the least loaded)."),
    model: list[str] = typer.Option(["digits-cnn"], "--model", help="Model to deploy and load "
                                    "(repeat for several; the rate is split evenly)."),
    token_file: Path = typer.Option(None, "--token-file", help="Bearer token file."),
    cert_dir: Path = typer.Option(None, "--cert-dir", help="mTLS: the fleet dir from "
                                  "`edgeweave certs`, or the device's own folder from it."),
    rate: float = typer.Option(20.0, callback=number(gt=0, le=1e5),
                               help="Open loop: Poisson arrivals, requests/s in all."),
    trace: Path = typer.Option(None, "--trace", help="Open loop: arrival times from a CSV "
                               "(time_s[,model] per row) instead of Poisson."),
    closed: int = typer.Option(None, "--closed", callback=integer(ge=1, le=100000),
                               help="Closed loop instead: this many devices, each waiting for "
                               "its answer before thinking and sending again."),
    think_ms: float = typer.Option(0.0, "--think-ms", callback=number(ge=0, le=3.6e6),
                                   help="Closed loop: mean think time between requests."),
    duration: float = typer.Option(10.0, callback=number(gt=0, le=86400),
                                   help="Seconds of load."),
    clients: int = typer.Option(1000, callback=integer(ge=1, le=10_000_000),
                                help="Logical devices the open-loop requests come from."),
    connections: int = typer.Option(2, callback=integer(ge=1, le=64),
                                    help="Connections per node shared by all devices."),
    throttle: float = typer.Option(0.0, "--throttle", callback=common.throttle,
                                   help=common.THROTTLE_HELP),
    slo_ms: float = typer.Option(200.0, "--slo-ms", callback=number(gt=0, le=3.6e6),
                                 help="Each request's deadline."),
    priority: int = typer.Option(0, callback=integer(ge=0, le=9), help="Requests' priority."),
    max_batch: int = typer.Option(0, "--max-batch", callback=integer(ge=0, le=1024),
                                  help="Deploy knob: largest batch (0: the node's default)."),
    max_delay_ms: float = typer.Option(0.0, "--max-delay-ms", callback=number(ge=0, le=1000),
                                       help="Deploy knob: how long a batch may wait to fill."),
    preferred_batch: str = typer.Option(None, "--preferred-batch",
                                        help="Deploy knob: batch sizes to prefer, e.g. 4,8."),
    adaptive: bool = typer.Option(False, "--adaptive", help="Deploy knob: adapt the batch "
                                  "size to the SLO (AIMD)."),
    input_shape: str = typer.Option(None, "--input-shape", help="Capture the models at this "
                                    "input, e.g. 1,3,112,112 (default: theirs)."),
    fallback_ms: float = typer.Option(0.0, "--fallback-ms", callback=number(ge=0, le=3.6e6),
                                      help="A refused request's device answers it itself in "
                                      "this long (simulated)."),
    no_fallback: bool = typer.Option(False, "--no-fallback", help="Devices have no fallback: "
                                     "a refused request stays refused."),
    keep: bool = typer.Option(False, "--keep", help="Leave the models deployed afterwards."),
    seed: int = typer.Option(0, callback=integer(ge=0, le=SEED_MAX)),
    json_out: Path = typer.Option(None, "--json", callback=output_file,
                                  help="Write the per-model results here."),
    plot: Path = typer.Option(None, "--plot", callback=output_file,
                              help="Latency over time and per-model distribution (PNG)."),
    report: Path = report_option(),
) -> None:
    """Play many devices against serving nodes: throughput, goodput, latency and SLO
    attainment per model."""
    from edgeweave import formats
    from edgeweave.runtime.loadgen_target import GrpcTarget
    from edgeweave.runtime.whole_model import whole_model
    from edgeweave.security import ClientTLS, load_token
    from edgeweave.serve import ServingConfig, resolve
    from edgeweave.serve.config import NodeServing
    from edgeweave.serve.loadgen import (
        Fallback,
        closed_loop,
        from_trace,
        open_loop,
        poisson,
        summarize,
    )

    console = Console()
    if token_file is None and cert_dir is None:
        raise EdgeWeaveError("loadgen: give --token-file or --cert-dir (nodes refuse "
                             "unauthenticated calls)")
    knobs = ServingConfig(max_batch=max_batch, max_delay_ms=max_delay_ms,
                          preferred_batch=_sizes(preferred_batch), slo_ms=slo_ms,
                          adaptive=adaptive)
    # names a bad knob here; the node checks them against its own bounds (--max-batch 0 is
    # "the node's", so preferred sizes are bounded only by the flag's own limit until then)
    resolve(knobs, NodeServing(max_batch=max_batch or 1024, max_queue=1))
    token = load_token(token_file) if token_file else None
    tls = ClientTLS.for_node(cert_dir, "device") if cert_dir else None
    names = list(dict.fromkeys(model))
    with console.status(f"capturing {', '.join(names)}"):
        models = [whole_model(m, _shape(input_shape)) for m in names]
    target = GrpcTarget(edge, models, token, tls, connections, seed=seed, throttle_k=throttle)
    with console.status(f"deploying to {len(edge)} node(s)"):
        limits = target.deploy(knobs)
    console.print("deployed: " + ", ".join(f"{m} (batch up to {b})" for m, b in limits.items()))
    slo = {m: slo_ms / 1000.0 for m in names}
    fallback = Fallback({m: fallback_ms / 1000.0 for m in names}, enabled=not no_fallback)
    try:
        with console.status("loading"):
            if closed:
                run = closed_loop(target, closed, names, duration, slo, think_ms / 1000.0,
                                  fallback, priority, seed)
                mode = f"closed loop, {closed} devices"
            else:
                arrivals = (from_trace(trace, names, clients, seed) if trace else
                            poisson({m: rate / len(names) for m in names}, duration, clients,
                                    seed))
                run = open_loop(target, arrivals, slo, fallback, priority,
                                duration_s=None if trace else duration)
                mode = f"open loop, {'trace ' + str(trace) if trace else f'Poisson {rate:g}/s'}"
    finally:
        if not keep:
            target.remove()
    rows = summarize(run, "edgeweave", mode)
    table = _print(console, rows, run.lag_s)
    run_doc = {"mode": mode, "nodes": list(edge), "seed": seed, "slo_ms": slo_ms,
               "serving": knobs.describe(),
               "rows": [{**r.as_json(), "sent": r.sent} for r in rows],
               "driver_lag_ms": run.lag_s * 1000.0}
    if json_out:
        doc = {formats.FIELD: formats.LOADGEN_RUN, **run_doc}
        json_out.write_text(json.dumps(doc, indent=1))
        console.print(f"results written to {json_out}")
    if plot:
        from edgeweave.serve.loadgen.plot import plot_run

        console.print(f"plot written to {plot_run(run, plot)}")
    if report:
        from edgeweave.cli import reporting

        reporting.write_tables(console, report, "edgeweave loadgen", [table], **run_doc)

def _print(console: Console, rows, lag_s: float) -> Table:
    table = Table(title=rows[0].load if rows else "no requests")
    for col in ("model", "sent", "offered/s", "thru/s", "good/s", "p50 ms", "p99 ms", "SLO",
                "rejected", "throttled", "fallback", "lost"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        table.add_row(r.model, str(r.sent), f"{r.offered_rps:.1f}", f"{r.throughput_rps:.1f}",
                      f"{r.goodput_rps:.1f}", f"{r.p50_ms:.0f}", f"{r.p99_ms:.0f}",
                      f"{r.slo_attainment:.1%}", str(r.rejected), str(r.throttled),
                      str(r.fallback), str(r.lost))
    console.print(table)
    bad = [r.model for r in rows if not r.adds_up]
    if bad:
        console.print(f"[red]counts do not add up for {', '.join(bad)}[/]")
    if lag_s > 0.05:
        console.print(f"[yellow]the load generator fell {lag_s * 1000:.0f} ms behind its "
                      f"schedule at worst (it shares this host)[/]")
    return table
