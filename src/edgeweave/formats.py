"""The version of every results file layout EdgeWeave writes, in one place.

Each results file records `format_version`, so a reader (`edgeweave report`, and whatever reads
these files next) can refuse a file from a newer EdgeWeave by name instead of misreading it.
Files written before the field existed carry none and read as version 1, the layout they have.
Bump a number when a layout changes in a way an older reader would misread (a field renamed or
given a new meaning), not when a field is added: readers ignore fields they do not know.
"""

from __future__ import annotations

from typing import Any

#: `edgeweave plan --json`: the Plan (edgeweave.plan.record).
PLAN = 1
#: `edgeweave infer|lab|netlab --json`: one co-inference run (edgeweave.runtime.session).
RUNTIME_RUN = 1
#: run.json beside a federated run's metrics.jsonl (`edgeweave fl run`, `fl server --out`).
FL_RUN = 1
#: a benchmark's `--json` document (benchmarks/_zoo.py emit).
BENCHMARK = 1
#: `edgeweave adapt edgent --json`: the Edgent decision, its configuration map and a Plan for each
#: configuration (edgeweave.plan.edgent, edgent_dynamic).
EDGENT = 1
#: `edgeweave adapt select --json`: the model selection record with the chosen variant's Plans
#: (edgeweave.plan.select).
SELECTION = 1
#: `edgeweave loadgen --json`: per-model rows of one load test (edgeweave.serve.loadgen).
LOADGEN_RUN = 1
#: the tables a command printed, written for its `--report` (edgeweave.cli.reporting).
COMMAND = 1

FIELD = "format_version"


def version_of(doc: dict[str, Any]) -> int | None:
    """The file's `format_version` (1 when absent); None when the field is not an integer."""
    v = doc.get(FIELD, 1)
    return v if isinstance(v, int) and not isinstance(v, bool) else None
