"""`edgeweave adapt exits|compress|select|edgent`: adapting a model to the fleet (early exits,
compressed variants, the variant and its placement, Edgent's exit and cut). The options; the
wiring is edgeweave.cli.adapt_cmds, select_cmds and edgent_cmds."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeweave.cli.common import FLEET_HELP, console
from edgeweave.cli.options import SEED_MAX, cache_dir, integer, number, one_of, output_file
from edgeweave.cli.reporting import report_option

app = typer.Typer(
    name="adapt", no_args_is_help=True,
    help="Adapt a model to the fleet, on real digits: early exits (`exits`), compressed "
         "variants (`compress`), the variant and where it runs (`select`), exit point and "
         "partition together (`edgent`).")


@app.command()
def edgent(
    slo_ms: float = typer.Option(..., "--slo-ms", callback=number(gt=0),
                                 help="Latency requirement per inference (ms)."),
    mbps: float = typer.Option(None, "--mbps", callback=number(gt=0),
                               help="First hop's bandwidth (default: fleet's)."),
    fleet: str = typer.Option(None, "--fleet", "-f", help=FLEET_HELP),
    device: str = typer.Option(None, "--device", help="Device node of the fleet (default: first)."),
    cache: Path = typer.Option(None, "--cache", callback=cache_dir,
                               help="Directory keeping the trained net and its profile, one "
                               "entry per --side/--width/--epochs/--seed; an entry is reused "
                               "when present (then nothing is re-trained)."),
    side: int = typer.Option(32, callback=integer(ge=8, le=128, multiple_of=8),
                             help="Digit image side (8x8 upsampled; a multiple of 8, <= 128)."),
    width: int = typer.Option(32, callback=integer(ge=1, le=128),
                              help="Channels of the first conv stage (<= 128)."),
    epochs: int = typer.Option(6, callback=integer(ge=1),
                               help="Joint training epochs (real sklearn digits)."),
    seed: int = typer.Option(0, callback=integer(ge=0, le=SEED_MAX),
                             help="Seed of the data split and training."),
    trace: Path = typer.Option(None, "--trace", help="Bandwidth trace CSV (t_seconds,mbps): "
                               "also print the dynamic mode's configuration map."),
    states: int = typer.Option(4, callback=integer(ge=1, le=64),
                               help="Bandwidth states of the configuration map (<= 64)."),
    json_out: Path = typer.Option(None, "--json", callback=output_file,
                                  help="Write every (exit, cut) and the choice."),
    plot: Path = typer.Option(None, "--plot", callback=output_file,
                              help="Write accuracy vs latency of each option."),
    report: Path = report_option(),
) -> None:
    """Edgent: choose exit point and device/edge cut of a branchy digits CNN jointly."""
    from edgeweave.cli import edgent_cmds

    edgent_cmds.edgent(console, slo_ms=slo_ms, mbps=mbps, fleet_spec=fleet, device=device,
                       cache=cache, side=side, width=width, epochs=epochs, seed=seed,
                       trace=trace, states=states, json_out=json_out, plot=plot, page=report)


@app.command()
def exits(
    model: str = typer.Argument("digits-cnn", help="nn.Sequential model taking 1x8x8 digits."),
    epochs: int = typer.Option(20, callback=integer(ge=1),
                               help="Joint training epochs (real sklearn digits)."),
    target: float = typer.Option(0.97, callback=number(ge=0.0, le=1.0),
                                 help="Validation accuracy to keep."),
    mode: str = typer.Option("entropy", callback=one_of("entropy", "confidence"),
                             help="entropy or confidence thresholds."),
    json_out: Path = typer.Option(None, "--json", callback=output_file,
                                  help="Write the exit report here."),
    report: Path = report_option(),
) -> None:
    """Attach BranchyNet exits, train them jointly, calibrate thresholds, report per exit."""
    from edgeweave.cli import adapt_cmds

    adapt_cmds.exits(console, model, epochs, target, mode, json_out, page=report)


@app.command()
def compress(
    model: str = typer.Argument("digits-cnn", help="nn.Sequential model taking 1x8x8 digits."),
    epochs: int = typer.Option(30, callback=integer(ge=1),
                               help="Baseline training epochs (real sklearn digits)."),
    sparsity: float = typer.Option(0.85, callback=number(ge=0.0, le=0.99),
                                   help="Magnitude-pruning sparsity."),
    json_out: Path = typer.Option(None, "--json", callback=output_file,
                                  help="Write the variant table here."),
    report: Path = report_option(),
) -> None:
    """Derive int8, pruned, low-rank and distilled variants; size, FLOPs and accuracy each."""
    from edgeweave.cli import adapt_cmds

    adapt_cmds.compress(console, model, epochs, sparsity, json_out, page=report)


@app.command()
def select(
    model: str = typer.Argument("digits-cnn", help="nn.Sequential model taking 1x8x8 digits."),
    fleet: str = typer.Option(None, "--fleet", "-f", help=FLEET_HELP),
    device: str = typer.Option(None, "--device", help="Device node of the fleet (default: first)."),
    objective: str = typer.Option("latency", help="latency or energy: what to minimise."),
    slo_ms: float = typer.Option(None, "--slo-ms", callback=number(gt=0),
                                 help="Latency SLO per inference (ms)."),
    energy_mj: float = typer.Option(None, "--energy-mj", callback=number(gt=0),
                                    help="Device energy budget (mJ/inf)."),
    device_mem_mb: float = typer.Option(None, "--device-mem-mb", callback=number(gt=0),
                                        help="Device parameter MiB."),
    min_acc: float = typer.Option(None, "--min-acc", callback=number(ge=0.0, le=1.0),
                                  help="Minimum validation accuracy (0-1); then the objective is "
                                  "minimised instead of max accuracy."),
    slo_stat: str = typer.Option("mean", help="mean or worst: what the SLO bounds for big/little."),
    epochs: int = typer.Option(15, callback=integer(ge=1),
                               help="Training epochs (real sklearn digits)."),
    mbps: float = typer.Option(None, "--mbps", callback=number(gt=0),
                               help="Override the first hop's bandwidth."),
    cache: Path = typer.Option(None, "--cache", callback=cache_dir,
                               help="Directory keeping the variants' accuracies and profiles, "
                               "one entry per model and --epochs; an entry is reused when "
                               "present (then nothing is re-trained or re-profiled)."),
    json_out: Path = typer.Option(None, "--json", callback=output_file,
                                  help="Write the selection record here."),
    report: Path = report_option(),
) -> None:
    """Choose among compression variants and a big/little pair, and where each runs."""
    from edgeweave.cli import select_cmds

    select_cmds.select(console, model, fleet, device, objective, slo_ms, energy_mj,
                       device_mem_mb, min_acc, slo_stat, epochs, mbps, json_out, page=report,
                       cache=cache)
