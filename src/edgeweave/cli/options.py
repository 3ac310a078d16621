"""Checks for command-line option values, so a bad one stops the command before any work with
one line naming the flag and what it accepts (``--mbps: expected a finite number > 0, got
nan``) instead of a traceback later, or worse, a plan built on NaN or infinity.

Two forms of each check: :func:`check_number`, :func:`check_choice` and :func:`check_output`
for code that holds a flag's value (or a YAML field's: pass its name as ``flag``), and the typer
callbacks :func:`number`, :func:`integer`, :func:`one_of`, :func:`output_file` and
:func:`cache_dir`, which run while the command line is parsed and name the option themselves::

    mbps: float = typer.Option(None, "--mbps", callback=number(gt=0))
    repeats: int = typer.Option(10, callback=integer(ge=1))
    json_out: Path = typer.Option(None, "--json", callback=output_file)
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import typer

from edgeweave.errors import EdgeWeaveError

N = TypeVar("N", int, float)

#: The seed range NumPy and scikit-learn accept (a uint32); torch takes a superset.
SEED_MAX = 2**32 - 1


class OptionError(EdgeWeaveError):
    """A command-line option (or a config field) has a value the command cannot use."""


def _show(value: object) -> str:
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return str(int(value))  # "-1", as typed, not "-1.0"
    return str(value)


def describe(*, gt: float | None = None, ge: float | None = None, lt: float | None = None,
             le: float | None = None, integer: bool = False, multiple_of: int | None = None
             ) -> str:
    """What a range accepts in words: "a finite number > 0", "an integer in [0, 10]"."""
    what = (f"a multiple of {multiple_of}" if multiple_of else
            "an integer" if integer else "a finite number")
    low = None if gt is None and ge is None else ("(" if gt is not None else "[",
                                                   gt if gt is not None else ge)
    high = None if lt is None and le is None else (")" if lt is not None else "]",
                                                    lt if lt is not None else le)
    if low and high:
        return f"{what} in {low[0]}{_show(low[1])}, {_show(high[1])}{high[0]}"
    if low:
        return f"{what} {'>' if low[0] == '(' else '>='} {_show(low[1])}"
    if high:
        return f"{what} {'<' if high[0] == ')' else '<='} {_show(high[1])}"
    return what


def check_number(flag: str, value: N | None, *, gt: float | None = None,
                 ge: float | None = None, lt: float | None = None, le: float | None = None,
                 integer: bool = False, multiple_of: int | None = None) -> N | None:
    """``value`` if it is finite and within the bounds (None passes: an unset option), else an
    :class:`OptionError` naming ``flag``, the accepted range and the value."""
    if value is None:
        return None
    ok = (not isinstance(value, bool) and isinstance(value, int | float)
          and math.isfinite(value) and (not integer or float(value).is_integer())
          and (gt is None or value > gt) and (ge is None or value >= ge)
          and (lt is None or value < lt) and (le is None or value <= le)
          and (not multiple_of or value % multiple_of == 0))
    if not ok:
        want = describe(gt=gt, ge=ge, lt=lt, le=le, integer=integer, multiple_of=multiple_of)
        raise OptionError(f"{flag}: expected {want}, got {_show(value)}")
    return value


def flag_of(param: typer.CallbackParam) -> str:
    """The name a user typed for ``param``: its long option ("--slo-ms"), else its name."""
    longs = [o for o in getattr(param, "opts", []) if o.startswith("--")]
    return max(longs, key=len) if longs else (param.name or "?").upper()


def number(*, gt: float | None = None, ge: float | None = None, lt: float | None = None,
           le: float | None = None) -> Callable[[typer.CallbackParam, float | None], float | None]:
    """A typer callback: the option must be a finite float within the bounds."""

    def check(param: typer.CallbackParam, value: float | None) -> float | None:
        return check_number(flag_of(param), value, gt=gt, ge=ge, lt=lt, le=le)

    return check


def integer(*, ge: int | None = None, le: int | None = None, multiple_of: int | None = None
            ) -> Callable[[typer.CallbackParam, int | None], int | None]:
    """A typer callback: the option must be an integer within the bounds."""

    def check(param: typer.CallbackParam, value: int | None) -> int | None:
        return check_number(flag_of(param), value, ge=ge, le=le, integer=True,
                            multiple_of=multiple_of)

    return check


def check_choice(flag: str, value: str | None, choices: tuple[str, ...]) -> str | None:
    """``value`` if it is one of ``choices`` (None passes), else an :class:`OptionError`."""
    if value is not None and value not in choices:
        raise OptionError(f"{flag}: expected {' or '.join(choices)}, got {value!r}")
    return value


def one_of(*choices: str) -> Callable[[typer.CallbackParam, str | None], str | None]:
    """A typer callback: the option must be one of ``choices``."""

    def check(param: typer.CallbackParam, value: str | None) -> str | None:
        return check_choice(flag_of(param), value, choices)

    return check


def check_output(flag: str, path: Path | None) -> Path | None:
    """``path`` if a file can be written there: its directory exists and it is not itself a
    directory. Checked before the work, so an hour of training is not lost to a typo."""
    if path is None:
        return None
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OptionError(f"{flag}: {path} is a directory; give a file name")
    if not parent.is_dir():
        raise OptionError(f"{flag}: cannot write {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OptionError(f"{flag}: cannot write {path}: directory {parent} is not writable")
    return path


def output_file(param: typer.CallbackParam, value: Path | None) -> Path | None:
    """A typer callback: :func:`check_output` on the option."""
    return check_output(flag_of(param), value)


def cache_dir(param: typer.CallbackParam, value: Path | None) -> Path | None:
    """A typer callback: the option names a directory, or a path where one can be made (its
    nearest existing ancestor is a writable directory). Nothing is created here."""
    if value is None:
        return None
    flag = flag_of(param)
    if value.exists() and not value.is_dir():
        raise OptionError(f"{flag}: {value} is a file; give a directory")
    near = value
    while not near.exists() and near != near.parent:
        near = near.parent
    if not near.is_dir():
        raise OptionError(f"{flag}: cannot create directory {value}: {near} is a file")
    if not os.access(near, os.W_OK | os.X_OK):
        raise OptionError(f"{flag}: cannot create or write directory {value}: {near} is not "
                          "writable")
    return value


@contextmanager
def writing(flag: str, path: Path) -> Iterator[None]:
    """Around code that writes the file a flag names: a failure there (disk full, the
    directory gone meanwhile) is one line naming the flag instead of a traceback."""
    try:
        yield
    except OSError as e:
        raise OptionError(f"{flag}: cannot write {path} ({e.strerror or e})") from None


def write_output(flag: str, path: Path, text: str) -> None:
    """Write a command's output file atomically: a crash leaves the old file or the new one,
    never half of one."""
    from edgeweave.durable import write_atomic

    with writing(flag, path):
        write_atomic(path, text.encode())
