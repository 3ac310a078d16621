"""A client interface a Flower user already knows: ``fit`` and ``evaluate`` on the global
parameters, returning (parameters, num_examples, metrics) and (loss, num_examples, metrics).

Parameters may come as a list of numpy arrays in the model's state-dict order (Flower's
``NDArrays``) or as a state dict (:data:`~edgeweave.train.types.Params`); a client answers in
the form it was given. ``config`` is a plain dict: the fields of
:class:`~edgeweave.train.types.FitConfig` plus ``round``. :meth:`Client.as_fit_fn` adapts any
client to the grpc device loop, so a user's own client class runs in a real deployment.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import numpy as np
import torch

from edgeweave.train.local import train_client
from edgeweave.train.models import build_model
from edgeweave.train.task import params_of
from edgeweave.train.types import FitConfig, Params, TrainError

NDArrays = list[np.ndarray]
Parameters = NDArrays | Params
_FIT_FIELDS = {f.name for f in fields(FitConfig)}


class Client(ABC):
    """One federated participant. Subclasses implement :meth:`fit` and :meth:`evaluate`."""

    @abstractmethod
    def get_parameters(self, config: dict[str, Any]) -> NDArrays:
        """The client's current model as numpy arrays (the server may start from it)."""

    @abstractmethod
    def fit(self, parameters: Parameters,
            config: dict[str, Any]) -> tuple[Parameters, int, dict[str, Any]]:
        """Train from ``parameters``; return the new parameters, examples used, metrics."""

    @abstractmethod
    def evaluate(self, parameters: Parameters,
                 config: dict[str, Any]) -> tuple[float, int, dict[str, Any]]:
        """Loss of ``parameters`` on this client's data, examples used, metrics."""

    def as_fit_fn(self) -> Callable[[Params, FitConfig, int], tuple[Params, int, float]]:
        """This client's fit with the signature of the grpc device loop's ``fit``."""

        def fit(params: Params, config: FitConfig, round_num: int) -> tuple[Params, int, float]:
            cfg = {f: getattr(config, f) for f in _FIT_FIELDS} | {"round": round_num}
            new, n, metrics = self.fit(params, cfg)
            if not isinstance(new, dict):
                new = OrderedDict(zip(params, (torch.as_tensor(a) for a in new), strict=True))
            return OrderedDict(new), n, float(metrics.get("train_loss", 0.0))

        return fit


def fit_config_from(config: dict[str, Any], default: FitConfig) -> FitConfig:
    """The FitConfig a config dict asks for (unknown keys other than ``round`` are an error)."""
    extra = set(config) - _FIT_FIELDS - {"round"}
    if extra:
        raise TrainError(f"client config: unknown key(s) {sorted(extra)}; accepted: "
                         f"{sorted(_FIT_FIELDS | {'round'})}")
    values = {f: getattr(default, f) for f in _FIT_FIELDS}
    values.update({k: v for k, v in config.items() if k in _FIT_FIELDS})
    return FitConfig(**values)


class TorchClient(Client):
    """A client holding (x, y) that trains a model given by spec (``"mlp:64,64,10"``) with the
    reference local training, so its results equal the simulated backends' for the same seeds.
    """

    def __init__(self, model_spec: str, x: torch.Tensor, y: torch.Tensor, client_id: int = 0,
                 fit: FitConfig | None = None) -> None:
        if len(x) != len(y):
            raise TrainError(f"client {client_id}: x has {len(x)} rows but y has {len(y)}")
        self.model = build_model(model_spec)
        self.x, self.y = x, y
        self.client_id = client_id
        self.default_fit = fit or FitConfig()
        self.names = list(params_of(self.model))
        self.params = params_of(self.model)

    def _to_params(self, parameters: Parameters) -> Params:
        if isinstance(parameters, dict):
            missing = set(self.names) - set(parameters)
            if missing:
                raise TrainError(f"client {self.client_id}: parameters lack {sorted(missing)}")
            return OrderedDict((k, torch.as_tensor(parameters[k])) for k in self.names)
        if len(parameters) != len(self.names):
            raise TrainError(f"client {self.client_id}: got {len(parameters)} arrays, the model "
                             f"has {len(self.names)} ({', '.join(self.names)})")
        out = OrderedDict()
        for k, a in zip(self.names, parameters, strict=True):
            t = torch.as_tensor(np.asarray(a))
            if t.shape != self.params[k].shape:
                raise TrainError(f"client {self.client_id}: array for {k!r} has shape "
                                 f"{tuple(t.shape)}, expected {tuple(self.params[k].shape)}")
            out[k] = t.to(self.params[k].dtype)
        return out

    def _like(self, given: Parameters, params: Params) -> Parameters:
        if isinstance(given, dict):
            return params
        return [v.detach().cpu().numpy() for v in params.values()]

    def get_parameters(self, config: dict[str, Any]) -> NDArrays:
        return [v.numpy() for v in self.params.values()]

    def fit(self, parameters: Parameters,
            config: dict[str, Any]) -> tuple[Parameters, int, dict[str, Any]]:
        start = self._to_params(parameters)
        cfg = fit_config_from(config, self.default_fit)
        new, loss = train_client(self.model, start, self.x, self.y, cfg,
                                 int(config.get("round", 0)), self.client_id)
        self.params = new
        return self._like(parameters, new), len(self.y), {"train_loss": loss}

    def evaluate(self, parameters: Parameters,
                 config: dict[str, Any]) -> tuple[float, int, dict[str, Any]]:
        from edgeweave.train.server import evaluate

        loss, acc = evaluate(self.model, self._to_params(parameters), self.x, self.y)
        return loss, len(self.y), {"accuracy": acc}
