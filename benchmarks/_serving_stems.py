"""The digits tenants in the serving benchmark (`serving.py`): trained as
`benchmarks/shared_stems.py` trains them (its quality tables: Mainstream's choice vs no sharing
and max sharing at the same compute budgets), and served as one shared-stem forest at the depths
Mainstream chose; and what the sweep serves under each model's name."""

from __future__ import annotations

from rich.console import Console

from edgeweave.graph import capture
from edgeweave.runtime.whole_model import WholeModel, whole_model

#: The digits tenants (shared stems, `benchmarks/shared_stems.py`): five tasks fine-tuned from
#: one backbone, served as one forest at the depths Mainstream chose.
TENANTS = "digits-tenants"


def served_model(name: str, image_size: int, stems) -> WholeModel:
    """What the sweep serves under `name`: a torchvision model at `image_size`, or the digits
    tenants as one forest with their trained weights (`stems`: the shared-stems workload and
    the depths Mainstream chose)."""
    if name != TENANTS:
        return whole_model(name, (1, 3, image_size, image_size))
    from edgeweave.serve.stems import build_forest
    from edgeweave.serve.stems.spec import forest_spec

    workload, depths = stems
    forest = build_forest(workload.backbone, workload.tenants, depths).eval()
    spec = forest_spec(forest, workload.side, workload.width)
    shape = (1, 1, workload.side, workload.side)
    return whole_model(spec, graph=capture(forest, shape, name=spec, spec=spec))


def shared_stems(quick: bool, seed: int, console: Console):
    """Train the digits tenants (`benchmarks/shared_stems.py`), compare Mainstream's choice with
    no sharing and max sharing at the same compute budgets, and pick the depths the sweep
    serves: Mainstream's at the budget where the tenants need 3x what it gives unshared."""
    import shared_stems as ss

    console.print("training the digits tenants (shared stems) ...", highlight=False)
    workload = ss.stem_workload(quick, seed)
    rows = ss.stem_rows(workload=workload)
    chosen = next(r for r in rows if r["system"] == "mainstream" and r["metric"] == ss.METRIC
                  and r["load"] >= 3.0)
    depths = {n: c["depth"] for n, c in chosen["choices"].items()}
    return (workload, depths), ss.stem_tables(workload, rows), rows
