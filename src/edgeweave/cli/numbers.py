"""Checks for numeric command-line flags, as typer callbacks: click's ``min=`` lets NaN through
(NaN fails every comparison, so it is never "below the minimum"), and a NaN or infinite timeout
turns a bounded wait into a spin. The error names the flag (click adds it) and the value."""

from __future__ import annotations

import math

import typer


def positive(value: float | None) -> float | None:
    """A finite number > 0 (seconds, rates, sizes), or the flag left out."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"must be a finite number > 0, got {value}")
    return value
