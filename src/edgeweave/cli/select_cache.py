"""The ``edgeweave adapt select --cache DIR`` store: every candidate's validation accuracy,
notes and measured profile, so later calls (another ``--slo-ms``, ``--objective``, ``--mbps``
or fleet) only choose again instead of re-training and re-profiling the variants.

An entry is keyed by what changes the candidates: the model (a digest of its structure and
initial weights, so a user's edited ``file.py:factory`` is another entry), ``--epochs`` and
:data:`FORMAT`. It is one JSON record, replaced atomically. The profiles are stored as
measured and retargeted to the fleet of each call, as ``adapt edgent``'s are. A truncated or
inconsistent record is reported and rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from edgeweave.cli.entry_cache import (
    CorruptEntry,
    is_fraction,
    load_or_none,
    read_profile,
    read_record,
    write_files,
)

#: Bump when the variants, their training or the record's layout change.
FORMAT = 1


@dataclass(frozen=True)
class CacheKey:
    """Every option that changes the candidates: the model's digest and ``--epochs``."""

    model: str
    epochs: int

    @property
    def stem(self) -> str:
        return f"select-v{FORMAT}-{self.model[:16]}-epochs{self.epochs}"

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "epochs": self.epochs}


def model_digest(module: Any) -> str:
    """sha256 of a model's structure and (initial) weights: equal for the same untrained
    model, different when its code or its seed changes what it starts from."""
    import torch

    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    return hashlib.sha256(repr(module).encode() + buf.getvalue()).hexdigest()


def load(cache: Path, key: CacheKey, console: Console) -> list[Any] | None:
    """The candidates stored for ``key`` (profiles as measured), or None when there are none
    or the record is unusable (then the console says which file and why)."""
    return load_or_none(cache / f"{key.stem}.json", lambda record: _read(record, key), console)


def store(cache: Path, key: CacheKey, candidates: list[Any]) -> None:
    """Write the record for ``key``: each plain candidate with its profile, each big/little
    pair naming the candidates whose profiles it uses."""
    from edgeweave.plan import BigLittleCandidate

    profiles = {c.name: c.profile for c in candidates if not isinstance(c, BigLittleCandidate)}
    rows = []
    for c in candidates:
        row = {"name": c.name, "accuracy": c.accuracy, "notes": dict(c.notes)}
        if isinstance(c, BigLittleCandidate):
            row.update(kind="big-little", little=_name_of(c.little, profiles),
                       big=_name_of(c.big, profiles), escalation_rate=c.escalation_rate,
                       threshold=c.threshold, mode=c.mode)
        else:
            row["kind"] = "model"
        rows.append(row)
    doc = {"format": FORMAT, "key": key.as_dict(), "candidates": rows,
           "profiles": {name: p.to_json() for name, p in profiles.items()}}
    write_files(cache, [(f"{key.stem}.json", json.dumps(doc, indent=1).encode())])


def _name_of(profile: Any, profiles: dict[str, Any]) -> str:
    return next(name for name, p in profiles.items() if p is profile)


def _read(record: Path, key: CacheKey) -> list[Any]:
    from edgeweave.plan import BigLittleCandidate, Candidate

    doc = read_record(record, FORMAT, key.as_dict())
    stored, rows = doc.get("profiles"), doc.get("candidates")
    if not isinstance(stored, dict) or not stored:
        raise CorruptEntry("profiles: expected an object of candidate name -> profile")
    if not isinstance(rows, list) or not rows:
        raise CorruptEntry("candidates: expected a list of candidates")
    profiles = {str(name): read_profile(p, f"profiles.{name}", record)
                for name, p in stored.items()}
    out: list[Any] = []
    for i, row in enumerate(rows):
        where = f"candidates[{i}]"
        if not isinstance(row, dict) or not isinstance(row.get("name"), str):
            raise CorruptEntry(f"{where}: expected an object with a name")
        if not is_fraction(row.get("accuracy")):
            raise CorruptEntry(f"{where}.accuracy: expected an accuracy in [0, 1]")
        notes = row.get("notes", {})
        if not isinstance(notes, dict):
            raise CorruptEntry(f"{where}.notes: expected an object")
        if row.get("kind") == "model" and row["name"] in profiles:
            out.append(Candidate(row["name"], row["accuracy"], profiles[row["name"]], notes))
        elif row.get("kind") == "big-little":
            little, big = row.get("little"), row.get("big")
            if little not in profiles or big not in profiles:
                raise CorruptEntry(f"{where}: little and big must name stored profiles")
            if not is_fraction(row.get("escalation_rate")):
                raise CorruptEntry(f"{where}.escalation_rate: expected a rate in [0, 1]")
            threshold, mode = row.get("threshold"), row.get("mode")
            if not (threshold is None or (isinstance(threshold, int | float)
                    and math.isfinite(threshold))) or not (mode is None or isinstance(mode, str)):
                raise CorruptEntry(f"{where}: threshold must be a number, mode a string")
            out.append(BigLittleCandidate(row["name"], row["accuracy"], profiles[little],
                                          profiles[big], row["escalation_rate"], threshold,
                                          mode, notes))
        else:
            raise CorruptEntry(f"{where}.kind: expected model (with a stored profile) or "
                               "big-little")
    return out
