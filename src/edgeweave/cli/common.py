"""What several command modules share: the console, option help texts and choices."""

from __future__ import annotations

from enum import StrEnum

import typer
from rich.console import Console

from edgeweave.cli.options import OptionError, check_number, flag_of, number

console = Console()


class Objective(StrEnum):
    latency = "latency"
    energy = "energy"
    throughput = "throughput"


class LatencySource(StrEnum):
    regression = "regression"
    measured = "measured"


FLEET_HELP = "Fleet YAML file or built-in fleet name (see `edgeweave fleets`)."
MBPS = number(gt=0, le=1e6)
MBPS_HELP = "Override the first hop's bandwidth (Mbit/s)."
FALLBACK_HELP = ("Run locally when the edge cannot be used at all: unreachable, refusing the "
                 "token or the TLS handshake (default: exit with an error naming the cause).")
THROTTLE_HELP = ("Devices keep back what an edge has been refusing, sending it at most this "
                 "many times what it accepts and answering the rest themselves at once "
                 "(client-side throttling, e.g. 1.5; 0: off, or at least 1).")


def throttle(param: typer.CallbackParam, value: float | None) -> float | None:
    """`--throttle`: 0 (off) or a factor from 1 to 100 (below 1 a device would send its edge
    less than the edge accepts)."""
    flag = flag_of(param)
    value = check_number(flag, value, ge=0, le=100)
    if value is not None and 0 < value < 1:
        raise OptionError(f"{flag} {value:g}: expected 0 (off) or at least 1")
    return value
