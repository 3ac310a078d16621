"""Range checks for numeric command-line flags, as typer callbacks.

click's own `min=`/`max=` let "nan" through (every comparison with NaN is false) and "inf"
through when only a minimum is set, and a flag such as `serve --dilation inf` then spins a core
forever. A bad value is one usage error naming the flag and the accepted range.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import typer


def within(low: float | None = None, high: float | None = None, *, above: bool = False
           ) -> Callable[[float | None], float | None]:
    """Accept a finite value in [low, high] (`above`: strictly greater than `low`); None (flag
    not given) passes."""
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
