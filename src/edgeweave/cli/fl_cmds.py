"""`edgeweave fl server`, `fl client`, `fl split` and `fl token`: wiring for a real federated
deployment (one server process, one process per device, talking gRPC); no training logic of
its own."""

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
             out: Path, config: Path | None = None) -> None:
    """Write client<i>.npz (what device i holds) and test.npz (the server's held-out set); with
    ``config``, split exactly as that experiment's data section says (`fl server --config` then
    holds out the same test set)."""
    from edgeweave.folder_lock import make_folder
    from edgeweave.train.data import make_task

    if config is not None:
        cfg = _experiment(config, {})
        d = cfg.data
        task = make_task(d.dataset, d.partition, d.clients, cfg.model, cfg.seed, **d.options)
    else:
        task = make_task(dataset, partition, clients, model, seed)
    assert task.data is not None
    n = task.data.num_clients
    make_folder(out, "--out")
    try:
        for i in range(n):
            x, y = task.data.client(i)
            np.savez(out / f"client{i}.npz", x=x.numpy(), y=y.numpy())
        np.savez(out / "test.npz", x=task.test_x.numpy(), y=task.test_y.numpy())
    except OSError as e:
        raise EdgeWeaveError(f"--out: cannot write the client files into {out} "
                             f"({e.strerror or e})") from None
    sizes = task.data.sizes().tolist()
    console.print(f"{n} client files client0..{n - 1}.npz ({min(sizes)}-{max(sizes)} "
                  f"samples each) and test.npz ({len(task.test_y)} samples) in {out}")


def _experiment(config: Path | None, flags: dict):
    """The experiment config: the YAML `edgeweave fl run` reads (its ``backend`` must be grpc or
    absent), or one built from the command-line flags through the same validation."""
    from edgeweave.train.config import parse_config, read_config_yaml

    given = {k: v for k, v in flags.items() if v is not None}
    if config is None:
        raw = {"model": given.get("model", "mlp:64,64,10"), "rounds": given.get("rounds", 10),
               "seed": given.get("seed", 0), "out_dir": given.get("out"),
               "strategy": {"name": given.get("strategy", "fedavg"),
                            "fraction": given.get("fraction", 1.0)},
               "fit": {k: given[k] for k in ("lr", "batch_size", "epochs") if k in given},
               **({"max_client_examples": given["max_client_examples"]}
                  if "max_client_examples" in given else {})}
        return parse_config(raw, "fl server options")
    if given:
        raise EdgeWeaveError(f"--config {config} already sets the experiment; drop "
                             + ", ".join("--" + k.replace("_", "-") for k in sorted(given)))
    raw = read_config_yaml(config)
    if isinstance(raw, dict):
        backend = raw.pop("backend", "grpc")
        if backend != "grpc":
            raise EdgeWeaveError(f"{config}: backend: `edgeweave fl server` runs the grpc "
                                 f"backend, the file says {backend!r} (use `edgeweave fl run` "
                                 "for that)")
    return parse_config(raw, str(config))


def fl_server(console: Console, *, config: Path | None, listen: str, token_file: Path,
              test_data: Path | None, min_clients: int | None, round_timeout: float,
              wait_clients: float | None, tls_cert: Path | None = None,
              tls_key: Path | None = None, lease: float | None = None,
              report: Path | None = None, **flags) -> None:
    from edgeweave.cli import reporting
    from edgeweave.train.experiment import hold_out_dir
    from edgeweave.train.wire.auth import load_token

    if (tls_cert is None) != (tls_key is None):
        raise EdgeWeaveError("--tls-cert and --tls-key go together: give both (the server's "
                             "certificate and its key, e.g. from `edgeweave certs`) or neither")
    token = load_token(token_file)
    cfg = _experiment(config, flags)
    reporting.check_run_folder(report, cfg.out_dir, config)
    # the run folder is locked before the port is taken: a second server on the same out_dir
    # stops here, naming the folder and the pid that holds it
    with hold_out_dir(cfg, "--out" if config is None else f"{config}: out_dir"):
        _serve(console, cfg, config=config, listen=listen, token=token, test_data=test_data,
               min_clients=min_clients, round_timeout=round_timeout, wait_clients=wait_clients,
               tls_cert=tls_cert, tls_key=tls_key, lease=lease)
    if report is not None:
        reporting.write(console, report, [Path(cfg.out_dir)])


