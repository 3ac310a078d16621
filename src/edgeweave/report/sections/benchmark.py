"""A benchmark's `--json` (benchmarks/*.py): the tables it printed, and the values it recorded.

Benchmarks write their printed tables into the JSON (`tables`: title, columns, rows of cell
text; benchmarks/_zoo.py emit), so the page shows exactly what the run printed. A file from
before that carries no `tables`; its lists of records are shown as tables instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeweave import formats
from edgeweave.report.markup import fmt, number
from edgeweave.report.section import Problem, Section, SectionKind

#: Most rows shown per table; the rest are counted (the JSON has them all).
MAX_ROWS = 500
#: Top-level text longer than this is a note, not a value.
NOTE_CHARS = 80


class BenchmarkKind(SectionKind):
    name = "benchmark"
    order = 40
    format_version = formats.BENCHMARK

    def claims_file(self, path: Path, doc: dict[str, Any] | None) -> bool:
        return doc is not None and (isinstance(doc.get("benchmark"), str)
                                    or isinstance(doc.get("tables"), list))

    def build(self, source: Path, doc: dict[str, Any] | None,
              problems: list[Problem]) -> Section:
        assert doc is not None
        name = str(doc.get("benchmark") or source.stem)
        tables = [t for t in doc.get("tables") or [] if _is_table(t)]
        if len(tables) < len(doc.get("tables") or []):
            problems.append(Problem(source, "tables: some entries are not a table (title, "
                                            "columns, rows); they are left out"))
        values, notes = _values(doc)
        sec = Section("benchmark", f"Benchmark: {name}", source)
        sec.numbers = [(k, fmt(v)) for k, v in values if v is not None][:6]
        if not tables:
            tables = _record_tables(doc)
        sec.summary = (f"{len(tables)} table(s)" + (f": {tables[0]['title']}" if tables and
                                                     tables[0]["title"] else ""))
        for note in notes:
            sec.add_note(note)
        for t in tables:
            rows = t["rows"][:MAX_ROWS]
            more = len(t["rows"]) - len(rows)
            sec.add_table([str(c) for c in t["columns"]], rows,
                          caption=str(t["title"]) + (f" (first {MAX_ROWS}; {more} more in the "
                                                     "JSON)" if more > 0 else ""))
        if len(values) > 6:
            sec.add_heading("Recorded values")
            sec.add_table(["value", ""], [[k, v] for k, v in values])
        return sec


def _is_table(t: Any) -> bool:
    return (isinstance(t, dict) and isinstance(t.get("columns"), list)
            and isinstance(t.get("rows"), list) and all(isinstance(r, list) for r in t["rows"]))


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, str | int | float | bool)


def _values(doc: dict[str, Any]) -> tuple[list[tuple[str, Any]], list[str]]:
    """Top-level values (and one level into objects of values), and long texts as notes."""
    values: list[tuple[str, Any]] = []
    notes: list[str] = []
    for key, v in doc.items():
        if key in (formats.FIELD, "benchmark", "tables"):
            continue
        if isinstance(v, str) and len(v) > NOTE_CHARS:
            notes.append(v)
        elif _scalar(v):
            values.append((key.replace("_", " "), v))
        elif isinstance(v, dict) and v and all(_scalar(x) for x in v.values()):
            values += [(f"{key} {k}".replace("_", " "), x) for k, x in v.items()
                       if not (isinstance(x, str) and len(x) > NOTE_CHARS)]
    return values, notes


def _record_tables(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Tables from the lists of records in a JSON without printed tables (older files)."""
    out = []
    for key, v in doc.items():
        if not (isinstance(v, list) and v and all(isinstance(r, dict) for r in v)):
            continue
        flat = [_flatten(r) for r in v]
        columns = list(dict.fromkeys(k for r in flat for k in r))
        out.append({"title": key.replace("_", " "), "columns": columns,
                    "rows": [[_cell(r.get(c)) for c in columns] for r in flat]})
    return out


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in record.items():
        if isinstance(v, dict) and not prefix:
            flat.update(_flatten(v, f"{k}."))
        else:
            flat[prefix + k] = v
    return flat


def _cell(v: Any) -> Any:
    if number(v) is not None or isinstance(v, str | bool) or v is None:
        return v
    return fmt(v) if isinstance(v, list | dict) else str(v)


KIND = BenchmarkKind()
