"""What the ``--cache DIR`` stores of ``adapt edgent`` and ``adapt select`` share: a JSON record
per entry, keyed by every option that changes what it holds, replaced atomically, and checked
field by field when read back. A record that cannot be trusted (truncated, another key or
format, a damaged profile) raises :class:`CorruptEntry`; the command says which file and why,
and rebuilds the entry instead of using it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console

from edgeweave.cli.options import writing
from edgeweave.durable import write_atomic
from edgeweave.errors import EdgeWeaveError


class CorruptEntry(EdgeWeaveError):
    """A cache entry that cannot be trusted; the caller rebuilds it."""


def make_dir(cache: Path) -> None:
    """Create the cache directory before any training, so a path that cannot hold it fails
    in a second rather than after the work it was meant to keep."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgeWeaveError(f"--cache: cannot create directory {cache} ({e.strerror or e})"
                             ) from None


def read_record(record: Path, fmt: int, key: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON object in ``record``, made by format ``fmt`` for ``key``, or CorruptEntry."""
    try:
        doc = json.loads(record.read_bytes())
    except OSError as e:
        raise CorruptEntry(f"unreadable ({e.strerror or e})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptEntry(f"not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise CorruptEntry("not a cache record (expected a JSON object)")
    if doc.get("format") != fmt or doc.get("key") != dict(key):
        raise CorruptEntry(f"made for {doc.get('key')} (format {doc.get('format')}), not for "
                           f"{dict(key)} (format {fmt})")
    return doc


def read_profile(value: Any, where: str, record: Path) -> Any:
    """A :class:`~edgeweave.profile.schema.Profile` from a record's field ``where``, checked."""
    from pydantic import ValidationError

    from edgeweave.profile.schema import Profile

    try:
        return Profile.model_validate(value).check(str(record))
    except ValidationError as e:
        err = e.errors()[0]
        raise CorruptEntry(f"{'.'.join(str(x) for x in (where, *err['loc']))}: {err['msg']}"
                           ) from None
    except EdgeWeaveError as e:
        raise CorruptEntry(str(e)) from None


def is_fraction(value: Any) -> bool:
    """A finite number in [0, 1] (JSON allows NaN, which fails both comparisons)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1


def load_or_none(record: Path, read: Any, console: Console) -> Any:
    """``read(record)``, or None when the record is absent or unusable (then the console says
    which file and why)."""
    if not record.exists():
        return None
    try:
        return read(record)
    except CorruptEntry as e:
        console.print(f"[yellow]cache:[/] {record}: {e}; rebuilding it", highlight=False)
        return None


def write_files(cache: Path, files: list[tuple[str, bytes]]) -> None:
    """Replace each file atomically, in order: put the record that commits the entry last."""
    with writing("--cache", cache):
        for name, data in files:
            write_atomic(cache / name, data)
