"""FedSGD, the baseline of McMahan et al. 2017: every selected client takes ONE gradient step on
its whole local dataset and the server averages the results weighted by sample count.

Averaging the models after one full-batch step with a common learning rate equals one step of
large-batch SGD on the union of the clients' data (the weighted mean of the gradients), which is
why the paper uses it as the "no local computation" reference that FedAvg beats by 10-100x in
rounds.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from edgeweave.train.strategies.fedavg import FedAvg
from edgeweave.train.types import ClientInfo, FitConfig


class FedSGD(FedAvg):
    name = "fedsgd"

    def configure_fit(self, round_num: int, clients: list[ClientInfo],
                      rng: np.random.Generator) -> tuple[list[int], FitConfig]:
        ids, config = super().configure_fit(round_num, clients, rng)
        # A batch at least as large as the largest selected client is exactly one full batch
        # for every client; local_steps=1 stops after it.
        by_id = {c.client_id: c.num_examples for c in clients}
        full = max([by_id[i] for i in ids] + [1])
        return ids, replace(config, local_steps=1, epochs=1, batch_size=full, momentum=0.0)
