"""`--report PATH` on every command that writes results: once the command has written them, the
same HTML page `edgeweave report` makes of them (edgeweave.report.write_report).

The page is built from files on disk, never from live objects, so it can be rebuilt later:
a command whose results have no file of their own (no `--json` given) writes them beside the
report (`report.html` -> `report.plan.json`); a command whose results are the tables it printed
(`adapt`, `decentral`) writes those tables as data there (:func:`write_tables`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.errors import MarkupError
from rich.table import Table
from rich.text import Text

from edgeweave.cli.options import OptionError, output_file, write_output

REPORT_HELP = "Also write the HTML report of this run here (what `edgeweave report` makes)."


def report_option() -> Any:
    """The `--report PATH` option (one instance per command: typer keeps state in it)."""
    return typer.Option(None, "--report", callback=output_file, help=REPORT_HELP)


def beside(report: Path, what: str) -> Path:
    """Where results the user did not ask to keep are written for `report`'s sake."""
    return report.with_name(f"{report.stem}.{what}.json")


def write(console: Console, report: Path, sources: list[Path]) -> None:
    """The page of `sources`; a partial page is a ReportError naming each file at fault."""
    from edgeweave.report import write_report

    path = write_report(sources, report)
    console.print(f"report written to {path}")


def table_json(table: Table) -> dict[str, Any]:
    """A printed table as plain data (title, columns, rows of cell text), so the report shows
    the very table the command printed."""
    columns = list(table.columns)
    cells = [[_plain(c) for c in col.cells] for col in columns]
    return {"title": _plain(table.title or ""), "columns": [_plain(c.header) for c in columns],
            "rows": [list(row) for row in zip(*cells, strict=True)]}


def _plain(cell: object) -> str:
    """A cell as the console showed it: markup applied, styles dropped."""
    if not isinstance(cell, str):
        return cell.plain if isinstance(cell, Text) else str(cell)
    try:
        return Text.from_markup(cell).plain
    except MarkupError:
        return cell


def write_tables(console: Console, report: Path, command: str, tables: list[Table],
                 **values: Any) -> None:
    """The command's printed tables (and a few values) beside `report`, then the page of
    them: the results of commands that keep no results file of their own."""
    from edgeweave import formats

    doc = {formats.FIELD: formats.COMMAND, "command": command, **values,
           "tables": [table_json(t) for t in tables]}
    source = beside(report, command.removeprefix("edgeweave ").replace(" ", "-"))
    write_output("--report", source, json.dumps(doc, indent=1, default=str))
    write(console, report, [source])


def check_run_folder(report: Path | None, out_dir: object, config: Path | None) -> None:
    """A federated run's report is made of its folder: --report needs one, before any round."""
    if report is not None and out_dir is None:
        raise OptionError("--report: the report is made of the run's folder (metrics.jsonl, "
                          "run.json); give --out DIR" + (f" or out_dir in {config}"
                                                         if config is not None else ""))
