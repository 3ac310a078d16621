"""The federated server loop: the same rounds whichever backend trains the clients.

A synchronous round: list the available clients, let the strategy choose K and the local config,
over-select to ceil(K * over_select) (Chen et al. 2016, "Revisiting Distributed Synchronous SGD":
backup workers), drop the clients whose simulated time misses the deadline, train the rest, keep
the first K to arrive, aggregate, evaluate, log the round and checkpoint it. Every random choice
of round r is drawn from a generator seeded by (seed, r), so a run resumed from a checkpoint
makes exactly the choices the uninterrupted run made.

Asynchronous strategies (FedAsync) run an event simulation instead: K clients are always in
flight, each started from the model version current when it started; they finish in order of
simulated time and are applied one at a time with staleness = versions applied since they
started. A "round" there is K applied updates.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from edgeweave.folder_lock import lock_folder, make_folder
from edgeweave.train import checkpoint as ckpt
from edgeweave.train.backends.base import Backend
from edgeweave.train.claims import DEFAULT_MAX_CLIENT_EXAMPLES, bound_examples
from edgeweave.train.strategies.base import Strategy
from edgeweave.train.task import Task
from edgeweave.train.transfer import Transfer
from edgeweave.train.types import (
    PRESUMMED_WIRE,
    ROUND_EXTRA,
    ClientInfo,
    FitConfig,
    Params,
    RoundRecord,
    TrainError,
    Updates,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerConfig:
    """``codec`` (a name from :mod:`edgeweave.codec`, e.g. "fp16" or "int8+zstd") compresses the
    model sent down and the updates sent up; the byte counts then come from the codec.
    ``up_codec`` / ``down_codec`` override it for one direction and also take stateful update
    compressors (``"ef:topk:0.001"``, ``"dgc:0.001,0.9,5,4"``; see :mod:`edgeweave.train.transfer`
    for what each direction sends). ``max_client_examples`` caps the sample count one client's
    update may claim (see :mod:`edgeweave.train.claims`)."""

    rounds: int
    seed: int = 0
    out_dir: Path | None = None
    checkpoint_every: int = 1
    deadline_s: float | None = None
    over_select: float = 1.0
    eval_every: int = 1
    codec: str | None = None
    eval_batch_size: int = 8192
    up_codec: str | None = None
    down_codec: str | None = None
    max_client_examples: int = DEFAULT_MAX_CLIENT_EXAMPLES
    identity: str | None = None

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.checkpoint_every < 1 or self.eval_every < 1:
            raise TrainError(f"server config: rounds, checkpoint_every and eval_every must be "
                             f">= 1, got {self.rounds}, {self.checkpoint_every}, "
                             f"{self.eval_every}")
        if not (math.isfinite(self.over_select) and self.over_select >= 1):
            raise TrainError(f"server config: over_select must be >= 1, got {self.over_select}")
        if self.deadline_s is not None and not (math.isfinite(self.deadline_s)
                                                and self.deadline_s > 0):
            raise TrainError(f"server config: deadline_s must be > 0, got {self.deadline_s}")
        if self.max_client_examples < 1:
            raise TrainError(f"server config: max_client_examples must be >= 1, got "
                             f"{self.max_client_examples}")


def simulated_time(info: ClientInfo, config: FitConfig) -> float:
    """Seconds one client needs for a round: local compute plus one model upload."""
    if config.local_steps is not None and info.num_examples > 0:
        epochs = config.local_steps * min(config.batch_size, info.num_examples) / info.num_examples
    else:
        epochs = config.epochs
    return info.compute_s_per_epoch * epochs + info.upload_s


def evaluate(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 1024) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``params`` on (x, y)."""
    if len(y) == 0:
        return float("nan"), float("nan")
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for lo in range(0, len(y), batch_size):
            out = functional_call(model, dict(params), (x[lo:lo + batch_size],))
            yb = y[lo:lo + batch_size]
            loss += float(nn.functional.cross_entropy(out, yb, reduction="sum"))
            correct += int((out.argmax(1) == yb).sum())
    return loss / len(y), correct / len(y)


def strategy_hyper(strategy: Strategy) -> dict[str, Any]:
    """A strategy's scalar hyper-parameters: what a resumed run's strategy must match."""
    return {k: v for k, v in sorted(vars(strategy).items())
            if isinstance(v, bool | int | float | str) and not k.startswith("_")}


