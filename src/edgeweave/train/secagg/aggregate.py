"""FedAvg whose server only ever sees the securely aggregated sum (Bonawitz et al. 2017).

With a simulated backend the strategy receives every client's model (the simulation has them
anyway) and runs the full protocol over them in-process, including simulated dropouts after
ShareKeys, so its result is exactly what a deployment would compute: the mean over the
survivors, from the unmasked ring sum only. With the grpc backend in secure-aggregation mode
(:class:`edgeweave.train.secagg.backend.SecAggGrpcBackend`) the devices ran the protocol and
the backend hands over ONE pre-summed row flagged ``metrics["secagg"]``; the strategy then
just applies it. Either way the result equals plain FedAvg over the same survivors to within
the quantisation step.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from edgeweave.train.secagg import graph as graphs
from edgeweave.train.secagg.messages import Params as SecAggParams
from edgeweave.train.secagg.simulate import make_graph, secure_sum
from edgeweave.train.secagg.vector import UpdateVector
from edgeweave.train.strategies.base import Strategy
from edgeweave.train.types import FitConfig, Params, TrainError, Updates

PRESUMMED = "secagg"  # Updates.metrics key marking a single pre-summed row


class SecAggFedAvg(Strategy):
    """FedAvg over a secure sum.

    Args:
        clip: per-coordinate bound on a client's delta (larger values are clipped).
        ring_bits: 32 (uploads as large as float32) or 64.
        dropout: fraction of the selected clients that vanish after ShareKeys (simulation).
        k: neighbours per client (Bell et al. 2020); None: the complete graph.
        threshold_frac: t = floor(threshold_frac * (degree + 1)) + 1 shares rebuild a secret.
        active: run the actively secure protocol (signed advertisements + ConsistencyCheck,
            see :mod:`edgeweave.train.secagg.client`) in the simulation, so its cost shows in
            the round's metrics; off: the honest-but-curious server's four rounds.
    """

    name = "secagg-fedavg"

    def __init__(self, fraction: float = 1.0, min_clients: int = 1, fit: FitConfig | None = None,
                 *, clip: float = 1.0, ring_bits: int = 32, dropout: float = 0.0,
                 k: int | None = None, threshold_frac: float = 0.5, seed: int = 0,
                 active: bool = False) -> None:
        super().__init__(fraction, min_clients, fit)
        if not 0 <= dropout < 1:
            raise TrainError(f"{self.name}: dropout must be in [0, 1), got {dropout}")
        self.clip, self.ring_bits, self.dropout = clip, ring_bits, dropout
        self.k, self.threshold_frac, self.seed = k, threshold_frac, seed
        self.active = active
        self._metrics: dict[str, Any] = {}

    def aggregate(self, round_num: int, global_params: Params, updates: Updates) -> Params:
        info = updates.metrics.get(PRESUMMED)
        if info is not None:  # the devices already ran the protocol
            if len(updates) != 1:
                raise TrainError(f"{self.name}: a pre-summed update must have one row, got "
                                 f"{len(updates)}")
            self._metrics = {f"secagg_{k}": v for k, v in info.items()}
            return OrderedDict((k, v[0].clone()) for k, v in updates.params.items())
        return self._simulate(round_num, global_params, updates)

    def _simulate(self, round_num: int, global_params: Params, updates: Updates) -> Params:
        ids = list(updates.client_ids)
        if len(ids) < 2:  # a "sum" of one input is that input: nothing would be hidden
            raise TrainError(f"{self.name}: secure aggregation needs at least 2 client updates, "
                             f"got {len(ids)} in round {round_num}")
        weights = [int(w) for w in updates.num_examples.tolist()]
        vec = UpdateVector.for_model(global_params, sum(weights), self.clip, self.ring_bits)
        deltas = updates.deltas(global_params)
        inputs = {}
        for i, cid in enumerate(ids):
            d = OrderedDict((k, v[i]) for k, v in deltas.items())
            inputs[cid] = vec.encode(d, weights[i], float(updates.train_loss[i]))
        g = make_graph(ids, self.k, self.seed + round_num)
        degree = min(len(vs) for vs in g.values())
        params = SecAggParams(self.ring_bits, graphs.threshold(degree + 1, self.threshold_frac),
                              vec.length, b"round %d" % round_num, active=self.active)
        rng = np.random.default_rng([self.seed, round_num])
        n_drop = round(self.dropout * len(ids))
        drop = {ids[int(i)] for i in rng.choice(len(ids), size=n_drop, replace=False)}
        res = secure_sum(inputs, params, g, drop_before_masking=drop)
        mean, weight, loss = vec.decode(res.total)
        self._metrics = {
            "secagg_survivors": len(res.survivors), "secagg_dropped": len(res.dropped),
            "secagg_threshold": params.threshold, "secagg_degree": degree,
            "secagg_active": self.active,
            "secagg_weight": weight, "secagg_train_loss": loss,
            "secagg_client_s": float(np.mean(list(res.client_s.values()))),
            "secagg_server_s": res.server_s,
            "secagg_bytes_up_per_client": res.client_bytes_up,
            "secagg_bytes_down_per_client": res.client_bytes_down,
        }
        return OrderedDict(
            (k, (global_params[k].to(torch.float64) + mean[k]).to(global_params[k].dtype))
            for k in global_params)

    def round_metrics(self) -> dict[str, Any]:
        return dict(self._metrics)
