"""Checks for numeric command-line flags, as typer callbacks: click's ``min=`` lets NaN through
(NaN fails every comparison, so it is never "below the minimum"), and a NaN or infinite timeout
turns a bounded wait into a spin. The error names the flag (click adds it) and the value."""

from __future__ import annotations

import math
from collections.abc import Callable

import typer


def positive(value: float | None) -> float | None:
    """A finite number > 0 (seconds, rates, sizes), or the flag left out."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"must be a finite number > 0, got {value}")
    return value


def within(low: float | None = None, high: float | None = None, *, above: bool = False
           ) -> Callable[[float | None], float | None]:
    """A check accepting a finite value in [low, high] (`above`: strictly greater than `low`)
    or the flag left out. click's own `max=` lets "inf" through when only `min=` is set, and
    `serve --dilation inf` then spins a core forever."""
    def check(value: float | None) -> float | None:
        if value is None:
            return value
        if not math.isfinite(value):
            raise typer.BadParameter(f"{value} is not a finite number; expected "
                                     f"{_range(low, high, above)}")
        too_low = low is not None and (value <= low if above else value < low)
        if too_low or (high is not None and value > high):
            raise typer.BadParameter(f"{value:g} is out of range; expected "
                                     f"{_range(low, high, above)}")
        return value
    return check


def _range(low: float | None, high: float | None, above: bool) -> str:
    if low is None and high is None:
        return "a finite number"
    if high is None:
        return f"a number {'>' if above else '>='} {low:g}"
    if low is None:
        return f"a number <= {high:g}"
    return f"a number {'>' if above else '>='} {low:g} and <= {high:g}"
