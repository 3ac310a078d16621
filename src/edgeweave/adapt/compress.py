"""Compressed variants of a model: int8 quantization, pruning, low-rank factorization,
distillation, and their combinations.

The heavy lifting is PyTorch's own (``torch.ao.quantization`` for dynamic and FX static int8,
``torch.nn.utils.prune`` for magnitude pruning); this module wraps those and combines steps,
and re-exports what the sibling modules add where PyTorch has nothing: structured filter
pruning and SVD factorization (:mod:`~edgeweave.adapt.structured`), a Hinton distillation
loss (:mod:`~edgeweave.adapt.distill`) and the :class:`~edgeweave.adapt.variant.Variant` record
that says how a variant was derived and what it costs (:mod:`~edgeweave.adapt.variant`).

Every function leaves its input model untouched (it works on a deep copy).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn
from torch.nn.utils import prune

from edgeweave.adapt.distill import distill, distillation_loss, narrow
from edgeweave.adapt.fit import fit
from edgeweave.adapt.structured import filter_prune, low_rank, svd_linear
from edgeweave.adapt.variant import (
    Variant,
    baseline,
    check_sparsity,
    count_flops,
    nonzero_params,
    resolve_layer,
    serialized,
    total_params,
)
from edgeweave.errors import EdgeWeaveError

__all__ = ["Variant", "baseline", "combine", "count_flops", "distill", "distillation_loss",
           "filter_prune", "low_rank", "magnitude_prune", "narrow", "nonzero_params",
           "prune_then_quantize", "quantize_dynamic", "quantize_static", "serialized",
           "sparsity_of", "svd_linear", "total_params"]


# --------------------------------------------------------------------------------------------
# Post-training int8 quantization
# --------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _quiet_ao() -> Iterator[None]:
    """torch.ao.quantization still works but warns on every call that it is deprecated (in
    favour of torchao, not installed here); silence just those warnings."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated")
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions")
        warnings.filterwarnings("ignore", message=".*reduce_range will be deprecated")
        yield


def _engine() -> str:
    engines = torch.backends.quantized.supported_engines
    engine = next((e for e in ("x86", "fbgemm", "qnnpack") if e in engines), None)
    if engine is None:
        raise EdgeWeaveError(f"no int8 quantization engine in this torch build ({engines})")
    torch.backends.quantized.engine = engine
    return engine


def quantize_dynamic(model: nn.Module, name: str = "int8-dynamic") -> Variant:
    """int8 weights and dynamically quantized activations for Linear layers
    (``torch.ao.quantization.quantize_dynamic``); convs stay fp32. Still fx-traceable, so it can
    be captured and split."""
    from torch.ao.quantization import quantize_dynamic as _qd

    engine = _engine()
    with _quiet_ao():
        q = _qd(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)
    return Variant.of(name, q, {"method": "quantize_dynamic", "dtype": "qint8",
                                "layers": "Linear", "engine": engine})


