"""What several command modules share: the console, option help texts and choices."""

from __future__ import annotations

from enum import StrEnum

from rich.console import Console

from edgeweave.cli.options import number

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
