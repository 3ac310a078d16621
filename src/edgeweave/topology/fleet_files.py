"""Where fleets come from: the built-in fleet files and YAML read from disk.

A fleet spec is a file path or a built-in name; both end as parsed YAML handed to
:meth:`~edgeweave.topology.fleet.Fleet.from_dict`. Every problem on the way (missing file, a
directory, unreadable text, bad YAML) is one FleetError naming the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from edgeweave.errors import FleetError

DEFAULT_FLEET = "pi4-wifi-edge-cloud"
BUILTIN_FLEETS_DIR = Path(__file__).parent / "fleets"


def list_builtin_fleets() -> list[str]:
    """Names of the fleets shipped with EdgeWeave (usable wherever a fleet file is accepted)."""
    return sorted(p.stem for p in BUILTIN_FLEETS_DIR.glob("*.yaml"))


def resolve_fleet_spec(spec: str | Path) -> Path:
    """The file a fleet spec names: an existing path, else the built-in fleet of that name."""
    path = Path(spec)
    if path.is_file():
        return path
    if isinstance(spec, str) and spec in list_builtin_fleets():
        return BUILTIN_FLEETS_DIR / f"{spec}.yaml"
    if path.is_dir():
        raise FleetError(f"{spec}: is a directory, expected a fleet YAML file")
    looks_like_path = (
        isinstance(spec, Path) or path.suffix in (".yaml", ".yml") or len(path.parts) > 1
    )
    if looks_like_path:
        raise FleetError(f"{spec}: fleet file not found")
    raise FleetError(
        f"unknown fleet {spec!r}: no such file and no built-in fleet of that name "
        f"(built-in: {', '.join(list_builtin_fleets())})"
    )


def read_fleet_yaml(path: Path) -> Any:
    """The parsed YAML of fleet file ``path``; FleetError naming the file and line if unreadable."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FleetError(f"{file}: cannot read fleet file ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = exc.problem or exc.context or "syntax error"
        raise FleetError(f"{file}: {where}invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise FleetError(f"{file}: invalid YAML: {exc}") from None
    return data


def anchor_trace_path(link: Any, base_dir: Path) -> Any:
    """Make a link's relative trace path relative to the YAML file, not the working directory."""
    if isinstance(link, Mapping) and isinstance(link.get("trace"), str):
        trace = Path(link["trace"])
        if not trace.is_absolute():
            return {**link, "trace": str(base_dir / trace)}
    return link