def _weighted_loss(updates: Updates) -> float:
    if len(updates) == 0:
        return float("nan")
    w = updates.num_examples.to(torch.float64)
    return float((updates.train_loss * w).sum() / w.sum()) if w.sum() > 0 else float("nan")


class Server:
    """Runs ``config.rounds`` rounds of ``strategy`` over ``backend`` on ``task``."""

    def __init__(self, task: Task, strategy: Strategy, backend: Backend,
                 config: ServerConfig) -> None:
        self.task, self.strategy, self.backend, self.config = task, strategy, backend, config
        self.transfer = Transfer(config.codec, up=config.up_codec, down=config.down_codec)
        self.model = task.model_fn()
        self.params: Params = OrderedDict()
        self.round = 0
        # asynchronous simulation state (checkpointed)
        self.clock = 0.0
        self.version = 0
        self.launches = 0
        self.inflight: list[tuple[float, int, int, int]] = []  # (finish, seq, client, version)
        self.snapshots: dict[int, Params] = {}
        # taken before any round: strategies may keep running statistics among their attributes
        self._digest = self.digest()

    # -- identity and persistence ---------------------------------------------------------
    def digest(self) -> str:
        """What must match for a checkpoint to be resumed (rounds may grow, paths may move)."""
        c = self.config
        ident = {"seed": c.seed, "deadline_s": c.deadline_s, "over_select": c.over_select,
                 "codec": c.codec, "strategy": self.strategy.name,
                 **({"up_down": [c.up_codec, c.down_codec]}
                    if c.up_codec is not None or c.down_codec is not None else {}),
                 **({"identity": c.identity} if c.identity is not None else {}),
                 "hyper": strategy_hyper(self.strategy),
                 "fit": asdict(self.strategy.fit_config), "task": self.task.name,
                 "init_seed": self.task.init_seed}
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]

    def _paths(self) -> tuple[Path, Path] | None:
        if self.config.out_dir is None:
            return None
        out = make_folder(self.config.out_dir, "out_dir")
        return out / ckpt.METRICS, out / ckpt.CHECKPOINT

    def _resume(self) -> list[RoundRecord]:
        self.params, self.round = self.task.init_params(), 0
        paths = self._paths()
        if paths is None:
            return []
        metrics, cp = paths
        if not cp.exists():
            # lines without a checkpoint belong to a run we cannot continue: kept, moved aside
            aside = ckpt.set_aside_metrics(metrics)
            if aside is not None:
                log.warning("out_dir %s: %s has no %s to resume from; kept it as %s and "
                            "starting at round 1", metrics.parent, metrics.name, cp.name,
                            aside.name)
            return []
        state = ckpt.load_checkpoint(cp)
        if state.get("config_digest") != self._digest:
            raise TrainError(
                f"checkpoint {cp}: made by a different experiment (digest "
                f"{state.get('config_digest')}, this one {self._digest}); use another out_dir "
                f"(YAML out_dir, or --out) or delete {cp}"
            )
        self.params = OrderedDict(state["params"])
        self.round = int(state["round"])
        self.strategy.load_state(state["strategy_state"])
        self.backend.load_state(state.get("backend_state") or {})
        self.transfer.load_state(state.get("transfer") or {})
        ckpt.restore_rng(state["rng"])
        a = state.get("async") or {}
        self.clock, self.version = float(a.get("clock", 0.0)), int(a.get("version", 0))
        self.launches = int(a.get("launches", 0))
        self.inflight = [tuple(e) for e in a.get("inflight", [])]  # type: ignore[misc]
        self.snapshots = {int(v): OrderedDict(p) for v, p in a.get("snapshots", {}).items()}
        return ckpt.truncate_metrics(metrics, self.round)

    def _save(self) -> None:
        paths = self._paths()
        if paths is None:
            return
        state = {
            "round": self.round, "params": dict(self.params),
            "strategy_state": self.strategy.state(), "rng": ckpt.rng_state(),
            "backend_state": self.backend.state(),
            "transfer": self.transfer.state(),
            "config_digest": self._digest,
            "async": {"clock": self.clock, "version": self.version, "launches": self.launches,
                      "inflight": [list(e) for e in self.inflight],
                      "snapshots": {v: dict(p) for v, p in self.snapshots.items()}},
        }
        ckpt.save_checkpoint(paths[1], state)

    # -- the loop -------------------------------------------------------------------------
    def run(self, progress: Callable[[RoundRecord], Any] | None = None) -> list[RoundRecord]:
        """Run (or resume) the rounds; with an ``out_dir`` the folder is locked for the run
        (:mod:`edgeweave.folder_lock`): a second run on the same folder is refused."""
        if self.config.out_dir is None:
            return self._run(progress)
        with lock_folder(self.config.out_dir, "out_dir"):
            return self._run(progress)

    def _run(self, progress: Callable[[RoundRecord], Any] | None) -> list[RoundRecord]:
        records = self._resume()
        paths = self._paths()
        while self.round < self.config.rounds:
            r = self.round + 1
            t0 = time.perf_counter()
            rec = self._async_round(r) if self.strategy.asynchronous else self._sync_round(r)
            rec.extra.update(self.strategy.round_metrics())
            if r % self.config.eval_every == 0 or r == self.config.rounds:
                rec.test_loss, rec.test_acc = evaluate(
                    self.model, self.params, self.task.test_x, self.task.test_y,
                    self.config.eval_batch_size)
            rec.wall_s = time.perf_counter() - t0
            self.round = r
            records.append(rec)
            if paths is not None:
                ckpt.append_metrics(paths[0], rec)
                if r % self.config.checkpoint_every == 0 or r == self.config.rounds:
                    self._save()
            if progress is not None:
                progress(rec)
        return records

    def _over_select(self, r: int, ids: list[int], clients: list[ClientInfo],
                     rng: np.random.Generator) -> list[int]:
        want = math.ceil(len(ids) * self.config.over_select) - len(ids)
        chosen = set(ids)
        spare = [c.client_id for c in clients if c.client_id not in chosen]
        if want <= 0 or not spare:
            return list(ids)
        extra = rng.choice(len(spare), size=min(want, len(spare)), replace=False)
        return list(ids) + [spare[int(i)] for i in extra]

    def _sync_round(self, r: int) -> RoundRecord:
        clients = self.backend.available_clients()
        info = {c.client_id: c for c in clients}
        rng = np.random.default_rng([self.config.seed, r])
        ids, fit = self.strategy.configure_fit(r, clients, rng)
        need = len(ids)
        sent = self._over_select(r, ids, clients, rng)
        arrival = {cid: simulated_time(info[cid], fit) for cid in sent}
        deadline = self.config.deadline_s
        on_time = [c for c in sent if deadline is None or arrival[c] <= deadline]
        down_params, down_bytes = self.transfer.down(self.params)
        failed: dict[int, str] = {}
        clipped: list[int] = []
        if on_time:
            updates = self.backend.fit(r, down_params, on_time, fit)
            failed = dict(updates.metrics.get("failed", {}))
            if updates.metrics.get(PRESUMMED_WIRE) is None:
                clipped = self._bound(updates, info, r)
        else:
            updates = None
        arrived = 0
        up_bytes = 0
        down_total = down_bytes * len(sent)
        kept: Updates | None = None
        # a backend that aggregated in the network (secure aggregation) returns ONE pre-summed
        # row and the bytes it really moved: those replace the per-client counts
        wire = updates.metrics.get(PRESUMMED_WIRE) if updates is not None else None
        if wire is not None:
            if self.transfer.uplink is not None or self.transfer.downlink is not None:
                raise TrainError("server config: codecs cannot be combined with a backend that "
                                 "aggregates in the network (secure aggregation): the clients "
                                 "send masked ring vectors, not codec payloads")
            up_bytes, down_total = int(wire["bytes_up"]), int(wire["bytes_down"])
        if updates is not None and len(updates):
            if wire is None:
                updates, up_bytes = self.transfer.up(down_params, updates)
            arrived = len(updates) if wire is None else int(wire["clients"])
            kept = updates
            if len(updates) > need:
                # stable sort: ties (no speed information) keep the strategy's choice first
                order = sorted(range(len(updates)), key=lambda i: arrival[updates.client_ids[i]])
                kept = updates.select(order[:need])
        if kept is not None and len(kept):
            self.params = self.strategy.aggregate(r, self.params, kept)
        elif self.strategy.aggregates_empty:
            from edgeweave.train.backends.sequential import empty_updates

            self.params = self.strategy.aggregate(r, self.params,
                                                  empty_updates(self.params, failed))
        n_kept = 0 if kept is None else (len(kept) if wire is None else arrived)
        sim = max((arrival[c] for c in kept.client_ids), default=0.0) if kept else 0.0
        return RoundRecord(
            round=r, clients=n_kept,
            train_loss=_weighted_loss(kept) if kept is not None else float("nan"),
            test_loss=float("nan"), test_acc=float("nan"),
            bytes_up=up_bytes, bytes_down=down_total, wall_s=0.0,
            extra={"selected": len(sent), "arrived": arrived, "failed": len(failed),
                   "late": len(sent) - len(on_time), "sim_round_s": sim,
                   **({"clipped": clipped} if clipped else {}),
                   **(updates.metrics.get(ROUND_EXTRA, {}) if updates is not None else {})},
        )

    def _bound(self, updates: Updates, info: dict[int, ClientInfo], r: int) -> list[int]:
        """Every sample-weighted strategy sees the bounded count (edgeweave.train.claims)."""
        return bound_examples(updates, {c: i.num_examples for c, i in info.items()},
                              self.config.max_client_examples, r)

    # -- asynchronous simulation ------------------------------------------------------------
    def _launch(self, cid: int, info: ClientInfo, fit: FitConfig) -> None:
        self.launches += 1
        if self.version not in self.snapshots:
            self.snapshots[self.version] = OrderedDict(
                (k, v.clone()) for k, v in self.params.items())
        finish = self.clock + simulated_time(info, fit)
        heapq.heappush(self.inflight, (finish, self.launches, cid, self.version))

    def _async_round(self, r: int) -> RoundRecord:
        clients = self.backend.available_clients()
        info = {c.client_id: c for c in clients}
        rng = np.random.default_rng([self.config.seed, r])
        ids, fit = self.strategy.configure_fit(r, clients, rng)
        concurrency = len(ids)
        busy = {e[2] for e in self.inflight}
        for cid in ids:
            if len(self.inflight) >= concurrency:
                break
            if cid not in busy:
                self._launch(cid, info[cid], fit)
                busy.add(cid)
        applied: list[list[int]] = []
        losses, counts = [], []
        failed = up = down = 0
        attempts = 0
        clipped: list[int] = []
        while len(applied) < concurrency and self.inflight and attempts < 10 * concurrency + 10:
            attempts += 1
            finish, seq, cid, start = heapq.heappop(self.inflight)
            self.clock = finish
            start_params = self.snapshots[start]
            sent, down_b = self.transfer.down(start_params)
            down += down_b
            late = self.config.deadline_s is not None and \
                simulated_time(info[cid], fit) > self.config.deadline_s
            upd = None if late else self.backend.fit(seq, sent, [cid], fit)
            if upd is None or len(upd) == 0:
                failed += 1
            else:
                clipped += self._bound(upd, info, r)
                upd, up_b = self.transfer.up(sent, upd)
                up += up_b
                upd.staleness = torch.tensor([self.version - start], dtype=torch.long)
                self.params = self.strategy.aggregate(r, self.params, upd)
                applied.append([cid, self.version - start])
                self.version += 1
                losses.append(float(upd.train_loss[0]))
                counts.append(float(upd.num_examples[0]))
            if not any(e[3] == start for e in self.inflight):
                del self.snapshots[start]
            busy = {e[2] for e in self.inflight}
            idle = [c.client_id for c in clients if c.client_id not in busy]
            if idle:
                nxt = idle[int(rng.integers(len(idle)))]
                self._launch(nxt, info[nxt], fit)
        w = np.asarray(counts)
        loss = float((np.asarray(losses) * w).sum() / w.sum()) if w.sum() > 0 else float("nan")
        stale = [s for _, s in applied]
        return RoundRecord(
            round=r, clients=len(applied), train_loss=loss, test_loss=float("nan"),
            test_acc=float("nan"), bytes_up=up, bytes_down=down, wall_s=0.0,
            extra={"failed": failed, "applied": applied, "version": self.version,
                   "sim_clock_s": self.clock,
                   "staleness_mean": float(np.mean(stale)) if stale else float("nan"),
                   **({"clipped": clipped} if clipped else {})},
        )
