"""Issue 12's probes, re-run: what a hostile peer holding the fleet's token can still do.

Three groups, each from its own module (run one alone with its own ``__main__``):

  runtime  (_harden_runtime.py)  a real `edgeweave serve` edge: peak RSS under a 32 KB zstd
           payload declared as 1 GiB float32; Health and normal-request latency while 40
           requests stamped 15 s ahead are in flight; SIGTERM after malformed InferStreams.
  deploy   (_harden_deploy.py)   a real edge receiving 4 concurrent uploads of VGG-16's
           classifier stage (about 470 MiB of weights each): peak RSS growth, accepted/refused.
  fl       (_harden_fl.py)       FedAvg on digits over loopback gRPC, 3 devices, one sending a
           zero model and claiming 2^62 examples: test accuracy honest / attacked, with and
           without the num_examples bound, and under fedmedian.

The issue's figures before the fix: bomb 0.65 -> 2.8 GB; Health blocked 14 s; 16 of 22 nodes
hung on SIGTERM; 4 concurrent 400 MiB deploys +4 GB; attacked accuracy 0.08 against 0.936.

    .venv/bin/python benchmarks/hardening.py [--only runtime,deploy,fl] [--json PATH]
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from rich.console import Console
from rich.table import Table

import _harden_deploy
import _harden_fl
import _harden_runtime
from _zoo import emit

GROUPS = ("runtime", "deploy", "fl")


def _runtime_table(rows: list[dict]) -> Table:
    t = Table(title="runtime: a hostile peer vs an edge node (serve defaults)")
    for col in ("measure", "value", "unit", "note"):
        t.add_column(col, justify="right" if col == "value" else "left")
    for r in rows:
        t.add_row(r["measure"], f"{r['value']:.1f}", r["unit"], r["note"])
    return t


def _deploy_table(rows: list[dict]) -> Table:
    t = Table(title="deploy: 4 concurrent uploads to one edge (serve defaults: "
                    "--max-concurrency 4, --stage-budget-mb 1024)")
    cols = ("scenario", "stage_mib", "accepted", "refused", "peak_rss_growth_mb",
            "final_rss_growth_mb", "peak_staged_on_disk_mb", "seconds")
    for col in cols:
        t.add_column(col, justify="left" if col == "scenario" else "right")
    for r in rows:
        t.add_row(*(str(r[c]) for c in cols))
    return t


def _fl_table(rows: list[dict], rounds: int) -> Table:
    t = Table(title=f"fl: device {_harden_fl.HOSTILE} sends a zero model claiming 2^62 examples "
                    f"(attack) or its true count (zero model); {rounds} rounds")
    for col in ("run", "strategy", "num_examples bound", "test acc", "clipped claims"):
        t.add_column(col, justify="left" if col in ("run", "strategy") else "right")
    for r in rows:
        t.add_row(r["run"], r["strategy"], "on" if r["bound"] else "off",
                  f"{r['test_acc']:.3f}", str(r["clipped_claims"]))
    return t


def main() -> None:
    warnings.filterwarnings("ignore", category=UserWarning)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(GROUPS),
                    help=f"comma-separated groups to run, of {', '.join(GROUPS)}")
    ap.add_argument("--rounds", type=int, default=10, help="FL rounds (fl group)")
    ap.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()
    groups = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        ap.error(f"--only: unknown group(s) {', '.join(unknown)}; expected {', '.join(GROUPS)}")
    doc: dict = {}
    tables = []
    if "runtime" in groups:
        doc["runtime"] = _harden_runtime.run()
        tables.append(_runtime_table(doc["runtime"]))
    if "deploy" in groups:
        doc["deploy"] = _harden_deploy.run()
        tables.append(_deploy_table(doc["deploy"]))
    if "fl" in groups:
        doc["fl"] = _harden_fl.run(args.rounds)
        tables.append(_fl_table(doc["fl"], args.rounds))
    emit(Console(), tables, doc, args.json)


if __name__ == "__main__":
    main()
