"""`edgeweave fl server`, `fl edge`, `fl client`, `fl split` and `fl token`: wiring for a real
federated deployment (one server process, an edge aggregator per edge server in hierarchical
FL, one process per device, talking gRPC); no training logic of its own."""

from __future__ import annotations

import re
from contextlib import nullcontext
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


def _experiment(config: Path | None, flags: dict, command: str = "fl server"):
    """The experiment config: the YAML `edgeweave fl run` reads (its ``backend`` must be grpc or
    absent), or one built from the command-line flags through the same validation. With
    ``--fleet`` and no config, the federation is one client per device node of the fleet."""
    from edgeweave.cli.train_cmds import control_sections
    from edgeweave.train.config import parse_config, read_config_yaml

    given = {k: v for k, v in flags.items() if v is not None}
    if config is None:
        sections, _ = control_sections(given)
        raw = {"model": given.get("model", "mlp:64,64,10"), "rounds": given.get("rounds", 10),
               "seed": given.get("seed", 0), "out_dir": given.get("out"),
               "strategy": {"name": given.get("strategy", "fedavg"),
                            "fraction": given.get("fraction", 1.0)},
               "fit": {k: given[k] for k in ("lr", "batch_size", "epochs") if k in given},
               **({"max_client_examples": given["max_client_examples"]}
                  if "max_client_examples" in given else {}), **sections}
        if "fleet" in given:
            raw["data"] = {"clients": _fleet_devices(given["fleet"])}
        return parse_config(raw, f"{command} options")
    if given:
        raise EdgeWeaveError(f"--config {config} already sets the experiment; drop "
                             + ", ".join("--" + k.replace("_", "-") for k in sorted(given)))
    raw = read_config_yaml(config)
    if isinstance(raw, dict):
        backend = raw.pop("backend", "grpc")
        if backend != "grpc":
            raise EdgeWeaveError(f"{config}: backend: `edgeweave {command}` runs the grpc "
                                 f"backend, the file says {backend!r} (use `edgeweave fl run` "
                                 "for that)")
    return parse_config(raw, str(config))


def _fleet_devices(spec: str) -> int:
    """How many device nodes fleet ``spec`` has (--fleet: one client each)."""
    from edgeweave.topology import load_fleet

    try:
        return len(load_fleet(spec).nodes_in("device"))
    except EdgeWeaveError as e:
        raise EdgeWeaveError(f"--fleet: {e}") from None


def fl_server(console: Console, *, config: Path | None, listen: str, token_file: Path,
              test_data: Path | None, min_clients: int | None, round_timeout: float,
              wait_clients: float | None, tls_cert: Path | None = None,
              tls_key: Path | None = None, lease: float | None = None,
              metrics_port: int | None = None, report: Path | None = None,
              **flags) -> None:
    from edgeweave.cli import reporting
    from edgeweave.train.experiment import hold_out_dir
    from edgeweave.train.wire.auth import load_token

    if (tls_cert is None) != (tls_key is None):
        raise EdgeWeaveError("--tls-cert and --tls-key go together: give both (the server's "
                             "certificate and its key, e.g. from `edgeweave certs`) or neither")
    token = load_token(token_file)
    cfg = _experiment(config, flags)
    if cfg.fedcs is not None and cfg.fleet is None:
        raise EdgeWeaveError(f"{config or 'fl server options'}: fedcs: `edgeweave fl server` "
                             "reads the devices' speeds from `fleet` (--fleet); `speeds` only "
                             "simulates them")
    reporting.check_run_folder(report, cfg.out_dir, config)
    # the run folder is locked before the port is taken: a second server on the same out_dir
    # stops here, naming the folder and the pid that holds it
    with hold_out_dir(cfg, "--out" if config is None else f"{config}: out_dir"):
        _serve(console, cfg, config=config, listen=listen, token=token, test_data=test_data,
               min_clients=min_clients, round_timeout=round_timeout, wait_clients=wait_clients,
               tls_cert=tls_cert, tls_key=tls_key, lease=lease, metrics_port=metrics_port)
    if report is not None:
        reporting.write(console, report, [Path(cfg.out_dir)])


