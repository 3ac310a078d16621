"""`edgeweave fl run`: wiring only (experiment config -> edgeweave.train.run -> progress +
table)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgeweave.cli import reporting


def _fmt(v: float, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


#: control flag -> (YAML section, field); the sections are edgeweave.train.control_config's
CONTROL_FLAGS = {"fleet": ("fleet", "source"), "fedcs_deadline": ("fedcs", "deadline_s"),
                 "adaptive_budget": ("adaptive_frequency", "budget"),
                 "step_cost": ("adaptive_frequency", "step_cost"),
                 "agg_cost": ("adaptive_frequency", "agg_cost"),
                 "edge_rounds": ("hierarchy", "edge_rounds")}


def control_sections(given: dict[str, Any], base: dict[str, Any] | None = None
                     ) -> tuple[dict[str, Any], list[str]]:
    """The YAML sections the control flags in ``given`` set (merged into ``base``'s sections
    of the same name), and those flags as typed, for error messages."""
    out: dict[str, Any] = {}
    flags = []
    for name, (section, field) in CONTROL_FLAGS.items():
        if given.get(name) is None:
            continue
        if section not in out:
            out[section] = dict((base or {}).get(section) or {})
        out[section][field] = given[name]
        flags.append("--" + name.replace("_", "-"))
    return out, flags


def train(console: Console, config: Path, rounds: int | None, out_dir: Path | None,
          backend: str | None, ray_address: str | None = None, report: Path | None = None,
          **control: Any) -> None:
    from edgeweave.train.config import load_config, parse_config
    from edgeweave.train.experiment import run

    cfg = load_config(config)
    overrides = {k: v for k, v in (("rounds", rounds), ("out_dir", out_dir),
                                   ("backend", backend), ("ray_address", ray_address))
                 if v is not None}
    names = {"out_dir": "out", "ray_address": "ray-address"}
    flags = ["--" + names.get(k, k) for k in overrides]
    sections, control_flags = control_sections(control, cfg.model_dump())
    if overrides or sections:  # validated like the file, errors naming the overriding flags
        cfg = parse_config(cfg.model_dump() | overrides | sections,
                           f"{config} (with {', '.join(flags + control_flags)})")
    reporting.check_run_folder(report, cfg.out_dir, config)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("acc {task.fields[acc]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(f"{cfg.name} ({cfg.strategy.name}, {cfg.backend})",
                            total=cfg.rounds, acc="-")

        def progress(rec):
            bar.update(task, completed=rec.round, acc=_fmt(rec.test_acc, ".3f"))

        records = run(cfg, progress,
                      out_dir_field="--out" if out_dir is not None else f"{config}: out_dir")
    table = Table(title=f"{cfg.name}: {cfg.strategy.name} on {cfg.data.dataset} "
                        f"({cfg.data.partition}, {cfg.data.clients} clients)")
    for col in ("round", "clients", "train loss", "test loss", "test acc", "KB up", "KB down",
                "wall s"):
        table.add_column(col, justify="right")
    step = max(1, len(records) // 10)
    shown = [r for r in records if r.round % step == 0 or r.round in (1, records[-1].round)]
    for r in shown:
        table.add_row(str(r.round), str(r.clients), _fmt(r.train_loss, ".4f"),
                      _fmt(r.test_loss, ".4f"), _fmt(r.test_acc, ".3f"),
                      f"{r.bytes_up / 1e3:.1f}", f"{r.bytes_down / 1e3:.1f}",
                      f"{r.wall_s:.2f}")
    console.print(table)
    if records:
        up = sum(r.bytes_up for r in records) / 1e6
        down = sum(r.bytes_down for r in records) / 1e6
        console.print(f"final test accuracy {_fmt(records[-1].test_acc, '.4f')} after "
                      f"{records[-1].round} rounds; {up:.2f} MB up, {down:.2f} MB down")
    if cfg.out_dir is not None:
        out = Path(cfg.out_dir)
        console.print(f"metrics: {out / 'metrics.jsonl'}  checkpoint: {out / 'checkpoint.pt'}"
                      + (f"  plot: {out / 'accuracy.png'}" if cfg.plot else ""))
        if report:
            reporting.write(console, report, [out])

