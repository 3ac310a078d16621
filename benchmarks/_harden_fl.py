"""The num_examples attack on FedAvg over the real gRPC wire, with and without the server's bound.

Workload: ``examples/fl/digits-grpc.yaml`` as it stands (MLP 64-64-10 on sklearn digits, 3 IID
devices of 479 training samples, FedAvg, lr 0.1, batch 16, 1 epoch, 10 rounds; 360 held-out
test samples). Every device is an :class:`~edgeweave.train.grpc_client.FLClient` talking gRPC on
loopback to a :class:`~edgeweave.train.backends.grpc_backend.GrpcBackend`, in threads of this
process (the wire, the checks and the server loop are the deployed ones; only the process
boundary is saved).

Runs (device 2 is the hostile one):
  honest       all three devices train honestly
  attack       device 2 registers its true 479 examples, then every round sends an all-zero
               model claiming 2^62 examples (the issue's finding 2)
  zero model   device 2 sends the same all-zero model but claims its true 479 examples: what
               the bound reduces the attack to (the lie itself buys nothing)
each with the bound (the server as shipped: a claim counts for at most the device's
registration and ``max_client_examples``) and without it (the same server with the bound
switched off, i.e. the behaviour before the fix); the attack once more under ``fedmedian``.
A row is the final-round test accuracy.

The bound stops the model REPLACEMENT (0.08 -> the zero-model row), not the zero model: sent
at its fair weight every round, a zero model still shrinks FedAvg's average by 1/3 per round.
That is a Byzantine update, for a robust strategy (the fedmedian row), not a lie about counts.

    .venv/bin/python benchmarks/_harden_fl.py [--rounds 10] [--json PATH]
"""

from __future__ import annotations

import argparse
import threading
import time
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from _zoo import emit
from edgeweave.security import generate_token
from edgeweave.train.backends.grpc_backend import GrpcBackend
from edgeweave.train.config import build_strategy, parse_config, read_config_yaml
from edgeweave.train.experiment import build_task
from edgeweave.train.grpc_client import FLClient
from edgeweave.train.models import build_model
from edgeweave.train.server import Server, ServerConfig
from edgeweave.train.task import Task
from edgeweave.train.types import FitConfig, Params

CONFIG = Path(__file__).resolve().parents[1] / "examples" / "fl" / "digits-grpc.yaml"
CLAIM = 2**62
HOSTILE = 2  # the device id that attacks


class _Unbounded(Server):
    """The server loop with the num_examples bound switched off: the pre-fix behaviour."""

    def _bound(self, updates, info, r):  # type: ignore[no-untyped-def]
        return []


def zero_fit(claim: int):
    """A device's fit that sends an all-zero model claiming ``claim`` examples."""
    def fit(params: Params, config: FitConfig, round_num: int) -> tuple[Params, int, float]:
        return OrderedDict((k, torch.zeros_like(v)) for k, v in params.items()), claim, 0.0
    return fit


def final_acc(run: str, bound: bool, rounds: int, strategy: str = "fedavg") -> dict[str, Any]:
    """One run ("honest", "attack" or "zero model") of the digits-grpc experiment over loopback
    gRPC; its final test accuracy."""
    raw = read_config_yaml(CONFIG)
    raw.pop("backend", None)  # grpc: the devices below are its clients
    raw["strategy"] = {**raw.get("strategy", {}), "name": strategy}
    cfg = parse_config({**raw, "rounds": rounds, "out_dir": None}, str(CONFIG))
    task = build_task(cfg)
    assert task.data is not None
    n = task.data.num_clients
    token = generate_token()
    backend = GrpcBackend("127.0.0.1:0", token, min_clients=n, round_timeout_s=60,
                          model_spec=cfg.model, wait_clients_s=60, heartbeat_s=0.5)
    devices = []
    for cid in range(n):
        x, y = task.data.client(cid)
        if run != "honest" and cid == HOSTILE:  # registers its true count
            claim = CLAIM if run == "attack" else len(y)
            devices.append(FLClient(backend.address, token, cid, fit=zero_fit(claim),
                                    num_examples=len(y)))
        else:
            devices.append(FLClient(backend.address, token, cid, (x, y)))
    threads = [threading.Thread(target=d.run, daemon=True) for d in devices]
    for t in threads:
        t.start()
    spec = cfg.model
    server_task = Task(model_fn=lambda: build_model(spec), data=None, test_x=task.test_x,
                       test_y=task.test_y, name=f"grpc/{spec}", init_seed=cfg.seed)
    server_cls = Server if bound else _Unbounded
    t0 = time.perf_counter()
    try:
        records = server_cls(server_task, build_strategy(cfg), backend,
                             ServerConfig(rounds=rounds, seed=cfg.seed,
                                          max_client_examples=cfg.max_client_examples)).run()
    finally:
        backend.close()
        for t in threads:
            t.join(30)
    clipped = sum(len(r.extra.get("clipped", [])) for r in records)
    return {"run": run, "strategy": strategy, "bound": bound,
            "test_acc": records[-1].test_acc, "rounds": len(records),
            "clipped_claims": clipped, "wall_s": time.perf_counter() - t0}


def run(rounds: int = 10) -> list[dict[str, Any]]:
    """Honest, attack and zero-model runs with and without the bound, then the attack under
    fedmedian."""
    torch.set_num_threads(1)
    rows = [final_acc(r, bound, rounds) for r in ("honest", "attack", "zero model")
            for bound in (True, False)]
    return [*rows, final_acc("attack", True, rounds, "fedmedian")]


def main() -> None:
    warnings.filterwarnings("ignore", category=UserWarning)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()
    rows = run(args.rounds)
    table = Table(title=f"digits over gRPC ({CONFIG.name}, {args.rounds} rounds): device "
                        f"{HOSTILE} sends a zero model claiming 2^62 examples (attack) or its "
                        "true 479 (zero model)")
    for col in ("run", "strategy", "num_examples bound", "test acc", "clipped claims",
                "wall s"):
        table.add_column(col, justify="left" if col in ("run", "strategy") else "right")
    for r in rows:
        table.add_row(r["run"], r["strategy"], "on" if r["bound"] else "off",
                      f"{r['test_acc']:.3f}", str(r["clipped_claims"]), f"{r['wall_s']:.1f}")
    emit(Console(), [table], {"config": str(CONFIG), "rounds": args.rounds, "rows": rows},
         args.json)


if __name__ == "__main__":
    main()
