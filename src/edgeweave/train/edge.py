"""The edge aggregator of hierarchical FL as a process (``edgeweave fl edge``): a client of the
cloud and a server to its devices.

Towards the cloud it is a device like any other (:class:`~edgeweave.train.grpc_client.FLClient`:
it dials out, registers under its edge index, holds the task stream, reconnects with back-off).
Towards its devices it is an FL server (:class:`~edgeweave.train.backends.grpc_backend.
GrpcBackend`: bearer token, optional TLS, leases, the devices' ``num_examples`` bound), taking
only the devices the fleet puts under it. Each cloud task runs this edge's rounds over its
devices with :class:`~edgeweave.train.control.edge_rounds.EdgeRounds`, the code the in-process
simulation runs, and answers with the edge model, claiming the examples its devices trained on.
The cloud bounds that claim by the edge's registration: ``edge_rounds`` times its devices'
registered examples.

State: ``out_dir`` holds the edge's own ``metrics.jsonl`` (one line per cloud round served:
device updates, device-edge bytes, train loss) and ``checkpoint.pt`` (the edge strategy's and
codec's state, the last cloud round served), written as the server writes its own and locked
for the run. The model is not the edge's to keep: every cloud round starts from the model the
cloud sends, its checkpointed model, so a restarted edge rejoins where the cloud is. A cloud
round the edge dies in is lost for this edge only: the cloud sees its task stream close and
completes the round with the other edges.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeweave.folder_lock import lock_folder, make_folder
from edgeweave.train import checkpoint as ckpt
from edgeweave.train.backends.base import Backend
from edgeweave.train.control.edge_rounds import EdgeResult, EdgeRounds
from edgeweave.train.grpc_client import ClientStats, FLClient
from edgeweave.train.metrics import FLMetrics
from edgeweave.train.types import FitConfig, Params, RoundRecord, TrainError

log = logging.getLogger(__name__)


class EdgeAggregator:
    """``rounds`` (this edge's share of every cloud round) over ``devices`` (usually a
    GrpcBackend the devices dial into; any Backend works, which the tests use).

    ``progress`` is called with the record of every cloud round served; ``metrics`` (when
    given) observes the same records.
    """

    def __init__(self, rounds: EdgeRounds, devices: Backend, model_spec: str, *,
                 out_dir: Path | None = None, metrics: FLMetrics | None = None,
                 progress: Callable[[RoundRecord], Any] | None = None) -> None:
        self.rounds, self.devices, self.model_spec = rounds, devices, model_spec
        self.out_dir, self.metrics, self.progress = out_dir, metrics, progress
        ident = {"edge": rounds.identity(), "model": model_spec}
        self.digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
        self.served = 0  # the last cloud round served (checkpointed)

    # -- the cloud's view: one FIT task is this edge's rounds -----------------------------------
    def fit(self, params: Params, config: FitConfig, cloud_round: int) -> tuple[Params, int, float]:
        """FLClient's fit function. ``config`` is the cloud's and unused: the devices train with
        this edge's strategy's configuration (the same experiment file)."""
        t0 = time.perf_counter()
        res = self.rounds.run(self.devices, cloud_round, params)
        self._record(cloud_round, res, time.perf_counter() - t0)
        if res.examples <= 0:
            why = "; ".join(f"client {c}: {r}" for c, r in sorted(res.failed.items())[:5])
            raise TrainError(f"edge {self.rounds.name!r}: no device update arrived in cloud "
                             f"round {cloud_round}" + (f" ({why})" if why else ""))
        return res.params, round(res.examples), res.train_loss

    def claim(self) -> int:
        """The examples this edge registers with the cloud: its devices' registered examples,
        once per edge round. Waits for the devices first (the device backend's wait)."""
        mine = set(self.rounds.members)
        held = sum(c.num_examples for c in self.devices.available_clients()
                   if c.client_id in mine)
        if held < 1:
            raise TrainError(f"edge {self.rounds.name!r}: none of its devices "
                             f"{sorted(mine)} is connected")
        return self.rounds.edge_rounds * held

    def serve(self, cloud: str, token: str, **client_kw: Any) -> ClientStats:
        """Resume from ``out_dir``, wait for the devices, then serve the cloud's rounds until it
        says training is over (``client_kw``: :class:`FLClient`'s options, e.g. ``tls_ca``,
        ``give_up_s``). The caller owns the device backend: on return it tells the devices
        training is over, on an error it leaves them to reconnect."""
        if self.out_dir is None:
            return self._serve(cloud, token, client_kw)
        with lock_folder(self.out_dir, "edge out_dir"):
            return self._serve(cloud, token, client_kw)

    def _serve(self, cloud: str, token: str, client_kw: dict[str, Any]) -> ClientStats:
        self._resume()
        client = FLClient(cloud, token, self.rounds.index, fit=self.fit,
                          num_examples=self.claim(), model_spec=self.model_spec,
                          device=f"edge {self.rounds.name}", **client_kw)
        return client.run()

    # -- durable state ---------------------------------------------------------------------------
    def _paths(self) -> tuple[Path, Path] | None:
        if self.out_dir is None:
            return None
        out = make_folder(self.out_dir, "edge out_dir")
        return out / ckpt.METRICS, out / ckpt.CHECKPOINT

    def _resume(self) -> None:
        paths = self._paths()
        if paths is None or not paths[1].exists():
            return
        state = ckpt.load_checkpoint(paths[1])
        if state.get("config_digest") != self.digest:
            raise TrainError(f"checkpoint {paths[1]}: made by another edge or experiment "
                             f"(digest {state.get('config_digest')}, this one {self.digest}); "
                             "use another out_dir or delete the checkpoint")
        self.rounds.load_state(state.get("edge") or {})
        self.served = int(state.get("round", 0))
        ckpt.truncate_metrics(paths[0], self.served)
        log.info("edge %s resumed after cloud round %d", self.rounds.name, self.served)

    def _record(self, cloud_round: int, res: EdgeResult, wall_s: float) -> None:
        rec = RoundRecord(
            round=cloud_round, clients=res.updates, train_loss=res.train_loss,
            test_loss=math.nan, test_acc=math.nan, bytes_up=res.dev_up,
            bytes_down=res.dev_down, wall_s=wall_s,
            extra={"edge": self.rounds.name, "edge_rounds": self.rounds.edge_rounds,
                   "selected": res.selected, "failed": res.dropped, "examples": res.examples,
                   **({"clipped": res.clipped} if res.clipped else {})})
        paths = self._paths()
        self.served = cloud_round
        if paths is not None:
            ckpt.append_metrics(paths[0], rec)
            ckpt.save_checkpoint(paths[1], {"round": cloud_round, "edge": self.rounds.state(),
                                            "config_digest": self.digest})
        if self.metrics is not None:
            self.metrics.observe(rec)
        if self.progress is not None:
            self.progress(rec)
