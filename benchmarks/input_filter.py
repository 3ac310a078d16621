"""Input-filtering cascade (NoScope, FFS-VA) on generated video of real scenes, in process.

The scenario (reference model, streams, optimiser, many-stream run, how frames/s are measured)
is documented in `edgeweave.cli.scenarios.input_filter`, shared with `edgeweave front filter`.

    .venv/bin/python benchmarks/input_filter.py [--occurrence 0.05 0.1 0.25 0.5] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from _zoo import emit
from edgeweave.cli.scenarios.input_filter import Options, run_scenario


def main() -> None:
    d = Options()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", default=d.reference, help="zoo classifier")
    ap.add_argument("--epochs", type=int, default=d.epochs)
    ap.add_argument("--occurrence", type=float, nargs="+", default=list(d.occurrence))
    ap.add_argument("--frames", type=int, nargs=3, default=list(d.frames),
                    metavar=("TRAIN", "TUNE", "TEST"))
    ap.add_argument("--streams", type=int, default=d.streams,
                    help="streams in the many-stream run")
    ap.add_argument("--max-fn", type=float, default=d.max_fn,
                    help="target false-negative rate (of the reference's object frames)")
    ap.add_argument("--max-fp", type=float, default=d.max_fp,
                    help="target false-positive rate (of its empty frames): one false "
                         "object frame marks a whole 30-frame window")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    opts = Options(a.reference, a.epochs, tuple(a.occurrence), tuple(a.frames), a.streams,
                   a.max_fn, a.max_fp, a.seed)
    tables, doc = run_scenario(opts, lambda m: print(m, file=sys.stderr))
    emit(Console(width=160), tables, doc, a.json)


if __name__ == "__main__":
    main()
