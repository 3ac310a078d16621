"""Turn pydantic's validation errors into one FleetError that points at the offending field.

Users edit fleet YAML by hand; a raw pydantic dump ("1 validation error for Fleet ...") hides the
file and speaks in Python types. We rewrite each error as ``file: nodes[0].tier: what was wrong``
so the message reads like a compiler diagnostic the user can act on directly.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from edgeweave.errors import FleetError


def field_path(loc: Sequence[str | int]) -> str:
    """Render a pydantic ``loc`` tuple as ``links[2].mbps``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "<top level>"


def describe_error(error: ErrorDetails) -> str:
    """One human sentence for one pydantic error, preferring our own validator messages.

    Shared by every YAML loader (fleet, experiment), so a field reads the same in each file."""
    kind = error.get("type", "")
    if kind == "value_error":
        # Our own validators raise ValueError with a finished sentence (it names what it got);
        # drop pydantic's "Value error, " prefix and add nothing, or "got" would be said twice.
        ctx_error = error.get("ctx", {}).get("error")
        return str(ctx_error) if ctx_error is not None else str(error.get("msg", ""))
    if kind == "missing":
        return "missing (this field is required)"
    if kind == "extra_forbidden":
        return "unexpected field (check the spelling)"
    return f"{error.get('msg', 'invalid value')}, got {error.get('input')!r}"


def fleet_error_from_validation(exc: ValidationError, file: str) -> FleetError:
    """Collapse a ValidationError into one FleetError naming the file and each field path."""
    problems = [f"{field_path(err['loc'])}: {describe_error(err)}" for err in exc.errors()]
    if len(problems) == 1:
        return FleetError(f"{file}: {problems[0]}")
    listed = "\n".join(f"  {p}" for p in problems)
    return FleetError(f"{file}: {len(problems)} problems:\n{listed}")
