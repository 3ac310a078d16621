"""`edgeweave decentral` and `split-learn`: training without a federated server (gossip,
all-reduce, parameter servers) and split between device and edge. The options; the wiring is
edgeweave.cli.decentral_cmds and edgeweave.train.split."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeweave.cli.common import console
from edgeweave.cli.options import number
from edgeweave.cli.reporting import report_option

app = typer.Typer()


@app.command()
def decentral(
    method: list[str] = typer.Option(["gosgd", "dpsgd", "allreduce-sgd", "param-server", "ssp-sa"],
                                     "--method", "-m", help="Methods to compare (repeat)."),
    nodes: int = typer.Option(16, min=2, help="Simulated nodes (or peer processes)."),
    graph: str = typer.Option("ring", help="Peer graph: ring, torus, complete, regular:K, "
                                            "erdos:P, star."),
    rounds: int = typer.Option(60, min=1, help="Rounds (one local step per node each)."),
    lr: float = typer.Option(0.4, callback=number(gt=0), help="Learning rate."),
    model: str = typer.Option("mlp:64,64,10", help="Model spec."),
    partition: str = typer.Option("iid", help="How digits are split across nodes."),
    seed: int = typer.Option(0),
    processes: bool = typer.Option(
        False, "--processes", help="Run the methods that have a real-process version (gosgd, "
        "allreduce-sgd, param-server, ssp, ssp-sa) as processes over gRPC on loopback instead."),
    report: Path = report_option(),
) -> None:
    """Decentralized training without a server (gossip) vs with one, on simulated nodes."""
    from edgeweave.cli import decentral_cmds

    decentral_cmds.decentral(console, methods=method, nodes=nodes, graph=graph, rounds=rounds,
                             lr=lr, model=model, partition=partition, seed=seed,
                             processes=processes, page=report)


_PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True,
                "help_option_names": []}


@app.command("split-learn", context_settings=_PASSTHROUGH, add_help_option=False)
def split_learn(ctx: typer.Context) -> None:
    """Split learning: `split-learn edge --listen ...` serves the edge part; `split-learn device
    [--edge host:port]` trains the device part (in process without --edge). `split-learn -h`
    lists the options."""
    from edgeweave.train.split.__main__ import main as split_main

    raise typer.Exit(split_main(list(ctx.args) or ["--help"], prog="edgeweave split-learn"))
