"""`edgeweave plan`, `profile`, `models` and `fleets`: the options, and the wiring (topology ->
graph -> profile -> plan, then a table)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from edgeweave.cli.common import FLEET_HELP, LatencySource, Objective, console
from edgeweave.cli.options import integer, number, output_file
from edgeweave.cli.reporting import report_option
from edgeweave.errors import EdgeWeaveError

app = typer.Typer()


def _profile(model: str, fleet: str | None, device: str | None, weights: Path | None,
             warmup: int, repeats: int, source: LatencySource):
    from edgeweave.graph import capture_spec
    from edgeweave.profile import profile_graph
    from edgeweave.topology import DEFAULT_FLEET, load_fleet

    fl = load_fleet(fleet or DEFAULT_FLEET)
    fl.tier_path(device)  # an unknown --device fails here, before the model is even built
    with console.status(f"capturing {model}"):
        graph = capture_spec(model, None if weights is None else str(weights))
    if graph.fallback_reason:
        console.print(f"[yellow]note:[/] {graph.fallback_reason}")
    with console.status(f"measuring {len(graph.nodes)} nodes of {model} on this host"):
        return profile_graph(graph, fl, device, warmup, repeats, source.value)


@app.command()
def profile(
    model: str = typer.Argument(
        ..., help="Model: torchvision name, digits-cnn, or file.py:factory."
    ),
    fleet: str = typer.Option(None, "--fleet", "-f", help=FLEET_HELP),
    device: str = typer.Option(None, "--device", help="Device node of the fleet (default: first)."),
    weights: Path = typer.Option(None, "--weights", help="State-dict file to load into the model."),
    warmup: int = typer.Option(3, callback=integer(ge=0), help="Untimed runs before measuring."),
    repeats: int = typer.Option(10, callback=integer(ge=1),
                                help="Timed runs; each node's median is kept."),
    latency_source: LatencySource = typer.Option(
        LatencySource.regression, help="Scale the regression's prediction or the raw measurement."
    ),
    json_out: Path = typer.Option(None, "--json", callback=output_file,
                                  help="Write the profile JSON here."),
    top: int = typer.Option(15, callback=integer(ge=1),
                            help="Rows of the per-node table (slowest on the device first)."),
    report: Path = report_option(),
) -> None:
    """Measure every layer on this host and predict its latency and energy on each tier."""
    from edgeweave.cli import render, reporting
    from edgeweave.cli.options import writing

    prof = _profile(model, fleet, device, weights, warmup, repeats, latency_source)
    table = render.profile_table(console, prof, top)
    if json_out:
        with writing("--json", json_out):
            prof.save(json_out)
        console.print(f"profile written to {json_out}")
    if report:
        totals = {t: round(sum(n.latency_ms[t] for n in prof.nodes), 3) for t in prof.tiers}
        reporting.write_tables(console, report, "edgeweave profile", [table], model=prof.model,
                               fleet=prof.fleet, nodes=len(prof.nodes), whole_model_ms=totals)


@app.command()
def plan(
    model: str = typer.Argument(None, help="Model to profile and plan (omit with --profile)."),
    profile_file: Path = typer.Option(None, "--profile", help="Plan from a saved profile JSON."),
    fleet: str = typer.Option(None, "--fleet", "-f", help=FLEET_HELP),
    device: str = typer.Option(None, "--device", help="Device node of the fleet (default: first)."),
    objective: Objective = typer.Option(Objective.latency, help="What to minimise."),
    slo_ms: float = typer.Option(None, "--slo-ms", callback=number(gt=0),
                                 help="Latency service-level objective (ms)."),
    device_mem_mb: float = typer.Option(
        None, "--device-mem-mb", callback=number(gt=0),
        help="Most parameter memory the device may hold (MiB)."
    ),
    mbps: float = typer.Option(
        None, "--mbps", callback=number(gt=0),
        help="Override the first hop's bandwidth (Mbit/s), e.g. for a sweep."
    ),
    weights: Path = typer.Option(None, "--weights", help="State-dict file to load into the model."),
    warmup: int = typer.Option(3, callback=integer(ge=0), help="Untimed runs before measuring."),
    repeats: int = typer.Option(10, callback=integer(ge=1),
                                help="Timed runs; each node's median is kept."),
    codec: str = typer.Option("none", help="Candidate activation codecs per cut, comma-"
                              "separated (none, fp16, int8, zstd, int8+zstd, ...) or auto."),
    json_out: Path = typer.Option(None, "--json", callback=output_file,
                                  help="Write the plan JSON here."),
    plot: Path = typer.Option(None, "--plot", callback=output_file,
                              help="Write the per-layer latency/size PNG here."),
    report: Path = report_option(),
) -> None:
    """Choose where each layer runs and compare with every inference mode."""
    from edgeweave.cli import render, reporting
    from edgeweave.cli.options import OptionError, write_output, writing
    from edgeweave.cli.runtime_cmds import codec_candidates
    from edgeweave.plan import plan as make_plan
    from edgeweave.plan import plot_plan
    from edgeweave.profile import load_profile, retarget
    from edgeweave.topology import load_fleet

    if (model is None) == (profile_file is None):
        raise EdgeWeaveError("give either a MODEL to profile or --profile FILE, not both/neither")
    try:
        codecs = codec_candidates(codec)  # before profiling: a typo costs nothing
    except EdgeWeaveError as e:
        raise OptionError(f"--codec: {str(e).removeprefix('codec: ')}") from None
    if profile_file is not None:
        prof = load_profile(profile_file)
        if fleet or device:
            fl = load_fleet(fleet) if fleet else None
            if fl is None:
                raise EdgeWeaveError("--device with --profile needs --fleet too")
            prof = retarget(prof, fl.tier_path(device), fl.name)
    else:
        prof = _profile(model, fleet, device, weights, warmup, repeats, LatencySource.regression)
    if mbps is not None:
        prof = prof.with_link(prof.hop_names()[0], mbps=mbps)
    result = make_plan(prof, objective.value, slo_ms, device_mem_mb, codecs)
    render.plan_table(console, result)
    text = json.dumps(result.to_json(), indent=1)
    if json_out:
        write_output("--json", json_out, text)
        console.print(f"plan written to {json_out}")
    if plot:
        with writing("--plot", plot):
            plot_plan(result, plot)
        console.print(f"figure written to {plot}")
    if report:
        source = json_out or reporting.beside(report, "plan")
        if not json_out:
            write_output("--report", source, text)
        reporting.write(console, report, [source])


@app.command()
def fleets() -> None:
    """List the built-in fleets."""
    from edgeweave.cli import render
    from edgeweave.topology import list_builtin_fleets, load_fleet

    render.fleets_table(console, [load_fleet(n) for n in list_builtin_fleets()])


@app.command()
def models() -> None:
    """List the built-in model specifiers."""
    from edgeweave.cli import render
    from edgeweave.graph import list_models

    render.models_table(console, list_models())
