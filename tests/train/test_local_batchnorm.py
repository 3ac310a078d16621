"""The local-training reference trains models with BatchNorm: parameters learn, running
statistics follow the data, and neither is differentiated through."""

import torch
from torch import nn

from edgeweave.train.local import train_client
from edgeweave.train.task import params_of
from edgeweave.train.types import FitConfig


def test_batchnorm_model_trains_and_tracks_running_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    start = params_of(model)
    x = torch.randn(40, 8) * 3 + 2
    y = torch.randint(0, 3, (40,))
    new, loss = train_client(model, start, x, y, FitConfig(lr=0.1, batch_size=8, prox_mu=0.01),
                             round_num=0, client_id=1)
    assert loss > 0
    assert not torch.allclose(new["0.weight"], start["0.weight"])
    assert not torch.allclose(new["1.running_mean"], start["1.running_mean"])
    assert not new["1.running_mean"].requires_grad
    # the global model handed in is never modified
    assert torch.equal(start["1.running_mean"], torch.zeros(16))
