"""Reading the report's inputs: JSON and JSONL files with errors that name the file, version
checks, and finding the results in the folders a user names.

Every problem is about one file and says what is wrong with it in the user's terms; the caller
keeps going with the other inputs, so a report is always written of what could be read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeweave import formats
from edgeweave.errors import ReportError
from edgeweave.report.section import Problem, SectionKind

#: A results file larger than this is not read (results are KiBs to a few MiB).
MAX_FILE_BYTES = 64 << 20
#: How deep a named folder is searched for results (out/fl/<run>/metrics.jsonl is 2).
MAX_DEPTH = 4
KNOWN_RESULTS = ("the --json of plan, infer, lab or netlab, a federated run's folder with "
                 "metrics.jsonl, a benchmark's --json, or the tables a command kept for its "
                 "--report")


def _text(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ReportError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB, not a results "
                              "file", path)
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ReportError(f"{path}: not a text file", path) from None
    except OSError as e:
        raise ReportError(f"{path}: cannot be read ({e.strerror})", path) from None


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or a ReportError naming the file and the line at fault."""
    try:
        doc = json.loads(_text(path))
    except json.JSONDecodeError as e:
        raise ReportError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})", path) from None
    if not isinstance(doc, dict):
        raise ReportError(f"{path}: expected a JSON object, found a {type(doc).__name__}", path)
    return doc


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], str | None]:
    """The JSON objects of a JSONL file, and what was wrong with the lines that are not one
    (None when every line read). Blank lines are ignored."""
    rows, bad = [], []
    first_error = ""
    for n, line in enumerate(_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            bad.append(n)
            first_error = first_error or f"line {n}: not valid JSON ({e.msg})"
            continue
        if not isinstance(row, dict):
            bad.append(n)
            first_error = first_error or f"line {n}: expected a JSON object"
            continue
        rows.append(row)
    if not bad:
        return rows, None
    lines = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
    return rows, (f"{len(bad)} unreadable line(s) skipped (line {lines}); first: {first_error}"
                  if len(bad) > 1 else f"unreadable line skipped: {first_error}")


def check_version(path: Path, doc: dict[str, Any], known: int) -> None:
    """Refuse a file written by a newer EdgeWeave (its layout may mean something else)."""
    v = formats.version_of(doc)
    if v is None:
        raise ReportError(f"{path}: {formats.FIELD} must be an integer, found "
                          f"{doc.get(formats.FIELD)!r}", path)
    if v > known:
        raise ReportError(f"{path}: written by a newer EdgeWeave ({formats.FIELD} {v}; this one "
                          f"reads up to {known}); upgrade EdgeWeave to report it", path)


@dataclass
class Found:
    """The results found in the inputs: (kind, source, parsed JSON or None) in input order."""

    items: list[tuple[SectionKind, Path, dict[str, Any] | None]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # files in folders that are not results
    _seen: set[tuple[str, Path]] = field(default_factory=set)

    def add(self, kind: SectionKind, source: Path, doc: dict[str, Any] | None) -> None:
        key = (kind.name, source.resolve())
        if key not in self._seen:
            self._seen.add(key)
            self.items.append((kind, source, doc))


def find_results(paths: Sequence[Path], kinds: Sequence[SectionKind]) -> Found:
    """The results in `paths`: each a results file, or a folder searched for them."""
    found = Found()
    for path in paths:
        before = len(found.items) + len(found.problems)
        if path.is_dir():
            _walk(path, kinds, found, 0)
            if len(found.items) + len(found.problems) == before:
                found.problems.append(Problem(path, f"no results found in this folder "
                                                    f"(looked for {KNOWN_RESULTS})"))
        elif path.exists():
            if not _claim_file(path, kinds, found, strict=True):
                found.problems.append(Problem(path, f"not a result the report knows "
                                                    f"(expected {KNOWN_RESULTS})"))
        else:
            found.problems.append(Problem(path, "no such file or folder"))
    return found


def _walk(folder: Path, kinds: Sequence[SectionKind], found: Found, depth: int) -> None:
    owner = next((k for k in kinds if k.claims_dir(folder)), None)
    if owner is not None:
        found.add(owner, owner.source_of(folder), None)
        return
    try:
        children = sorted(folder.iterdir())
    except OSError as e:
        found.problems.append(Problem(folder, f"cannot be listed ({e.strerror})"))
        return
    for child in children:
        if child.name.startswith("."):
            continue
        if child.is_dir():
            if depth < MAX_DEPTH:
                _walk(child, kinds, found, depth + 1)
        elif child.suffix in (".json", ".jsonl") and not _claim_file(child, kinds, found,
                                                                      strict=False):
            found.skipped.append(child)


def _claim_file(path: Path, kinds: Sequence[SectionKind], found: Found, strict: bool) -> bool:
    """Hand a file to the kind that claims it; False when none does. A .json file that cannot
    be parsed is a problem either way (in a results folder it was most likely a result)."""
    doc = None
    if path.suffix == ".json" or (strict and path.suffix != ".jsonl"):
        try:
            doc = read_json(path)
        except ReportError as e:
            found.problems.append(Problem.of(path, e))
            return True
    owner = next((k for k in kinds if k.claims_file(path, doc)), None)
    if owner is None:
        return False
    source = owner.source_of(path)
    found.add(owner, source, doc if source == path else None)  # the kind reads its folder
    return True
