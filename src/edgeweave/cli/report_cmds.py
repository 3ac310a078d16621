"""`edgeweave report RUN... -o report.html`: wiring only (edgeweave.report.write_report)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console


def report(
    runs: list[Path] = typer.Argument(
        ..., metavar="RUN...", help="Result files or folders: a plan or run JSON (--json of "
        "plan, infer, lab, netlab), a federated run's folder (`fl run`/`fl server` out_dir), a "
        "benchmark's --json, or a folder holding any of them."),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="HTML file to write."),
    title: str = typer.Option(None, "--title", help="Page title [EdgeWeave report]."),
) -> None:
    """Write one self-contained HTML page (plots inlined, opens offline) of what runs wrote."""
    from edgeweave.report import write_report

    path = write_report(runs, out, title)
    Console().print(f"report written to {path}")
