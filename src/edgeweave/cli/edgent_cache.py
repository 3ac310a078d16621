"""The ``edgeweave adapt edgent --cache DIR`` store: the trained digits branchy net, its exit
accuracies and its profile, so later calls (another ``--slo-ms``, ``--mbps`` or fleet) only
re-plan.

An entry is keyed by every option that changes what it holds (``--side``, ``--width``,
``--epochs``, ``--seed``, and :data:`FORMAT` for the code that built it), spelled in its file
names, so changing ``--width`` trains a new net instead of reusing the old one. An entry is two
files, each replaced atomically: ``<key>.pt`` (the net's state dict, for the user) and
``<key>.json`` (written last, naming the ``.pt``'s sha256: it is the commit record). A
truncated, corrupt or inconsistent entry is reported and rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass
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

#: Bump when the net, its training or the entry's layout changes: old entries stop matching.
FORMAT = 1


@dataclass(frozen=True)
class CacheKey:
    """Every option that changes the trained net or its profile."""

    side: int
    width: int
    epochs: int
    seed: int

    @property
    def stem(self) -> str:
        return (f"edgent-v{FORMAT}-side{self.side}-width{self.width}-epochs{self.epochs}"
                f"-seed{self.seed}")


@dataclass(frozen=True)
class Entry:
    """What a cache entry gives back: the profile (on the fleet it was measured on) and the
    net's description (``side``, ``width``, ``epochs``, ``seed``, ``accuracies``,
    ``exit_points``)."""

    profile: Any
    meta: dict[str, Any]


def load(cache: Path, key: CacheKey, console: Console) -> Entry | None:
    """The entry for ``key`` in ``cache``, or None when there is none or it is unusable (then
    the console says which file and why)."""
    return load_or_none(cache / f"{key.stem}.json",
                        lambda record: _read(record, cache / f"{key.stem}.pt", key), console)


def _read(record: Path, net_file: Path, key: CacheKey) -> Entry:
    doc = read_record(record, FORMAT, asdict(key))
    meta = doc.get("meta")
    acc = meta.get("accuracies") if isinstance(meta, dict) else None
    if not (isinstance(meta, dict) and isinstance(acc, list) and acc
            and all(is_fraction(a) for a in acc)):
        raise CorruptEntry("meta.accuracies: expected a list of accuracies in [0, 1]")
    profile = read_profile(doc.get("profile"), "profile", record)
    try:
        digest = hashlib.sha256(net_file.read_bytes()).hexdigest()
    except OSError as e:
        raise CorruptEntry(f"its net {net_file.name} is unreadable ({e.strerror or e})") from None
    if digest != doc.get("net_sha256"):
        raise CorruptEntry(f"its net {net_file.name} does not match the record's sha256")
    return Entry(profile, {**asdict(key), **meta})


def store(cache: Path, key: CacheKey, state_dict: dict[str, Any], profile: Any,
          meta: dict[str, Any]) -> None:
    """Write the entry for ``key``: the net first, then the record naming its digest, each
    replaced atomically, so a crash at any point leaves either no usable record or a whole
    consistent entry."""
    import torch

    buf = io.BytesIO()
    torch.save(state_dict, buf)
    net = buf.getvalue()
    doc = {"format": FORMAT, "key": asdict(key), "meta": meta, "profile": profile.to_json(),
           "net_sha256": hashlib.sha256(net).hexdigest()}
    write_files(cache, [(f"{key.stem}.pt", net),
                        (f"{key.stem}.json", json.dumps(doc, indent=1).encode())])