def quantize_static(model: nn.Module, calibration_x: torch.Tensor, batch: int = 64,
                    name: str = "int8-static") -> Variant:
    """Full int8 (weights and activations, convs included) with FX graph mode quantization,
    calibrated on ``calibration_x``. Raises EdgeWeaveError if the model cannot be FX-quantized.

    Limitation: the converted model runs, but mixes quantized tensors and (de)quantize nodes;
    it is not guaranteed to be split-able by ``edgeweave.graph`` (use the dynamic variant
    for split execution)."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if not isinstance(calibration_x, torch.Tensor) or calibration_x.ndim < 1 \
            or len(calibration_x) == 0:
        raise EdgeWeaveError("calibration_x must be a non-empty batch of example inputs")
    if batch < 1:
        raise EdgeWeaveError(f"batch must be >= 1, got {batch}")
    engine = _engine()
    try:
        with _quiet_ao():
            m = copy.deepcopy(model).eval()
            prepared = prepare_fx(m, get_default_qconfig_mapping(engine),
                                  example_inputs=(calibration_x[:1],))
            with torch.no_grad():
                for i in range(0, len(calibration_x), batch):
                    prepared(calibration_x[i : i + batch])
            q = convert_fx(prepared)
            with torch.no_grad():
                q(calibration_x[:1])
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgeWeaveError(f"static FX int8 quantization failed on this model: {first}"
                             ) from exc
    return Variant.of(name, q, {"method": "quantize_static_fx", "engine": engine,
                                "calibration_samples": len(calibration_x)})


# --------------------------------------------------------------------------------------------
# Unstructured magnitude pruning
# --------------------------------------------------------------------------------------------

def magnitude_prune(model: nn.Module, sparsity: float, layers: Sequence[str] | None = None,
                    x: torch.Tensor | None = None, y: torch.Tensor | None = None,
                    epochs: int = 0, lr: float = 1e-3, seed: int = 0,
                    name: str | None = None) -> Variant:
    """Zero the ``sparsity`` fraction of smallest-|w| weights across ``layers`` (default: every
    Conv2d and Linear) with global L1 unstructured pruning; with ``x, y`` and ``epochs`` the
    survivors are fine-tuned while the mask stays in force, then the mask is made permanent."""
    check_sparsity(sparsity)
    m = copy.deepcopy(model)
    kinds: tuple[type[nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear], ...] = (
        nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    if layers is None:
        targets = [(mod, "weight") for mod in m.modules() if isinstance(mod, kinds)]
        layers = [n for n, mod in m.named_modules() if isinstance(mod, kinds)]
    else:
        targets = [(resolve_layer(m, n, kinds, "conv/linear"), "weight") for n in layers]
    if not targets:
        raise EdgeWeaveError("the model has no Conv/Linear weights to prune")
    total = sum(mod.weight.numel() for mod, _ in targets)
    amount = round(sparsity * total)
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)
    if epochs > 0:
        if x is None or y is None:
            raise EdgeWeaveError("fine-tuning (epochs > 0) needs x and y")
        fit(m, x, y, epochs=epochs, lr=lr, seed=seed)
    for mod, attr in targets:
        prune.remove(mod, attr)
    return Variant.of(name or f"pruned-{round(sparsity * 100)}%", m.eval(),
                      {"method": "magnitude_prune", "sparsity": sparsity, "layers": list(layers),
                       "pruned_weights": amount, "fine_tune_epochs": epochs})


def sparsity_of(module: nn.Module) -> float:
    """Fraction of zeros among the Conv/Linear weights."""
    ws = [m.weight for m in module.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    n = sum(w.numel() for w in ws)
    return sum(int((w == 0).sum()) for w in ws) / n if n else 0.0


# --------------------------------------------------------------------------------------------
# Combinations
# --------------------------------------------------------------------------------------------

def combine(model: nn.Module, *steps: Callable[[nn.Module], Variant],
            name: str | None = None) -> Variant:
    """Apply compression steps in order, each to the previous step's module, e.g.
    ``combine(m, partial(magnitude_prune, sparsity=0.9, x=x, y=y, epochs=5),
    quantize_dynamic)`` for prune-then-quantize."""
    if not steps:
        raise EdgeWeaveError("combine needs at least one step")
    current, done = model, []
    for step in steps:
        v = step(current)
        if not isinstance(v, Variant):
            raise EdgeWeaveError(f"combine step {step!r} returned {type(v).__name__}, "
                                 "not a Variant")
        current = v.module
        done.append(v)
    return Variant.of(name or "+".join(v.name for v in done), current,
                      {"method": "combine", "steps": [v.recipe for v in done]})


def prune_then_quantize(model: nn.Module, sparsity: float, x: torch.Tensor | None = None,
                        y: torch.Tensor | None = None, epochs: int = 0, lr: float = 1e-3,
                        seed: int = 0) -> Variant:
    """Magnitude pruning (optionally fine-tuned) followed by dynamic int8 quantization."""
    check_sparsity(sparsity)
    return combine(
        model,
        lambda m: magnitude_prune(m, sparsity, x=x, y=y, epochs=epochs, lr=lr, seed=seed),
        quantize_dynamic,
    )
