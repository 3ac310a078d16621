"""`edgeweave simulate`: a whole fleet scenario (thousands of devices) in simulated time. The
options; the wiring is edgeweave.cli.sim_cmds."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeweave.cli.common import console
from edgeweave.cli.options import output_file
from edgeweave.cli.reporting import report_option

app = typer.Typer()


@app.command()
def simulate(
    scenario: Path = typer.Argument(..., help="Scenario YAML file (see examples/sim/)."),
    policy: str = typer.Option(None, "--policy", help="Offloading policy (default: the "
                               "scenario's); one of the names --policies accepts."),
    devices: str = typer.Option(None, "--devices", help="Number of devices (the populations "
                                "keep their proportions); with --sweep, a comma list."),
    seed: str = typer.Option(None, "--seed", help="Random seed; with --sweep, a comma list."),
    duration_s: float = typer.Option(None, "--duration-s", help="Simulated seconds."),
    sweep: bool = typer.Option(False, "--sweep", help="Run every devices x policies x seeds "
                               "point as a Ray task and plot them."),
    policies: str = typer.Option(None, "--policies", help="Policies to sweep, comma-separated "
                                 "(default: all)."),
    address: str = typer.Option(None, "--address", help="Ray cluster address for --sweep "
                                "(default: a local Ray)."),
    serial: bool = typer.Option(False, "--serial", help="Sweep in this process, without Ray."),
    no_training: bool = typer.Option(False, "--no-training", help="Skip the scenario's "
                                     "federated training."),
    json_out: Path = typer.Option(None, "--json", callback=output_file,
                                  help="Write the results JSON here."),
    records: Path = typer.Option(None, "--records", callback=output_file,
                                 help="Write one JSON line per request here (single runs)."),
    plots: Path = typer.Option(None, "--plots", help="Directory for the figures."),
    report: Path = report_option(),
) -> None:
    """Simulate a fleet scenario: thousands of devices, access points, edge servers and clouds
    running the same Plans as the runtime, with mobility, shared links and training."""
    from edgeweave.cli import sim_cmds

    sim_cmds.simulate(console, scenario, policy=policy, devices=devices, seed=seed,
                      duration_s=duration_s, sweep=sweep, policies=policies, address=address,
                      serial=serial, no_training=no_training, json_out=json_out,
                      records=records, plots=plots, report=report)
