"""Compressed variants of a model: int8 quantization, pruning, low-rank factorization,
distillation, and their combinations.

The heavy lifting is PyTorch's own (``torch.ao.quantization`` for dynamic and FX static int8,
``torch.nn.utils.prune`` for magnitude pruning); this module adds what those lack: structured
filter pruning that really removes channels from an ``nn.Sequential``, SVD factorization of
Linear layers, a Hinton distillation loss, and a :class:`Variant` record that says how a variant
was derived and what it costs (nonzero weights, serialized bytes, FLOPs).

Every function leaves its input model untouched (it works on a deep copy).
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from edgeweave.adapt.fit import fit
from edgeweave.errors import EdgeWeaveError

# Modules a filter-pruned conv's channels flow through unchanged (one output channel per input).
_PASS_THROUGH = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
                 nn.Hardswish, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
                 nn.AdaptiveMaxPool2d, nn.Dropout, nn.Dropout2d, nn.Identity)


# --------------------------------------------------------------------------------------------
# The record and its measurements
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Variant:
    """One compressed (or baseline) model.

    ``params`` counts nonzero weights (so it drops with unstructured pruning); ``size_bytes``
    is the length of the serialized ``state_dict`` (int8 weights are counted packed, as stored);
    ``zipped_bytes`` is that after zlib, which is where unstructured sparsity pays off on disk.
    """

    name: str
    recipe: dict[str, Any]
    module: nn.Module = field(repr=False, compare=False)
    params: int
    size_bytes: int
    zipped_bytes: int

    @classmethod
    def of(cls, name: str, module: nn.Module, recipe: dict[str, Any] | None = None) -> Variant:
        module.eval()
        blob = serialized(module)
        return cls(name, dict(recipe or {}), module, nonzero_params(module), len(blob),
                   len(zlib.compress(blob, 6)))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.module(x)

    def flops(self, input_shape: Sequence[int]) -> int:
        return count_flops(self.module, input_shape)


def baseline(model: nn.Module, name: str = "fp32") -> Variant:
    """The uncompressed model as a variant (a copy), to compare the others against."""
    return Variant.of(name, copy.deepcopy(model), {"method": "none"})


def serialized(module: nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    return buf.getvalue()


def _weights_of(module: nn.Module) -> list[torch.Tensor]:
    """Weight and bias tensors of every submodule, float or quantized (packed ones unpacked)."""
    seen: set[int] = set()
    alive: list[torch.Tensor] = []
    out = []
    for m in module.modules():
        tensors = list(m.parameters(recurse=False))
        for attr in ("weight", "bias"):
            if attr in m._parameters:
                continue
            value = getattr(m, attr, None)
            if callable(value) and not isinstance(value, nn.Module):
                try:
                    value = value()
                except Exception:  # not an accessor after all
                    value = None
            if isinstance(value, torch.Tensor):
                tensors.append(value)
        for t in tensors:
            if id(t) not in seen:
                seen.add(id(t))
                alive.append(t)  # ids are only unique while the objects live
                out.append(t.dequantize() if t.is_quantized else t.detach())
    return out


def nonzero_params(module: nn.Module) -> int:
    return sum(int(torch.count_nonzero(t)) for t in _weights_of(module))


def total_params(module: nn.Module) -> int:
    return sum(t.numel() for t in _weights_of(module))


def count_flops(module: nn.Module, input_shape: Sequence[int]) -> int:
    """Dense FLOPs (2 x multiply-accumulates) of conv- and linear-like layers, float or
    quantized, for one forward pass on a zero input of ``input_shape``."""
    total = 0

    def hook(m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        out = out.dequantize() if out.is_quantized else out
        if hasattr(m, "in_channels") and hasattr(m, "kernel_size"):
            k = math.prod(m.kernel_size) if isinstance(m.kernel_size, tuple) else m.kernel_size
            total += 2 * out.numel() * (m.in_channels // m.groups) * k
        elif hasattr(m, "in_features") and hasattr(m, "out_features"):
            total += 2 * (out.numel() // m.out_features) * m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in module.modules()
               if hasattr(m, "in_features") or hasattr(m, "in_channels")]
    try:
        with torch.no_grad():
            module.eval()(torch.zeros(tuple(input_shape)))
    finally:
        for h in handles:
            h.remove()
    return total


def _resolve(model: nn.Module, layer: str, kinds: tuple[type, ...], what: str) -> nn.Module:
    try:
        m = model.get_submodule(layer)
    except AttributeError as exc:
        names = [n for n, mm in model.named_modules() if isinstance(mm, kinds)]
        raise EdgeWeaveError(f"layer {layer!r} not found in the model; {what} layers: {names}"
                             ) from exc
    if not isinstance(m, kinds):
        raise EdgeWeaveError(f"layer {layer!r} is a {type(m).__name__}, not a {what} layer")
    return m


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


# --------------------------------------------------------------------------------------------
# 1. Post-training int8 quantization
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
# 2. Unstructured magnitude pruning
# --------------------------------------------------------------------------------------------

def _check_sparsity(sparsity: float, arg: str = "sparsity") -> None:
    if not isinstance(sparsity, int | float) or not 0 <= sparsity < 1:
        raise EdgeWeaveError(f"{arg} must be in [0, 1), got {sparsity!r}")


def magnitude_prune(model: nn.Module, sparsity: float, layers: Sequence[str] | None = None,
                    x: torch.Tensor | None = None, y: torch.Tensor | None = None,
                    epochs: int = 0, lr: float = 1e-3, seed: int = 0,
                    name: str | None = None) -> Variant:
    """Zero the ``sparsity`` fraction of smallest-|w| weights across ``layers`` (default: every
    Conv2d and Linear) with global L1 unstructured pruning; with ``x, y`` and ``epochs`` the
    survivors are fine-tuned while the mask stays in force, then the mask is made permanent."""
    _check_sparsity(sparsity)
    m = copy.deepcopy(model)
    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    if layers is None:
        targets = [(mod, "weight") for mod in m.modules() if isinstance(mod, kinds)]
        layers = [n for n, mod in m.named_modules() if isinstance(mod, kinds)]
    else:
        targets = [(_resolve(m, n, kinds, "conv/linear"), "weight") for n in layers]
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
# 3. Structured filter pruning
# --------------------------------------------------------------------------------------------

def _slice_conv(conv: nn.Conv2d, out_keep: torch.Tensor | None, in_keep: torch.Tensor | None
                ) -> nn.Conv2d:
    if conv.groups != 1:
        raise EdgeWeaveError("filter pruning supports ungrouped convs only (groups == 1)")
    w = conv.weight.detach()
    if out_keep is not None:
        w = w[out_keep]
    if in_keep is not None:
        w = w[:, in_keep]
    new = nn.Conv2d(w.shape[1], w.shape[0], conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, 1, conv.bias is not None, conv.padding_mode)
    new.weight.data.copy_(w)
    if conv.bias is not None:
        b = conv.bias.detach()
        new.bias.data.copy_(b[out_keep] if out_keep is not None else b)
    return new


def _slice_bn(bn: nn.BatchNorm2d, keep: torch.Tensor) -> nn.BatchNorm2d:
    new = nn.BatchNorm2d(len(keep), bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    if bn.affine:
        new.weight.data.copy_(bn.weight.detach()[keep])
        new.bias.data.copy_(bn.bias.detach()[keep])
    if bn.track_running_stats:
        new.running_mean.copy_(bn.running_mean[keep])
        new.running_var.copy_(bn.running_var[keep])
    return new


def _prune_filters_at(seq: nn.Sequential, idx: int, amount: float) -> tuple[int, int]:
    """Remove the lowest-L1 ``amount`` of conv ``seq[idx]``'s filters and the matching inputs of
    the layer that consumes them; returns (filters before, after)."""
    conv = seq[idx]
    n_out = conv.out_channels
    n_keep = max(1, round(n_out * (1 - amount)))
    norms = conv.weight.detach().abs().flatten(1).sum(1)
    keep = torch.sort(torch.topk(norms, n_keep).indices).values
    flattened = False
    for j in range(idx + 1, len(seq)):
        nxt = seq[j]
        if isinstance(nxt, nn.BatchNorm2d) and not flattened:
            seq[j] = _slice_bn(nxt, keep)
        elif isinstance(nxt, _PASS_THROUGH):
            continue
        elif isinstance(nxt, nn.Flatten) and not flattened:
            if nxt.start_dim != 1:
                raise EdgeWeaveError(f"layer {j} flattens from dim {nxt.start_dim}; need 1")
            flattened = True
        elif isinstance(nxt, nn.Conv2d) and not flattened:
            seq[j] = _slice_conv(nxt, None, keep)
            break
        elif isinstance(nxt, nn.Linear) and flattened:
            if nxt.in_features % n_out:
                raise EdgeWeaveError(f"linear layer {j} has {nxt.in_features} inputs, not a "
                                     f"multiple of conv {idx}'s {n_out} channels")
            per = nxt.in_features // n_out
            cols = (keep[:, None] * per + torch.arange(per)[None, :]).flatten()
            new = nn.Linear(len(cols), nxt.out_features, nxt.bias is not None)
            new.weight.data.copy_(nxt.weight.detach()[:, cols])
            if nxt.bias is not None:
                new.bias.data.copy_(nxt.bias.detach())
            seq[j] = new
            break
        else:
            raise EdgeWeaveError(f"cannot filter-prune layer {idx}: its output flows into "
                                 f"{type(nxt).__name__} (layer {j}), which is not supported")
    else:
        raise EdgeWeaveError(f"layer {idx} is the last conv of the model; pruning its filters "
                             "would change the model's output")
    seq[idx] = _slice_conv(conv, keep, None)
    return n_out, n_keep


def filter_prune(model: nn.Module, amount: float, layers: Sequence[str] | None = None,
                 input_shape: Sequence[int] | None = None,
                 x: torch.Tensor | None = None, y: torch.Tensor | None = None,
                 epochs: int = 0, lr: float = 1e-3, seed: int = 0,
                 name: str | None = None) -> Variant:
    """Structured pruning of an ``nn.Sequential``: remove the ``amount`` fraction of
    lowest-L1-norm output filters of each conv in ``layers`` (default: every conv whose output
    feeds a later conv or Linear) and the matching input channels / features of the consumer
    (through activations, pooling, BatchNorm and Flatten), so the model really gets smaller and
    cheaper; fine-tuned on ``x, y`` for ``epochs``. The recipe records FLOPs before and after
    when ``input_shape`` is given."""
    _check_sparsity(amount, "amount")
    if not isinstance(model, nn.Sequential):
        raise EdgeWeaveError(f"filter pruning needs an nn.Sequential model, "
                             f"got {type(model).__name__}")
    m = copy.deepcopy(model)
    convs = [str(i) for i, mod in enumerate(m) if isinstance(mod, nn.Conv2d)]
    if layers is None:
        later = {i for i, mod in enumerate(m) if isinstance(mod, nn.Conv2d | nn.Linear)}
        layers = [c for c in convs if any(j > int(c) for j in later)]
    filters = {}
    for layer in layers:
        _resolve(m, str(layer), (nn.Conv2d,), "Conv2d")
        if str(layer) not in convs:
            raise EdgeWeaveError(f"layer {layer!r} must be a top-level conv of the Sequential")
        filters[str(layer)] = _prune_filters_at(m, int(layer), amount)
    recipe: dict[str, Any] = {"method": "filter_prune", "amount": amount,
                              "filters": {k: list(v) for k, v in filters.items()},
                              "fine_tune_epochs": epochs}
    if input_shape is not None:
        recipe["flops_before"] = count_flops(model, input_shape)
        recipe["flops_after"] = count_flops(m, input_shape)
    if epochs > 0:
        if x is None or y is None:
            raise EdgeWeaveError("fine-tuning (epochs > 0) needs x and y")
        fit(m, x, y, epochs=epochs, lr=lr, seed=seed)
    return Variant.of(name or f"filters-{round(amount * 100)}%", m.eval(), recipe)


# --------------------------------------------------------------------------------------------
# 4. Low-rank SVD of Linear layers
# --------------------------------------------------------------------------------------------

def svd_linear(linear: nn.Linear, rank: int) -> nn.Sequential:
    """``W ~= U_r S_r V_r^T`` as Linear(in, r, no bias) then Linear(r, out, bias)."""
    if not isinstance(rank, int) or rank < 1:
        raise EdgeWeaveError(f"rank must be an integer >= 1, got {rank!r}")
    w = linear.weight.detach()
    rank = min(rank, min(w.shape))
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    root = s[:rank].sqrt()
    first = nn.Linear(linear.in_features, rank, bias=False)
    second = nn.Linear(rank, linear.out_features, bias=linear.bias is not None)
    first.weight.data.copy_(root[:, None] * vh[:rank])
    second.weight.data.copy_(u[:, :rank] * root[None, :])
    if linear.bias is not None:
        second.bias.data.copy_(linear.bias.detach())
    return nn.Sequential(first, second)


def low_rank(model: nn.Module, rank: int | dict[str, int], layers: Sequence[str] | None = None,
             x: torch.Tensor | None = None, y: torch.Tensor | None = None, epochs: int = 0,
             lr: float = 1e-3, seed: int = 0, name: str | None = None) -> Variant:
    """Factor Linear layers by truncated SVD. ``rank`` is one rank for every layer in ``layers``
    (default: every Linear where the factorization is smaller than the original) or a
    {layer: rank} dict. Optionally fine-tuned on ``x, y``."""
    m = copy.deepcopy(model)
    if isinstance(rank, dict):
        ranks = dict(rank)
    else:
        if not isinstance(rank, int) or rank < 1:
            raise EdgeWeaveError(f"rank must be an integer >= 1, got {rank!r}")
        if layers is None:
            layers = [n for n, mod in m.named_modules() if isinstance(mod, nn.Linear)
                      and rank * (mod.in_features + mod.out_features)
                      < mod.in_features * mod.out_features]
        ranks = dict.fromkeys(layers, rank)
    if not ranks:
        raise EdgeWeaveError(f"no Linear layer would get smaller at rank {rank}")
    for layer, r in ranks.items():
        _replace(m, layer, svd_linear(_resolve(m, layer, (nn.Linear,), "Linear"), r))
    if epochs > 0:
        if x is None or y is None:
            raise EdgeWeaveError("fine-tuning (epochs > 0) needs x and y")
        fit(m, x, y, epochs=epochs, lr=lr, seed=seed)
    return Variant.of(name or f"svd-r{rank if isinstance(rank, int) else 'mixed'}", m.eval(),
                      {"method": "low_rank_svd", "ranks": ranks, "fine_tune_epochs": epochs})


# --------------------------------------------------------------------------------------------
# 5. Knowledge distillation
# --------------------------------------------------------------------------------------------

def narrow(model: nn.Sequential, width: float) -> nn.Sequential:
    """A freshly initialized copy of a Sequential conv/linear net with every hidden width
    (conv channels, Linear features except the output layer) scaled by ``width``."""
    if not isinstance(model, nn.Sequential):
        raise EdgeWeaveError(f"narrow needs an nn.Sequential model, got {type(model).__name__}")
    if not 0 < width <= 1:
        raise EdgeWeaveError(f"width must be in (0, 1], got {width!r}")
    layers = list(model)
    last_linear = max((i for i, mod in enumerate(layers) if isinstance(mod, nn.Linear)),
                      default=-1)
    out: list[nn.Module] = []
    channels: int | None = None  # current channel / feature count of the new net
    old_channels: int | None = None
    for i, mod in enumerate(layers):
        if isinstance(mod, nn.Conv2d):
            if mod.groups != 1:
                raise EdgeWeaveError("narrow supports ungrouped convs only")
            c_in = channels if channels is not None else mod.in_channels
            c_out = max(1, round(mod.out_channels * width))
            out.append(nn.Conv2d(c_in, c_out, mod.kernel_size, mod.stride, mod.padding,
                                 mod.dilation, 1, mod.bias is not None, mod.padding_mode))
            channels, old_channels = c_out, mod.out_channels
        elif isinstance(mod, nn.BatchNorm2d):
            out.append(nn.BatchNorm2d(channels or mod.num_features))
        elif isinstance(mod, nn.Linear):
            f_in = mod.in_features
            if channels is not None and old_channels:
                f_in = channels * (mod.in_features // old_channels)
            f_out = mod.out_features if i == last_linear else max(1, round(mod.out_features
                                                                           * width))
            out.append(nn.Linear(f_in, f_out, mod.bias is not None))
            channels, old_channels = f_out, mod.out_features
        else:
            out.append(copy.deepcopy(mod))
    return nn.Sequential(*out)


def distillation_loss(teacher: nn.Module, temperature: float = 4.0, alpha: float = 0.7
                      ) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """Hinton et al.: ``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1-alpha) * CE``,
    as a ``loss_fn(student, x, y)`` for :func:`edgeweave.adapt.fit.fit`."""
    if temperature <= 0:
        raise EdgeWeaveError(f"temperature must be > 0, got {temperature!r}")
    if not 0 <= alpha <= 1:
        raise EdgeWeaveError(f"alpha must be in [0, 1], got {alpha!r}")
    teacher.eval()
    f = nn.functional

    def loss(student: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            soft = f.log_softmax(teacher(xb) / temperature, dim=1)
        logits = student(xb)
        kl = f.kl_div(f.log_softmax(logits / temperature, dim=1), soft, reduction="batchmean",
                      log_target=True)
        return alpha * temperature**2 * kl + (1 - alpha) * f.cross_entropy(logits, yb)

    return loss


def distill(teacher: nn.Module, x: torch.Tensor, y: torch.Tensor,
            student: nn.Module | None = None, width: float = 0.5, temperature: float = 4.0,
            alpha: float = 0.7, epochs: int = 30, lr: float = 3e-3, seed: int = 0,
            name: str | None = None) -> Variant:
    """Train ``student`` (default: :func:`narrow` of the teacher at ``width``) on the teacher's
    softened outputs plus the labels."""
    torch.manual_seed(seed)
    given = student is not None
    student = copy.deepcopy(student) if given else narrow(teacher, width)
    fit(student, x, y, epochs=epochs, lr=lr, seed=seed,
        loss_fn=distillation_loss(teacher, temperature, alpha))
    return Variant.of(name or f"distilled-w{width}", student.eval(),
                      {"method": "distill", "width": None if given else width,
                       "temperature": temperature, "alpha": alpha, "epochs": epochs})


# --------------------------------------------------------------------------------------------
# 6. Combinations
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
    _check_sparsity(sparsity)
    return combine(
        model,
        lambda m: magnitude_prune(m, sparsity, x=x, y=y, epochs=epochs, lr=lr, seed=seed),
        quantize_dynamic,
    )
