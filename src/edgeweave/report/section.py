"""A section of the report and the protocol of the kinds of result that make sections.

A kind (plan, runtime run, federated run, benchmark, ...) says which files or folders are
its own, judged by their content, and turns one into a Section. Each kind is one module in
`edgeweave.report.sections`; the registry finds them there, so a new kind of result (serving
load tests, multi-device runs, simulations) is one new file and nothing else changes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from edgeweave.report import markup


@dataclass(frozen=True)
class Problem:
    """Why one input could not be read, or read only in part (shown on the page and raised)."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    @classmethod
    def of(cls, path: Path, error: Exception) -> Problem:
        """From an error whose message starts with the file at fault (`error.path` when it
        names one, else `path`), as ReportError's do."""
        at = getattr(error, "path", None) or path
        return cls(Path(at), str(error).removeprefix(f"{at}: "))


@dataclass
class Section:
    """One result on the page: what it is, its key numbers first, then tables and plots."""

    kind: str
    title: str
    source: Path
    summary: str = ""  # one line for the page's "what was run" table
    numbers: list[tuple[str, str]] = field(default_factory=list)
    blocks: list[str | _PendingFigure] = field(default_factory=list)
    anchor: str = ""  # unique id on the page, given by the page
    plots: int = 0

    def add_heading(self, text: str) -> None:
        self.blocks.append(f"<h3>{markup.esc(text)}</h3>")

    def add_note(self, text: str) -> None:
        self.blocks.append(f'<p class="note">{markup.esc(text)}</p>')

    def add_table(self, columns: list[str], rows: list[list[Any]], **kw: Any) -> None:
        self.blocks.append(markup.table(columns, rows, **kw))

    def add_figure(self, fig: Any, caption: str = "") -> None:
        """A plotly figure; its div id is made unique once the page gives the anchor."""
        self.plots += 1
        self.blocks.append(_PendingFigure(fig, self.plots, caption))

    def html_blocks(self) -> list[str]:
        return [b.render(self.anchor) if isinstance(b, _PendingFigure) else b
                for b in self.blocks]


@dataclass
class _PendingFigure:
    fig: Any
    n: int
    caption: str

    def render(self, anchor: str) -> str:
        return markup.figure(self.fig, f"{anchor}-plot{self.n}", self.caption)


class SectionKind(ABC):
    """One kind of result: which inputs are its own, and how to show one."""

    #: short name, used in section ids and the "what was run" table
    name: ClassVar[str]
    #: position on the page (smaller first): plans, then runs, then training, then benchmarks
    order: ClassVar[int] = 50
    #: the newest `format_version` of its files this code reads (edgeweave.formats)
    format_version: ClassVar[int]

    def claims_dir(self, path: Path) -> bool:
        """Whether a folder is one result of this kind (e.g. a federated run's out_dir)."""
        return False

    def claims_file(self, path: Path, doc: dict[str, Any] | None) -> bool:
        """Whether a file is (part of) one result of this kind; `doc` is the parsed JSON object
        for a .json file, None for other files."""
        return False

    def source_of(self, path: Path) -> Path:
        """The file or folder the section is built from (a run's folder, given its run.json)."""
        return path

    @abstractmethod
    def build(self, source: Path, doc: dict[str, Any] | None,
              problems: list[Problem]) -> Section:
        """The section for `source`. Raise ReportError when nothing of it can be shown; append
        to `problems` for parts that could not be read (the rest is still shown)."""
