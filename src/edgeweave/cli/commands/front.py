"""`edgeweave front cache|filter`: the stages in front of a served model (semantic cache, input
filter) measured on their benchmark scenarios, with the user's settings for them (the same
YAML file and flags that turn them on for a served model). The options; the wiring is
edgeweave.cli.front_cmds, the scenarios edgeweave.cli.scenarios."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeweave.cli.common import console
from edgeweave.cli.options import SEED_MAX, OptionError, flag_of, integer, output_file
from edgeweave.cli.reporting import report_option

app = typer.Typer(
    name="front", no_args_is_help=True,
    help="Stages in front of a served model that spare it work: the semantic cache (`cache`: "
         "FoggyCache, Cachier, Precog) and the input filter (`filter`: NoScope, FFS-VA), each "
         "run on its benchmark scenario with your settings.")

FRONT_HELP = ("YAML file with `cache:` and/or `filter:` sections (their fields: k, threshold, "
              "capacity, policy, index, radius ...; positive, max_fn, max_fp, learn_frames ...), "
              "as the stages in front of a served model are configured.")


def _fractions(param: typer.CallbackParam, values: list[float]) -> list[float]:
    for v in values:
        if not 0.0 < v < 1.0:
            raise OptionError(f"{flag_of(param)}: expected a fraction in (0, 1), got {v:g}")
    return values


@app.command()
def cache(
    devices: int = typer.Option(4, callback=integer(ge=1, le=64), help="Devices sharing the edge."),
    requests: int = typer.Option(500, callback=integer(ge=10, le=100_000),
                                 help="Requests per device."),
    epochs: int = typer.Option(8, callback=integer(ge=1, le=200),
                               help="Epochs to train digits-cnn."),
    seed: int = typer.Option(0, callback=integer(ge=0, le=SEED_MAX)),
    front: Path = typer.Option(None, "--front", help=FRONT_HELP),
    cache: str = typer.Option(None, "--cache", help="Cache fields, e.g. k=3,threshold=0.7 "
                              "(over the --front file's); adds a row with these settings."),
    json_out: Path = typer.Option(None, "--json", callback=output_file,
                                  help="Write the rows (JSON) here."),
    report: Path = report_option(),
    processes: bool = typer.Option(False, "--processes", help="Serve the model from a real "
                                   "edge node process (`serve --front`) and play the devices "
                                   "against it over gRPC: measured wall-clock latency."),
) -> None:
    """Semantic cache on a correlated stream of real digits: hit rate, reuse taken, agreement,
    p50/p95 with and without, device-only and two-level (in process; link and device latency
    emulated, as the table's note says; --processes: on a local node process)."""
    from edgeweave.cli import front_cmds

    front_cmds.cache_bench(console, devices, requests, epochs, seed, front, cache, json_out,
                           report, processes)


@app.command("filter")
def filter_(
    occurrence: list[float] = typer.Option([0.1], "--occurrence", callback=_fractions,
                                           help="Fraction of frames holding an object (repeat)."),
    frames: int = typer.Option(None, callback=integer(ge=100, le=100_000),
                               help="Test frames per stream (training and tuning: half, all; "
                                    "default 2400, 600 with --processes)."),
    streams: int = typer.Option(None, callback=integer(ge=1, le=64),
                                help="Streams in the many-stream run (default 8; with "
                                     "--processes: devices, default 2)."),
    epochs: int = typer.Option(None, callback=integer(ge=1, le=100),
                               help="Epochs to train the reference model (default 6; 2 with "
                                    "--processes)."),
    seed: int = typer.Option(0, callback=integer(ge=0, le=SEED_MAX)),
    front: Path = typer.Option(None, "--front", help=FRONT_HELP),
    filter: str = typer.Option(None, "--filter", help="Filter fields, e.g. max_fn=0.01,"
                               "max_fp=0.002 (the optimiser's targets; over --front's)."),
    json_out: Path = typer.Option(None, "--json", callback=output_file,
                                  help="Write the rows (JSON) here."),
    report: Path = report_option(),
    processes: bool = typer.Option(False, "--processes", help="Serve the reference from a "
                                   "real edge node process with the filter as its front "
                                   "(`serve --front`), each stream a device asking over gRPC; "
                                   "reports the frames each stream took to learn its filter."),
) -> None:
    """Input-filtering cascade on generated video: frames/s against the reference alone,
    accuracy per frame and 30-frame window, predicted vs measured speedup, many streams (in
    process, CPU time of this thread; --processes: on local node processes, wall clock)."""
    from edgeweave.cli import front_cmds

    front_cmds.filter_bench(console, occurrence, frames, streams, epochs, seed, front, filter,
                            json_out, report, processes)
