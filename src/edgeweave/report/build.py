"""`write_report(paths, out)`: the facade the `report` command (and any command's `--report`)
calls: find the results in the inputs, build a section for each, write the page.

A bad input never stops the others: the page is written with every section that could be
read and lists the problems; then a ReportError names each file at fault, so a script (or
the CLI's exit status) still learns the report is partial.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgeweave.errors import ReportError
from edgeweave.report.inputs import check_version, find_results
from edgeweave.report.registry import kinds
from edgeweave.report.section import Problem, Section

DEFAULT_TITLE = "EdgeWeave report"


@dataclass
class Report:
    sections: list[Section]
    problems: list[Problem]
    skipped: list[Path]


def build_report(paths: Sequence[str | Path]) -> Report:
    found = find_results([Path(p) for p in paths], kinds())
    sections, problems = [], list(found.problems)
    for kind, source, doc in found.items:
        try:
            if doc is not None:
                check_version(source, doc, kind.format_version)
            sections.append(kind.build(source, doc, problems))
        except ReportError as e:
            problems.append(Problem.of(source, e))
    order = {k.name: k.order for k in kinds()}
    sections.sort(key=lambda s: order.get(s.kind, 99))  # stable: input order within a kind
    return Report(sections, problems, found.skipped)


def write_report(paths: Sequence[str | Path], out: str | Path, title: str | None = None) -> Path:
    """Write one self-contained HTML page of the results in `paths` (files, or folders searched
    for results) to `out`. Raises ReportError, after writing the page of what could be read,
    when an input could not be read in full."""
    from edgeweave import __version__
    from edgeweave.report.page import render

    if not paths:
        raise ReportError("no results given: name result files or folders")
    report = build_report(paths)
    target = Path(out)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render(report.sections, report.problems, report.skipped,
                                 title or DEFAULT_TITLE, __version__), encoding="utf-8")
    except OSError as e:
        raise ReportError(f"{target}: cannot write the report ({e.strerror})") from None
    if report.problems:
        what = ("partial report" if report.sections else "report with nothing in it")
        lines = "\n".join(f"  {p}" for p in report.problems)
        raise ReportError(f"{what} written to {target}; could not read:\n{lines}")
    return target
