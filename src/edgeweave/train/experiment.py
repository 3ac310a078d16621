"""The facade: one experiment config in, the round records out (metrics, checkpoint and plot on
disk). ``edgeweave.train.run`` and ``edgeweave fl run`` are this function."""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeweave import formats
from edgeweave.durable import write_atomic
from edgeweave.folder_lock import lock_folder
from edgeweave.train.backends.base import Backend
from edgeweave.train.config import ExperimentConfig, build_strategy, load_config, parse_config
from edgeweave.train.server import Server, ServerConfig
from edgeweave.train.task import Task
from edgeweave.train.types import RoundRecord, TrainError


def build_task(cfg: ExperimentConfig) -> Task:
    from edgeweave.train.data import make_task

    d = cfg.data
    return make_task(d.dataset, d.partition, d.clients, cfg.model, cfg.seed, **d.options)


def client_speeds(cfg: ExperimentConfig, n: int) -> tuple[list[float], list[float]] | None:
    """Per-client simulated seconds per epoch and per upload, drawn once from the seed."""
    if cfg.speeds is None:
        return None
    rng = np.random.default_rng([cfg.seed, 0x5BEED])
    lo, hi = cfg.speeds.compute_s_per_epoch
    compute = rng.uniform(lo, hi, n).tolist()
    lo, hi = cfg.speeds.upload_s
    upload = rng.uniform(lo, hi, n).tolist()
    return compute, upload


def build_backend(cfg: ExperimentConfig, task: Task) -> Backend:
    """The configured backend, with the Byzantine attackers wrapped around it when asked."""
    backend = _plain_backend(cfg, task)
    if cfg.attack is None or cfg.attack.kind == "none":
        return backend
    from edgeweave.train.byzantine import ByzantineBackend

    a = cfg.attack
    return ByzantineBackend(backend, a.kind, fraction=a.fraction, scale=a.scale,
                            noise_std=a.noise_std, seed=cfg.seed)


def _plain_backend(cfg: ExperimentConfig, task: Task) -> Backend:
    assert task.data is not None
    from edgeweave.train.control.from_config import fleet_speeds

    speeds = client_speeds(cfg, task.data.num_clients) or fleet_speeds(cfg, task)
    kw: dict[str, Any] = {"drop_prob": cfg.dropout, "seed": cfg.seed}
    if speeds is not None:
        kw.update(compute_s_per_epoch=speeds[0], upload_s=speeds[1])
    local_dp = cfg.privacy.local_dp if cfg.privacy is not None else None
    if local_dp is not None:
        if cfg.backend != "sequential" or speeds is not None:
            raise TrainError("privacy.local_dp trains each client with Opacus: it needs backend "
                             "'sequential' and no speeds")
        from edgeweave.train.privacy import DPSGDBackend

        return DPSGDBackend(task, noise_multiplier=local_dp.noise_multiplier,
                            max_grad_norm=local_dp.max_grad_norm, delta=local_dp.delta,
                            drop_prob=cfg.dropout, seed=cfg.seed)
    if cfg.ray_address is not None and cfg.backend != "ray":
        raise TrainError(f"ray_address: only backend 'ray' joins a Ray cluster, the config says "
                         f"backend {cfg.backend!r}")
    if cfg.backend == "ray":
        from edgeweave.train.backends.ray_backend import RayBackend

        return RayBackend(task, address=cfg.ray_address, **kw)
    if cfg.backend == "vectorized":
        try:
            from edgeweave.train.backends.vectorized import VectorizedBackend
        except ImportError:
            raise TrainError("backend: 'vectorized' is not available in this install; use "
                             "'sequential'") from None
        return VectorizedBackend(task, **kw)
    from edgeweave.train.backends.sequential import SequentialBackend

    return SequentialBackend(task, **kw)


def server_config(cfg: ExperimentConfig) -> ServerConfig:
    return ServerConfig(rounds=cfg.rounds, seed=cfg.seed, out_dir=cfg.out_dir,
                        checkpoint_every=cfg.checkpoint_every, deadline_s=cfg.deadline_s,
                        over_select=cfg.over_select, eval_every=cfg.eval_every, codec=cfg.codec,
                        up_codec=cfg.up_codec, down_codec=cfg.down_codec,
                        max_client_examples=cfg.max_client_examples)


def record_run(cfg: ExperimentConfig, backend_name: str) -> None:
    """The config, seed and versions beside the results (``run.json``, written atomically), so
    the run can be reproduced."""
    assert cfg.out_dir is not None
    from edgeweave import __version__

    info = {formats.FIELD: formats.FL_RUN, "config": cfg.model_dump(mode="json"),
            "backend": backend_name,
            "edgeweave": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}
    write_atomic(Path(cfg.out_dir) / "run.json", json.dumps(info, indent=1))


def hold_out_dir(cfg: ExperimentConfig, field: str):
    """The run lock of ``cfg.out_dir`` (a no-op context without one); ``field`` names it in
    errors, e.g. ``"exp.yaml: out_dir"`` or ``"--out"``."""
    return nullcontext() if cfg.out_dir is None else lock_folder(cfg.out_dir, field)


def run(config: ExperimentConfig | dict | str | Path,
        progress: Callable[[RoundRecord], Any] | None = None, *,
        out_dir_field: str | None = None) -> list[RoundRecord]:
    """Run (or resume, when its out_dir holds a checkpoint) a federated experiment.

    ``config`` is a YAML path, a parsed mapping or an :class:`ExperimentConfig`. The out_dir
    is locked for the run: a second run on the same folder is refused. ``out_dir_field`` names
    where the out_dir came from in that error (default: the config's ``out_dir`` field).
    """
    source = "<config>"
    if isinstance(config, str | Path):
        source = str(config)
        cfg = load_config(config)
    elif isinstance(config, dict):
        cfg = parse_config(config)
    else:
        cfg = config
    with hold_out_dir(cfg, out_dir_field or f"{source}: out_dir"):
        records = _run_locked(cfg, source, progress)
        if cfg.out_dir is not None and cfg.plot:
            from edgeweave.train.plot import plot_metrics

            out = Path(cfg.out_dir)
            plot_metrics(out / "metrics.jsonl", out / "accuracy.png", labels=[cfg.name])
    return records


def _run_locked(cfg: ExperimentConfig, source: str,
                progress: Callable[[RoundRecord], Any] | None) -> list[RoundRecord]:
    try:
        task = build_task(cfg)
    except TrainError as e:  # e.g. a dataset file that is missing: say which config asked
        raise TrainError(f"{source}: data: {e}") from None
    strategy = build_strategy(cfg)
    with build_backend(cfg, task) as backend:
        if cfg.out_dir is not None:
            record_run(cfg, backend.name)
        scfg = server_config(cfg)
        if cfg.hierarchy is not None:  # the cloud's clients are the edges over these devices
            from edgeweave.train.control.from_config import simulated_hierarchy

            backend, strategy, scfg = simulated_hierarchy(cfg, task, backend, scfg)
        return Server(task, strategy, backend, scfg).run(progress)
