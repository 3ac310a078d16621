"""Neurosurgeon-style latency prediction: one regression per layer type.

Kang et al. (ASPLOS 2017) fit, per layer type, a (log-)linear model of latency on the layer's
configuration (input size, filter size, number of filters, neurons), so latency on a hardware
kind can be predicted for layers never run on it. We do the same on this host, with features
every node carries (FLOPs, input bytes, output bytes), and scale to other tiers by the hardware
profiles. Fits minimise RELATIVE error (rows weighted by 1/latency) with non-negative
coefficients, because small layers dominate the count and a negative marginal cost is never
physical.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

_CLASSES: dict[str, tuple[str, ...]] = {
    "conv": ("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d"),
    "linear": ("linear", "matmul", "mm", "bmm", "addmm", "baddbmm"),
    "pool": ("max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d",
             "max_pool1d", "avg_pool1d"),
    "norm": ("batch_norm", "layer_norm", "group_norm", "instance_norm", "local_response_norm"),
    "act": ("relu", "relu6", "hardswish", "hardsigmoid", "sigmoid", "tanh", "gelu", "silu",
            "leaky_relu", "elu", "softmax", "log_softmax"),
    "eltwise": ("add", "mul", "sub", "truediv", "iadd", "cat", "mean", "sum"),
}
_OP_CLASS = {op: cls for cls, ops in _CLASSES.items() for op in ops}
_FEATURES = {  # which of (flops, in_bytes, out_bytes) each class regresses on
    "conv": (0, 1, 2),
    "linear": (0, 1, 2),
    "pool": (1, 2),
    "norm": (1,),
    "act": (1,),
    "eltwise": (1, 2),
    "other": (0, 1, 2),
}


def op_class(op: str, flops: int) -> str:
    """Layer type for regression; zero-FLOP data movement (view, size, ...) is its own class."""
    if op in _OP_CLASS:
        return _OP_CLASS[op]
    return "shape" if flops == 0 else "other"


@dataclass(frozen=True)
class Sample:
    op: str
    flops: float
    in_bytes: float
    out_bytes: float
    ms: float

    @property
    def cls(self) -> str:
        return op_class(self.op, int(self.flops))

    def x(self, cls: str) -> np.ndarray:
        raw = (self.flops, self.in_bytes, self.out_bytes)
        return np.array([1.0] + [raw[i] for i in _FEATURES[cls]])


class LatencyModel:
    """Per-class fits; a class never seen in training falls back to the pooled 'other' fit."""

    def __init__(self, coef: dict[str, np.ndarray], shape_ms: float):
        self.coef = coef
        self.shape_ms = shape_ms

    @classmethod
    def fit(cls, samples: Sequence[Sample]) -> LatencyModel:
        coef: dict[str, np.ndarray] = {}
        shapes = [s.ms for s in samples if s.cls == "shape"]
        by_class: dict[str, list[Sample]] = {}
        for s in samples:
            if s.cls == "shape":
                continue
            by_class.setdefault(s.cls, []).append(s)
            if s.cls != "other":  # the pooled fit serves op types never seen in training
                by_class.setdefault("other", []).append(s)
        for name, group in by_class.items():
            coef[name] = _fit(group, name)
        return cls(coef, float(np.median(shapes)) if shapes else 0.0)

    def predict(self, op: str, flops: float, in_bytes: float, out_bytes: float) -> float:
        sample = Sample(op, flops, in_bytes, out_bytes, 0.0)
        cls = sample.cls
        if cls == "shape":
            return self.shape_ms
        key = cls if cls in self.coef else "other"
        if key not in self.coef:
            return self.shape_ms
        return float(max(sample.x(key) @ self.coef[key], 1e-4))


def _fit(group: Sequence[Sample], cls: str) -> np.ndarray:
    x = np.stack([s.x(cls) for s in group])
    y = np.array([max(s.ms, 1e-4) for s in group])
    scale = x.max(axis=0)
    scale[scale == 0] = 1.0
    coef, _ = nnls((x / scale) / y[:, None], np.ones(len(y)))
    return coef / scale


def mape(model: LatencyModel, samples: Sequence[Sample]) -> float:
    """Mean absolute percentage error on `samples` (the held-out layers)."""
    if not samples:
        return float("nan")
    errs = [
        abs(model.predict(s.op, s.flops, s.in_bytes, s.out_bytes) - s.ms) / max(s.ms, 1e-4)
        for s in samples
    ]
    return float(np.mean(errs) * 100.0)
