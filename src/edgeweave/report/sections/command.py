"""The tables a command printed, kept for its `--report` (`edgeweave adapt ...`, `decentral`):
shown as a benchmark's are, under the command's name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeweave import formats
from edgeweave.report.section import Problem, Section
from edgeweave.report.sections.benchmark import BenchmarkKind


class CommandKind(BenchmarkKind):
    name = "command"
    order = 35  # before benchmarks, which would claim any document with tables
    format_version = formats.COMMAND

    def claims_file(self, path: Path, doc: dict[str, Any] | None) -> bool:
        return (doc is not None and isinstance(doc.get("command"), str)
                and isinstance(doc.get("tables"), list))

    def build(self, source: Path, doc: dict[str, Any] | None,
              problems: list[Problem]) -> Section:
        assert doc is not None
        rest = {k: v for k, v in doc.items() if k != "command"}
        sec = super().build(source, rest, problems)
        sec.kind, sec.title = self.name, str(doc["command"])
        return sec


KIND = CommandKind()
