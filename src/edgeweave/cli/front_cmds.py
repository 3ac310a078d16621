"""`edgeweave front cache|filter`: the semantic-cache and input-filter scenarios (`cli.scenarios`),
with the user's front-stage settings (a YAML file and/or flags, as a served
model's cache and filter are configured: `serve.front_config`). Wiring and tables only."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

from edgeweave.cli.options import write_output
from edgeweave.errors import EdgeWeaveError


def front_settings(front: Path | None, cache: str | None, filter: str | None) -> Any:
    """The front stages the ``--front`` file and the ``--cache``/``--filter`` flags turn on."""
    from edgeweave.serve.front_config import FrontConfig, load_front, with_flags

    return with_flags(load_front(front) if front is not None else FrontConfig(), cache, filter)


def _finish(console: Console, name: str, tables: list[Any], doc: dict[str, Any],
            json_out: Path | None, report: Path | None = None) -> None:
    """Print the tables; write the JSON as the benchmark of the same name does (so
    `edgeweave report` reads either), and the page when --report asks for one."""
    from edgeweave import formats
    from edgeweave.cli import reporting

    for t in tables:
        console.print(t)
    out = json_out or (reporting.beside(report, name) if report else None)
    if out is not None:
        doc = {formats.FIELD: formats.BENCHMARK, "benchmark": name, **doc}
        write_output("--json" if json_out else "--report", out,
                     json.dumps(doc, indent=1, default=float))
        if json_out:
            console.print(f"wrote {json_out}")
        if report:
            reporting.write(console, report, [out])


def cache_bench(console: Console, devices: int, requests: int, epochs: int, seed: int,
                front: Path | None, cache: str | None, json_out: Path | None,
                report: Path | None = None, processes: bool = False) -> None:
    user = front_settings(front, cache, None).cache
    if processes:
        from edgeweave.cli.scenarios import cache_processes

        popts = cache_processes.Options(devices=devices, requests=requests, epochs=epochs,
                                        seed=seed, user=user)
        with console.status(f"semantic cache on local processes: {devices} devices x "
                            f"{requests} requests against an edge node process"):
            tables, doc = cache_processes.run_processes(popts)
        _finish(console, "semantic_cache_processes", tables, doc, json_out, report)
        console.print(f"[dim]{doc['note']}[/]")
        return
    from edgeweave.cli.scenarios.semantic_cache import Options, run_scenario

    opts = Options(devices=devices, requests=requests, epochs=epochs, seed=seed, user=user)
    with console.status(f"semantic cache: {devices} devices x {requests} requests of real "
                        f"digits (training digits-cnn, then every configuration)"):
        tables, doc = run_scenario(opts)
    _finish(console, "semantic_cache", tables, doc, json_out, report)
    console.print(f"[dim]{doc['note']}[/]")


def filter_bench(console: Console, occurrence: list[float], frames: int | None,
                 streams: int | None, epochs: int | None, seed: int, front: Path | None,
                 filter: str | None, json_out: Path | None, report: Path | None = None,
                 processes: bool = False) -> None:
    from edgeweave.cli.scenarios.input_filter import Options, run_scenario

    opts = Options(occurrence=tuple(occurrence), seed=seed)
    max_fn, max_fp = filter_targets(front, filter, opts.max_fn, opts.max_fp)
    if processes:
        from edgeweave.cli.scenarios import filter_processes as fp

        n = frames or 2 * fp.Options.learn
        popts = fp.Options(occurrence=tuple(occurrence), streams=streams or fp.Options.streams,
                           learn=n // 2, test=n, epochs=epochs or fp.Options.epochs,
                           seed=seed, max_fn=max_fn, max_fp=max_fp)
        with console.status(f"input filter on local processes: training the reference, then "
                            f"{popts.streams} devices' streams against an edge node process"):
            tables, doc = fp.run_processes(popts, lambda m: console.log(m[:160]))
        _finish(console, "input_filter_processes", tables, doc, json_out, report)
        console.print(f"[dim]{doc['note']}[/]")
        return
    n = frames or opts.frames[2]
    opts = replace(opts, frames=(n // 2, n, n), streams=streams or opts.streams,
                   epochs=epochs or opts.epochs, max_fn=max_fn, max_fp=max_fp)
    with console.status("input filter: training the reference, then a cascade per stream"):
        tables, doc = run_scenario(opts, lambda m: console.log(m[:160]))
    _finish(console, "input_filter", tables, doc, json_out, report)
    console.print(f"[dim]{doc['note']}[/]")


def filter_targets(front: Path | None, filter: str | None, max_fn: float, max_fp: float
                   ) -> tuple[float, float]:
    """The optimiser's targets: the ``--front`` file's and ``--filter`` flags' over the
    scenario's (``max_fn``, ``max_fp``)."""
    if front is None and filter is None:
        return max_fn, max_fp
    from edgeweave.cli.scenarios.input_filter import POSITIVE
    from edgeweave.serve.filter.config import FilterConfig
    from edgeweave.serve.front_config import FrontConfig, load_front, with_flags

    # the scenario's query: "does the frame hold a digit" (reference classes 1-10)
    base = load_front(front) if front is not None else FrontConfig(
        filter=FilterConfig(positive=POSITIVE, max_fn=max_fn, max_fp=max_fp))
    chosen = with_flags(base, None, filter).filter
    if chosen is None:
        raise EdgeWeaveError(f"{front}: it has no filter section to take the targets from")
    return chosen.max_fn, chosen.max_fp
