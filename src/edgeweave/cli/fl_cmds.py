"""`fl-server`, `fl-client`, `fl-split` and `fl-token`: wiring for a real federated deployment
(one server process, one process per device, talking gRPC); no training logic of its own."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from rich.console import Console

from edgeweave.errors import EdgeWeaveError


def fl_token(console: Console, path: Path, force: bool) -> None:
    from edgeweave.train.wire.auth import write_token

    if path.exists() and not force:
        raise EdgeWeaveError(f"{path} exists; pass --force to replace the token in it")
    write_token(path)
    console.print(f"token written to {path} (mode 0600); give the same file to server and clients")


def fl_split(console: Console, dataset: str, clients: int, partition: str, model: str, seed: int,
             out: Path) -> None:
    """Write client<i>.npz (what device i holds) and test.npz (the server's held-out set)."""
    from edgeweave.train.data import make_task

    task = make_task(dataset, partition, clients, model, seed)
    assert task.data is not None
    out.mkdir(parents=True, exist_ok=True)
    for i in range(task.data.num_clients):
        x, y = task.data.client(i)
        np.savez(out / f"client{i}.npz", x=x.numpy(), y=y.numpy())
    np.savez(out / "test.npz", x=task.test_x.numpy(), y=task.test_y.numpy())
    sizes = task.data.sizes().tolist()
    console.print(f"{clients} client files client0..{clients - 1}.npz ({min(sizes)}-{max(sizes)} "
                  f"samples each) and test.npz ({len(task.test_y)} samples) in {out}")


def fl_server(console: Console, *, listen: str, token_file: Path, model: str, test_data: Path,
              rounds: int, strategy: str, min_clients: int, fraction: float, lr: float,
              batch_size: int, epochs: int, seed: int, out: Path | None,
              round_timeout: float, wait_clients: float | None) -> None:
    from edgeweave.train.backends.grpc_backend import GrpcBackend
    from edgeweave.train.data import load_npz
    from edgeweave.train.models import build_model
    from edgeweave.train.server import Server, ServerConfig
    from edgeweave.train.strategies import get_strategy
    from edgeweave.train.task import Task
    from edgeweave.train.types import FitConfig
    from edgeweave.train.wire.auth import load_token

    token = load_token(token_file)
    test_x, test_y = load_npz(test_data)
    build_model(model)  # a bad spec fails here, before any device connects
    # The devices hold the training data; the server only evaluates on its held-out set.
    task = Task(model_fn=lambda: build_model(model), data=None, test_x=test_x, test_y=test_y,
                name=f"grpc/{model}", init_seed=seed)
    strat = get_strategy(strategy, fraction=fraction, min_clients=min_clients,
                         fit=FitConfig(lr=lr, batch_size=batch_size, epochs=epochs, seed=seed))
    config = ServerConfig(rounds=rounds, seed=seed, out_dir=out)
    with GrpcBackend(listen, token, min_clients, round_timeout, model_spec=model,
                     wait_clients_s=wait_clients) as backend:
        console.print(f"FL server on {backend.address}: {model}, {strategy}, {rounds} rounds; "
                      f"waiting for {min_clients} device(s)")

        def progress(rec) -> None:
            failed = rec.extra.get("failed", 0)
            console.print(f"round {rec.round}: {rec.clients} clients"
                          + (f" ({failed} failed)" if failed else "")
                          + f", train loss {rec.train_loss:.4f}, test acc {rec.test_acc:.4f}, "
                          f"{rec.wall_s:.2f} s", highlight=False)

        records = Server(task, strat, backend, config).run(progress)
    if records:
        console.print(f"done: test accuracy {records[-1].test_acc:.4f} after {len(records)} "
                      f"rounds" + (f"; metrics and checkpoint in {out}" if out else ""))


def client_id_from(data: Path, client_id: int | None) -> int:
    """``--client-id``, else the number in the data file's name (client3.npz -> 3)."""
    if client_id is not None:
        return client_id
    m = re.search(r"(\d+)$", data.stem)
    if m is None:
        raise EdgeWeaveError(f"cannot tell the client id from {data.name}; pass --client-id")
    return int(m.group(1))


def fl_client(console: Console, *, server: str, data: Path, token_file: Path,
              client_id: int | None, give_up: float | None) -> None:
    from edgeweave.train.grpc_client import run_client
    from edgeweave.train.wire.auth import load_token

    token = load_token(token_file)
    cid = client_id_from(data, client_id)
    console.print(f"client {cid} ({data}) -> {server}")
    stats = run_client(server, token, cid, str(data), give_up_s=give_up)
    console.print(f"client {cid}: training over after {stats.rounds} rounds "
                  f"({stats.registrations} registrations, {stats.rejected} rejected updates)")
