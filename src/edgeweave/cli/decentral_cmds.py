"""`edgeweave decentral`: wiring for decentralized training (simulated nodes or real peer
processes over gRPC); no training logic of its own."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def decentral(console: Console, *, methods: list[str], nodes: int, graph: str, rounds: int,
              lr: float, model: str, partition: str, seed: int, processes: bool) -> None:
    from edgeweave.train.data import make_task
    from edgeweave.train.decentral import NodeStack, RunConfig, TimeModel, run_method

    if processes:
        _peers(console, nodes=nodes, graph=graph, rounds=rounds, lr=lr, model=model, seed=seed)
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


def _peers(console: Console, *, nodes: int, graph: str, rounds: int, lr: float, model: str,
           seed: int) -> None:
    from edgeweave.train.decentral.peer import PeerRunConfig, run_peers

    res = run_peers(PeerRunConfig(n=nodes, problem="digits", model=model, graph=graph,
                                  steps=rounds, lr=lr, seed=seed))
    table = Table(title=f"GoSGD over gRPC: {nodes} peer processes on loopback, graph {graph}")
    for col in res.peers[0]:
        table.add_column(col, justify="right")
    for p in res.peers:
        table.add_row(*(f"{v:.3f}" if isinstance(v, float) else str(v) for v in p.values()))
    console.print(table)
    console.print(f"averaged model: test accuracy {res.test_acc:.3f}, weights sum to "
                  f"{res.weight_sum:.6f}, {res.wall_s:.1f} s")