def _serve(console: Console, cfg, *, config: Path | None, listen: str, token: str,
           test_data: Path | None, min_clients: int | None, round_timeout: float,
           wait_clients: float | None, tls_cert: Path | None, tls_key: Path | None,
           lease: float | None, metrics_port: int | None) -> None:
    from edgeweave.train.backends.base import Backend
    from edgeweave.train.backends.grpc_backend import GrpcBackend
    from edgeweave.train.config import build_strategy
    from edgeweave.train.control import from_config as control
    from edgeweave.train.control.fleet_clients import FleetSpeeds
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
    scfg = server_config(cfg)
    allowed: range | None
    if cfg.hierarchy is not None:  # the cloud: its clients are the edges, by index
        edges = list(control.hierarchy_groups(cfg))
        strategy, scfg = control.cloud_strategy(cfg), control.cloud_server_config(cfg, scfg)
        want, allowed, who = min_clients or len(edges), range(len(edges)), "edge(s)"
    else:
        strategy = build_strategy(cfg)
        want = min_clients or (cfg.data.clients if config is not None or cfg.fleet else 1)
        # with a fleet, client ids are its clients' (their speeds and edges come from it)
        allowed, who = (range(cfg.data.clients) if cfg.fleet else None), "device(s)"
    # a round short of devices goes on with the strategy's own minimum after a bounded wait
    kw = dict(model_spec=spec, wait_clients_s=wait_clients, tls_cert=tls_cert, tls_key=tls_key,
              quorum=min(strategy.min_clients, want), allowed_clients=allowed,
              max_client_examples=scfg.max_client_examples,
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
    backend: Backend = grpc_backend
    if cfg.fleet is not None and cfg.hierarchy is None:  # FedCS reads the fleet's speeds
        backend = FleetSpeeds(grpc_backend, control.speeds_per_example(
            cfg, build_model(spec), tuple(test_x.shape[1:])))
    metrics = _metrics(console, metrics_port, lambda: len(grpc_backend.connected()))
    with backend:
        if cfg.out_dir is not None:
            record_run(cfg, grpc_backend.name)
        console.print(f"FL server on {grpc_backend.address}: {spec}, {strategy.name}, "
                      f"{cfg.rounds} rounds; waiting for {want} {who}")

        def progress(rec) -> None:
            if metrics is not None:
                metrics.observe(rec)
            _print_round(console, rec)

        try:
            records = Server(task, strategy, backend, scfg).run(progress)
        finally:
            if metrics is not None:
                metrics.close()
    if records:
        console.print(f"done: test accuracy {records[-1].test_acc:.4f} after {len(records)} "
                      "rounds" + (f"; metrics and checkpoint in {cfg.out_dir}"
                                  if cfg.out_dir else ""))


def fl_edge(console: Console, *, config: Path | None, edge: str, cloud: str, listen: str,
            token_file: Path, cloud_token_file: Path | None, min_clients: int | None,
            round_timeout: float, wait_clients: float | None, lease: float | None = None,
            tls_cert: Path | None = None, tls_key: Path | None = None,
            cloud_tls_ca: Path | None = None, out: Path | None = None,
            metrics_port: int | None = None, give_up: float | None = None,
            retry_max: float = 5.0, report: Path | None = None, **flags) -> None:
    """An edge aggregator: serves the devices the fleet puts under ``edge`` and is one client of
    the cloud's `fl server` (see edgeweave.train.edge)."""
    from edgeweave.cli import reporting
    from edgeweave.train.wire.auth import load_token

    token = load_token(token_file)
    cloud_token = token if cloud_token_file is None else load_token(cloud_token_file)
    cfg = _experiment(config, flags, "fl edge")
    where = "--edge-rounds and --fleet" if config is None else f"{config}"
    if cfg.hierarchy is None:
        raise EdgeWeaveError(f"{where}: `edgeweave fl edge` runs an edge of a hierarchy: give "
                             + ("`hierarchy:` and `fleet:` sections" if config is not None
                                else "both flags"))
    from edgeweave.train.control.from_config import edges_for

    edges = {e.name: e for e in edges_for(cfg)}
    if edge not in edges:
        raise EdgeWeaveError(f"--edge {edge!r}: not an edge with devices in fleet "
                             f"{cfg.fleet.source!r} (edges: {', '.join(edges)})")
    # its own folder: out_dir/edge-<name> (the cloud holds out_dir itself)
    folder = out if out is not None else (
        None if cfg.out_dir is None else Path(cfg.out_dir) / f"edge-{edge}")
    reporting.check_run_folder(report, folder, config)
    _run_edge(console, cfg, edges[edge], folder, cloud=cloud, cloud_token=cloud_token,
              listen=listen, token=token, min_clients=min_clients, round_timeout=round_timeout,
              wait_clients=wait_clients, lease=lease, tls_cert=tls_cert, tls_key=tls_key,
              cloud_tls_ca=cloud_tls_ca, metrics_port=metrics_port, give_up=give_up,
              retry_max=retry_max,
              folder_field="--out" if out is not None else f"{config or '--out'}: out_dir")
    if report is not None and folder is not None:
        reporting.write(console, report, [folder])


def _run_edge(console: Console, cfg, rounds, folder: Path | None, *, cloud: str,
              cloud_token: str, listen: str, token: str, min_clients: int | None,
              round_timeout: float, wait_clients: float | None, lease: float | None,
              tls_cert: Path | None, tls_key: Path | None, cloud_tls_ca: Path | None,
              metrics_port: int | None, give_up: float | None, retry_max: float,
              folder_field: str) -> None:
    from edgeweave.folder_lock import lock_folder
    from edgeweave.train.backends.grpc_backend import GrpcBackend
    from edgeweave.train.backends.registry import DEFAULT_LEASE_S
    from edgeweave.train.control.fleet_clients import FleetSpeeds
    from edgeweave.train.edge import EdgeAggregator

    want = min_clients or len(rounds.members)
    # the folder is locked before the port is taken, as `fl server` does
    with nullcontext() if folder is None else lock_folder(folder, folder_field):
        devices = GrpcBackend(listen, token, want, round_timeout, model_spec=cfg.model,
                              wait_clients_s=wait_clients, tls_cert=tls_cert, tls_key=tls_key,
                              quorum=min(rounds.strategy.min_clients, want),
                              max_client_examples=cfg.max_client_examples,
                              allowed_clients=rounds.members,
                              lease_s=DEFAULT_LEASE_S if lease is None else lease)
        farewell, metrics = False, None
        try:
            backend = devices if cfg.fedcs is None else FleetSpeeds(devices, _edge_speeds(cfg))
            metrics = _metrics(console, metrics_port, lambda: len(devices.connected()))
            console.print(f"edge {rounds.name} on {devices.address} for clients "
                          f"{rounds.members} ({rounds.edge_rounds} edge round(s) per cloud "
                          f"round); cloud {cloud}")
            agg = EdgeAggregator(rounds, backend, cfg.model, out_dir=folder, metrics=metrics,
                                 progress=lambda r: _print_round(console, r, "device updates"))
            stats = agg.serve(cloud, cloud_token, tls_ca=cloud_tls_ca, give_up_s=give_up,
                              retry_max_s=retry_max)
            farewell = True
        finally:
            devices.close(farewell=farewell)  # after an error the devices wait for a restart
            if metrics is not None:
                metrics.close()
    console.print(f"edge {rounds.name}: training over after {stats.rounds} cloud rounds "
                  f"({stats.registrations} registrations with the cloud)")


def _edge_speeds(cfg) -> dict[int, tuple[float, float]]:
    """FedCS at an edge reads the fleet's speeds; the model's FLOPs need a sample's shape,
    which the edge (holding no data) takes from the config's dataset."""
    from edgeweave.train.control.from_config import speeds_per_example
    from edgeweave.train.experiment import build_task

    task = build_task(cfg)
    return speeds_per_example(cfg, task.model_fn(), tuple(task.test_x.shape[1:]))


def _print_round(console: Console, rec, what: str = "clients") -> None:
    failed = rec.extra.get("failed", 0)
    console.print(f"round {rec.round}: {rec.clients} {what}"
                  + (f" ({failed} failed)" if failed else "")
                  + f", train loss {rec.train_loss:.4f}, test acc {rec.test_acc:.4f}, "
                  f"{rec.wall_s:.2f} s", highlight=False)


def _metrics(console: Console, port: int | None, connected):
    """Prometheus on ``--metrics-port`` (None: no metrics)."""
    if port is None:
        return None
    from edgeweave.train.metrics import FLMetrics

    metrics = FLMetrics(connected)
    bound = metrics.serve_http(port)
    console.print(f"Prometheus metrics on http://127.0.0.1:{bound}/metrics")
    return metrics


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
