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
    lists the options; `--report PATH` also writes the page of the records it printed."""
    from edgeweave.train.split.__main__ import main as split_main

    args, report = _take_report(list(ctx.args))
    if report is None:
        raise typer.Exit(split_main(args or ["--help"], prog="edgeweave split-learn"))
    import contextlib
    import io
    import json

    printed = io.StringIO()
    with contextlib.redirect_stdout(_Tee(printed)):
        code = split_main(args or ["--help"], prog="edgeweave split-learn")
    records = []
    for line in printed.getvalue().splitlines():
        with contextlib.suppress(ValueError):
            doc = json.loads(line)
            if isinstance(doc, dict):
                records.append(doc)
    if code == 0 and records:
        from rich.table import Table

        from edgeweave.cli import reporting

        columns = list(dict.fromkeys(k for r in records for k in r))
        table = Table(title="split learning")
        for c in columns:
            table.add_column(c)
        for r in records:
            table.add_row(*(str(r.get(c, "")) for c in columns))
        reporting.write_tables(console, report, "edgeweave split-learn", [table])
    raise typer.Exit(code)


def _take_report(args: list[str]) -> tuple[list[str], Path | None]:
    """`--report PATH` (or `--report=PATH`) out of split learning's own arguments."""
    from edgeweave.cli.options import OptionError, check_output

    rest, report = [], None
    it = iter(args)
    for a in it:
        if a == "--report" or a.startswith("--report="):
            value = a.partition("=")[2] if "=" in a else next(it, None)
            if not value:
                raise OptionError("--report: expected a file path (e.g. --report page.html)")
            report = check_output("--report", Path(value))
        else:
            rest.append(a)
    return rest, report


class _Tee:
    """Writes to the real stdout and keeps a copy (the records split learning prints)."""

    def __init__(self, copy):
        import sys

        self.out, self.copy = sys.stdout, copy

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.out.write(text)

    def flush(self) -> None:
        self.out.flush()
