"""The `edgeweave` command: wires topology -> graph -> profile -> plan; no logic of its own."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console

from edgeweave.cli import render
from edgeweave.errors import EdgeWeaveError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="EdgeWeave: profile a DNN and plan where each layer runs across device, edge and cloud.",
)
console = Console()


class Objective(StrEnum):
    latency = "latency"
    energy = "energy"
    throughput = "throughput"


class LatencySource(StrEnum):
    regression = "regression"
    measured = "measured"


FLEET_HELP = "Fleet YAML file or built-in fleet name (see `edgeweave fleets`)."


def _profile(model: str, fleet: str | None, device: str | None, weights: Path | None,
             warmup: int, repeats: int, source: LatencySource):
    from edgeweave.graph import capture_spec
    from edgeweave.profile import profile_graph
    from edgeweave.topology import DEFAULT_FLEET, load_fleet

    fl = load_fleet(fleet or DEFAULT_FLEET)
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
    warmup: int = typer.Option(3, min=0, help="Untimed runs before measuring."),
    repeats: int = typer.Option(10, min=1, help="Timed runs; each node's median is kept."),
    latency_source: LatencySource = typer.Option(
        LatencySource.regression, help="Scale the regression's prediction or the raw measurement."
    ),
    json_out: Path = typer.Option(None, "--json", help="Write the profile JSON here."),
    top: int = typer.Option(15, help="Rows of the per-node table (slowest on the device first)."),
) -> None:
    """Measure every layer on this host and predict its latency and energy on each tier."""
    prof = _profile(model, fleet, device, weights, warmup, repeats, latency_source)
    render.profile_table(console, prof, top)
    if json_out:
        prof.save(json_out)
        console.print(f"profile written to {json_out}")


@app.command()
def plan(
    model: str = typer.Argument(None, help="Model to profile and plan (omit with --profile)."),
    profile_file: Path = typer.Option(None, "--profile", help="Plan from a saved profile JSON."),
    fleet: str = typer.Option(None, "--fleet", "-f", help=FLEET_HELP),
    device: str = typer.Option(None, "--device", help="Device node of the fleet (default: first)."),
    objective: Objective = typer.Option(Objective.latency, help="What to minimise."),
    slo_ms: float = typer.Option(None, "--slo-ms", help="Latency service-level objective (ms)."),
    device_mem_mb: float = typer.Option(
        None, "--device-mem-mb", help="Most parameter memory the device may hold (MiB)."
    ),
    mbps: float = typer.Option(
        None, "--mbps", help="Override the first hop's bandwidth (Mbit/s), e.g. for a sweep."
    ),
    weights: Path = typer.Option(None, "--weights", help="State-dict file to load into the model."),
    warmup: int = typer.Option(3, min=0, help="Untimed runs before measuring."),
    repeats: int = typer.Option(10, min=1, help="Timed runs; each node's median is kept."),
    json_out: Path = typer.Option(None, "--json", help="Write the plan JSON here."),
    plot: Path = typer.Option(None, "--plot", help="Write the per-layer latency/size PNG here."),
) -> None:
    """Choose where each layer runs and compare with every inference mode."""
    from edgeweave.plan import plan as make_plan
    from edgeweave.plan import plot_plan
    from edgeweave.profile import load_profile, retarget
    from edgeweave.topology import load_fleet

    if (model is None) == (profile_file is None):
        raise EdgeWeaveError("give either a MODEL to profile or --profile FILE, not both/neither")
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
        if mbps <= 0:
            raise EdgeWeaveError(f"--mbps: must be positive, got {mbps}")
        prof = prof.with_link(prof.hop_names()[0], mbps=mbps)
    result = make_plan(prof, objective.value, slo_ms, device_mem_mb)
    render.plan_table(console, result)
    if json_out:
        json_out.write_text(__import__("json").dumps(result.to_json(), indent=1))
        console.print(f"plan written to {json_out}")
    if plot:
        plot_plan(result, plot)
        console.print(f"figure written to {plot}")


@app.command()
def fleets() -> None:
    """List the built-in fleets."""
    from edgeweave.topology import list_builtin_fleets, load_fleet

    render.fleets_table(console, [load_fleet(n) for n in list_builtin_fleets()])


@app.command()
def models() -> None:
    """List the built-in model specifiers."""
    from edgeweave.graph import list_models

    render.models_table(console, list_models())


def main() -> None:
    try:
        app()
    except EdgeWeaveError as e:
        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
