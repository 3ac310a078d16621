"""FedAvg (McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data"): clients run local epochs, the server takes the sample-weighted mean.

Weighting by ``num_examples`` is what makes the average an unbiased estimate of the model that
centralised training on the union of the clients' data would move towards when sizes are
unbalanced; an unweighted mean lets a client with 5 samples count as much as one with 5,000.
"""

from __future__ import annotations

from collections import OrderedDict

from edgeweave.train.strategies.base import Strategy, weighted_mean
from edgeweave.train.types import Params, TrainError, Updates


class FedAvg(Strategy):
    name = "fedavg"

    def aggregate(self, round_num: int, global_params: Params, updates: Updates) -> Params:
        if len(updates) == 0:
            raise TrainError(f"{self.name}: round {round_num} has no client updates to aggregate")
        mean = weighted_mean(updates.params, updates.num_examples)
        return OrderedDict((k, mean[k]) for k in global_params)
