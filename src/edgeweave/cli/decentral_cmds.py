"""`edgeweave decentral`: wiring for decentralized training (simulated nodes, or real processes
over gRPC for the methods :data:`~edgeweave.train.decentral.real.REAL_METHODS` lists); no
training logic of its own."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgeweave.cli import reporting


def decentral(console: Console, *, methods: list[str], nodes: int, graph: str, rounds: int,
              lr: float, model: str, partition: str, seed: int, processes: bool,
              page: Path | None = None) -> None:
    from edgeweave.train.data import make_task
    from edgeweave.train.decentral import NodeStack, RunConfig, TimeModel, run_method

    if processes:
        table = _peers(console, methods=methods, nodes=nodes, graph=graph, rounds=rounds, lr=lr,
                       model=model, seed=seed)
        if page and table is not None:
            reporting.write_tables(console, page, "edgeweave decentral --processes", [table])
        return
    task = make_task("digits", partition, nodes, model, seed)
    config = RunConfig(rounds=rounds, lr=lr, eval_every=max(1, rounds // 10), seed=seed)
    time_model = TimeModel(seed=seed)
    table = Table(title=f"decentralized training, {nodes} simulated nodes, {model} on digits "
                        f"({partition}), graph {graph}, {rounds} rounds")
    for col in ("method", "test acc", "simulated s", "total MB", "busiest node MB"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for m in methods:
        stack = NodeStack(task, batch_size=16, seed=seed)
        final = run_method(m, stack, config, time_model, graph=graph).final
        table.add_row(m, f"{final['test_acc']:.3f}", f"{final['time_s']:.2f}",
                      f"{final['bytes'] / 1e6:.2f}", f"{final['max_node_bytes'] / 1e6:.2f}")
    console.print(table)
    console.print(f"time model (simulated, not this host's): {time_model.as_dict()}")
    if page:
        reporting.write_tables(console, page, "edgeweave decentral", [table],
                               time_model=time_model.as_dict())


def _peers(console: Console, *, methods: list[str], nodes: int, graph: str, rounds: int,
           lr: float, model: str, seed: int) -> Table | None:
    from edgeweave.train.decentral.peer import PeerRunConfig
    from edgeweave.train.decentral.real import REAL_METHODS, run_real

    real = [m for m in methods if m in REAL_METHODS]
    for m in methods:
        if m not in REAL_METHODS:
            console.print(f"{m}: no real-process version (have {', '.join(REAL_METHODS)}); "
                          "skipped")
    if not real:
        return None
    cfg = PeerRunConfig(n=nodes, problem="digits", model=model, graph=graph, steps=rounds,
                        lr=lr, seed=seed)
    table = Table(title=f"real processes over gRPC on loopback: {nodes} workers, {model} on "
                        f"digits (iid), {rounds} steps each, gossip graph {graph}")
    for col in ("method", "test acc", "wall s", "wire MB", "busiest node MB", "max staleness"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for m in real:
        res = run_real(m, cfg)
        stale = res.extra.get("max_staleness")
        table.add_row(m, f"{res.test_acc:.3f}", f"{res.wall_s:.1f}",
                      f"{res.wire_bytes / 1e6:.2f}", f"{res.busiest_bytes / 1e6:.2f}",
                      "-" if stale is None else str(stale))
    console.print(table)
    console.print("wire MB: serialized gRPC messages all nodes sent (parameter-server runs "
                  "include the server, whose link is the busiest); ssp uses staleness bound 4")
    return table
