"""The Flower-style client: numpy or state-dict parameters in, the same form out, and exactly
the reference local training underneath."""

import numpy as np
import pytest
import torch

from edgeweave.train.client import TorchClient
from edgeweave.train.local import train_client
from edgeweave.train.models import build_model
from edgeweave.train.task import params_of
from edgeweave.train.types import FitConfig, TrainError


def _client():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 5, generator=g)
    y = (x[:, 0] > 0).long()
    return TorchClient("logreg:5,2", x, y, client_id=3, fit=FitConfig(lr=0.2, batch_size=4)), x, y


def test_fit_on_numpy_returns_numpy_equal_to_reference():
    client, x, y = _client()
    torch.manual_seed(1)
    start = params_of(build_model("logreg:5,2"))
    arrays = [v.numpy().copy() for v in start.values()]
    new, n, metrics = client.fit(arrays, {"round": 2, "epochs": 2})
    assert n == 20 and isinstance(new, list) and all(isinstance(a, np.ndarray) for a in new)
    ref, loss = train_client(build_model("logreg:5,2"), start, x, y,
                             FitConfig(lr=0.2, batch_size=4, epochs=2), 2, 3)
    for a, (_, r) in zip(new, ref.items(), strict=True):
        assert np.allclose(a, r.numpy())
    assert metrics["train_loss"] == pytest.approx(loss)


def test_fit_on_state_dict_returns_state_dict_and_evaluate_reports_accuracy():
    client, _, _ = _client()
    start = params_of(build_model("logreg:5,2"))
    new, _, _ = client.fit(start, {"round": 0})
    assert list(new) == list(start)
    before, n, _ = client.evaluate(start, {})
    after, _, m1 = client.evaluate(new, {})
    assert n == 20 and after < before and 0 <= m1["accuracy"] <= 1


def test_as_fit_fn_matches_the_device_loop_signature():
    client, _, _ = _client()
    start = params_of(build_model("logreg:5,2"))
    fn = client.as_fit_fn()
    new, n, loss = fn(start, FitConfig(lr=0.2, batch_size=4), 1)
    direct, _, m = client.fit(start, {"round": 1, "lr": 0.2, "batch_size": 4})
    assert n == 20 and loss == pytest.approx(m["train_loss"])
    assert all(torch.equal(new[k], direct[k]) for k in new)


def test_bad_parameters_and_config_are_named():
    client, _, _ = _client()
    with pytest.raises(TrainError, match="got 1 arrays"):
        client.fit([np.zeros((2, 5), np.float32)], {})
    with pytest.raises(TrainError, match="shape"):
        client.fit([np.zeros((3, 5), np.float32), np.zeros(2, np.float32)], {})
    with pytest.raises(TrainError, match="unknown key"):
        client.fit(client.get_parameters({}), {"learning_rate": 1})
