"""Semantic cache (FoggyCache, Cachier, Precog) on a correlated workload of real digits, in process.

The scenario (what runs, how latency is emulated, how the workloads are made) is documented in
`edgeweave.cli.scenarios.semantic_cache`, shared with `edgeweave front cache`.

    .venv/bin/python benchmarks/semantic_cache.py [--requests 500] [--devices 4] [--json out.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from _zoo import emit
from edgeweave.cli.scenarios.semantic_cache import Options, run_scenario


def main() -> None:
    d = Options()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=d.devices)
    ap.add_argument("--requests", type=int, default=d.requests, help="requests per device")
    ap.add_argument("--epochs", type=int, default=d.epochs)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--agreement", type=float, default=d.agreement,
                    help="radius calibration: hits' agreement with the model on the warm-up replay")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    tables, doc = run_scenario(Options(args.devices, args.requests, args.epochs, args.seed,
                                       args.agreement))
    emit(Console(width=160), tables, doc, args.json)


if __name__ == "__main__":
    main()