def _serve(console: Console, cfg, *, config: Path | None, listen: str, token: str,
           test_data: Path | None, min_clients: int | None, round_timeout: float,
           wait_clients: float | None, tls_cert: Path | None, tls_key: Path | None,
           lease: float | None) -> None:
    from edgeweave.train.backends.grpc_backend import GrpcBackend
    from edgeweave.train.config import build_strategy
    from edgeweave.train.data import load_npz
    from edgeweave.train.experiment import build_task, record_run, server_config
    from edgeweave.train.models import build_model
    from edgeweave.train.server import Server
    from edgeweave.train.task import Task

    if test_data is not None:
        test_x, test_y = load_npz(test_data)
    else:  # the held-out split of the config's dataset: what `fl split` leaves out, same seed
        full = build_task(cfg)
        test_x, test_y = full.test_x, full.test_y
    spec = cfg.model
    # The devices hold the training data; the server only evaluates on its held-out set.
    task = Task(model_fn=lambda: build_model(spec), data=None, test_x=test_x, test_y=test_y,
                name=f"grpc/{spec}", init_seed=cfg.seed)
    want = min_clients or (cfg.data.clients if config is not None else 1)
    # a round short of devices goes on with the strategy's own minimum after a bounded wait
    kw = dict(model_spec=spec, wait_clients_s=wait_clients, tls_cert=tls_cert, tls_key=tls_key,
              quorum=min(cfg.strategy.min_clients, want),
              max_client_examples=cfg.max_client_examples,
              **({"lease_s": lease} if lease is not None else {}))
    sa = cfg.secure_aggregation
    if sa is not None:  # the devices run the protocol; the server only ever sees the sum
        from edgeweave.train.secagg.backend import SecAggGrpcBackend

        grpc_backend: GrpcBackend = SecAggGrpcBackend(
            listen, token, want, round_timeout_s=round_timeout, clip=sa.clip,
            ring_bits=sa.ring_bits, k=sa.k, threshold_frac=sa.threshold_frac, seed=cfg.seed,
            active=sa.active, **kw)
    else:
        grpc_backend = GrpcBackend(listen, token, want, round_timeout, **kw)
    backend = grpc_backend
    with backend:
        if cfg.out_dir is not None:
            record_run(cfg, backend.name)
        console.print(f"FL server on {backend.address}: {spec}, {cfg.strategy.name}, "
                      f"{cfg.rounds} rounds; waiting for {want} device(s)")

        def progress(rec) -> None:
            failed = rec.extra.get("failed", 0)
            console.print(f"round {rec.round}: {rec.clients} clients"
                          + (f" ({failed} failed)" if failed else "")
                          + f", train loss {rec.train_loss:.4f}, test acc {rec.test_acc:.4f}, "
                          f"{rec.wall_s:.2f} s", highlight=False)

        records = Server(task, build_strategy(cfg), backend, server_config(cfg)).run(progress)
    if records:
        console.print(f"done: test accuracy {records[-1].test_acc:.4f} after {len(records)} "
                      "rounds" + (f"; metrics and checkpoint in {cfg.out_dir}"
                                  if cfg.out_dir else ""))


def client_id_from(data: Path, client_id: int | None) -> int:
    """``--client-id``, else the number in the data file's name (client3.npz -> 3)."""
    if client_id is not None:
        return client_id
    m = re.search(r"(\d+)$", data.stem)
    if m is None:
        raise EdgeWeaveError(f"cannot tell the client id from {data.name}; pass --client-id")
    return int(m.group(1))


def fl_client(console: Console, *, server: str, data: Path, token_file: Path,
              client_id: int | None, give_up: float | None, threads: int = 1,
              retry_max: float = 5.0, tls_ca: Path | None = None,
              max_message_mb: float | None = None) -> None:
    import torch

    from edgeweave.train.grpc_client import run_client
    from edgeweave.train.wire.auth import load_token

    # Several devices often share one host (a lab, a demo): each with torch's default of one
    # thread per core, their spinning OpenMP pools made rounds 30x slower on 2 cores.
    torch.set_num_threads(threads)
    token = load_token(token_file)
    cid = client_id_from(data, client_id)
    console.print(f"client {cid} ({data}) -> {server}")
    size = {} if max_message_mb is None else {"max_message_bytes": int(max_message_mb * 2**20)}
    stats = run_client(server, token, cid, str(data), give_up_s=give_up, retry_max_s=retry_max,
                       tls_ca=tls_ca, **size)
    console.print(f"client {cid}: training over after {stats.rounds} rounds "
                  f"({stats.registrations} registrations, {stats.rejected} rejected updates)")
