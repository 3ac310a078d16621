"""`edgeweave fl run`: wiring only (experiment config -> edgeweave.train.run -> progress +
table)."""

from __future__ import annotations

import math
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgeweave.cli import reporting


def _fmt(v: float, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def train(console: Console, config: Path, rounds: int | None, out_dir: Path | None,
          backend: str | None, report: Path | None = None) -> None:
    from edgeweave.train.config import load_config, parse_config
    from edgeweave.train.experiment import run

    cfg = load_config(config)
    overrides = {k: v for k, v in (("rounds", rounds), ("out_dir", out_dir),
                                   ("backend", backend)) if v is not None}
    if overrides:  # validated like the file, errors naming the overriding flags
        flags = ", ".join("--" + ("out" if k == "out_dir" else k) for k in overrides)
        cfg = parse_config(cfg.model_dump() | overrides, f"{config} (with {flags})")
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

