"""The cost rules for one graph node, kept in one place so planners and tests agree on them.

The planner only needs costs that rank placements correctly and that a regression model can
learn from, so the rules are analytic estimates, not a hardware count. One multiply-add counts
as 2 FLOPs. The rules, by canonical op name (see :func:`module_op_name`):

* ``conv1d/2d/3d``: ``2 * out_numel * (in_channels / groups * prod(kernel))``, plus ``out_numel``
  when there is a bias. Transposed convolutions use the input side:
  ``2 * in_numel * (out_channels / groups * prod(kernel))`` (+ ``out_numel`` for the bias).
* ``linear``: ``2 * batch * in_features * out_features`` (+ ``batch * out_features`` for a bias),
  where ``batch`` is every output dimension but the last.
* ``matmul``/``mm``/``bmm``: ``2 * M * N * K`` (``2 * out_numel * K``); ``addmm``/``baddbmm``
  add ``out_numel`` for the addition.
* ``batch_norm`` (eval mode, a fused scale and shift): ``2 * numel``; other norms (layer, group,
  instance, local response), which compute statistics at run time: ``5 * numel``.
* pooling with a window: ``out_numel * kernel area``; adaptive pooling: ``in_numel``.
* reductions (``mean``, ``sum``, ...): ``in_numel``; ``softmax``/``log_softmax``: ``5 * in_numel``.
* pure data movement (``view``, ``reshape``, ``flatten``, ``size``, ``getitem``, ``contiguous``,
  ``transpose``, ``permute``, ``chunk``, ``cat``, ``dropout`` and ``identity`` in eval mode, ...):
  ``0``.
* everything else (activations, ``add``, ``mul``, unknown ops): ``numel`` of the tensor output,
  i.e. one FLOP per produced element; ``0`` when the output is not a tensor (``size`` arithmetic).

Bytes: a tensor counts ``numel * element_size``; tuples and lists sum their elements; a Python
int, float or bool counts 8 bytes; a ``torch.Size`` counts 8 bytes per dimension; ``None`` and
anything else counts 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

#: Canonical names for module classes whose snake_case name would not match the functional op.
_MODULE_OP_NAMES: dict[type[nn.Module], str] = {
    nn.BatchNorm1d: "batch_norm",
    nn.BatchNorm2d: "batch_norm",
    nn.BatchNorm3d: "batch_norm",
    nn.SyncBatchNorm: "batch_norm",
}

#: Class names built on acronyms, which snake_case would mangle (``ReLU`` -> ``re_lu``).
_ACRONYM_OP_NAMES: dict[str, str] = {
    "ReLU": "relu",
    "ReLU6": "relu6",
    "LeakyReLU": "leaky_relu",
    "PReLU": "prelu",
    "RReLU": "rrelu",
    "GELU": "gelu",
    "SiLU": "silu",
    "ELU": "elu",
    "SELU": "selu",
    "CELU": "celu",
    "GLU": "glu",
}

_ZERO_COST_OPS = frozenset(
    {
        "placeholder",
        "view",
        "view_as",
        "reshape",
        "flatten",
        "unflatten",
        "size",
        "dim",
        "getitem",
        "getattr",
        "contiguous",
        "transpose",
        "permute",
        "t",
        "chunk",
        "split",
        "unbind",
        "cat",
        "concat",
        "stack",
        "squeeze",
        "unsqueeze",
        "expand",
        "expand_as",
        "narrow",
        "select",
        "dropout",
        "dropout1d",
        "dropout2d",
        "dropout3d",
        "alpha_dropout",
        "feature_alpha_dropout",
        "identity",
        "clone",
        "detach",
        "to",
        "type",
        "type_as",
        "float",
        "embedding",
    }
)
_ADAPTIVE_POOL_OPS = frozenset(
    {
        "adaptive_avg_pool1d",
        "adaptive_avg_pool2d",
        "adaptive_avg_pool3d",
        "adaptive_max_pool1d",
        "adaptive_max_pool2d",
        "adaptive_max_pool3d",
    }
)
_WINDOW_POOL_OPS = frozenset(
    {
        "max_pool1d",
        "max_pool2d",
        "max_pool3d",
        "avg_pool1d",
        "avg_pool2d",
        "avg_pool3d",
    }
)
_REDUCTION_OPS = frozenset({"mean", "sum", "amax", "amin", "max", "min", "std", "var", "norm"})
_SOFTMAX_OPS = frozenset({"softmax", "log_softmax", "softmin"})
_NORM_OPS = frozenset({"layer_norm", "group_norm", "instance_norm", "local_response_norm"})
_MATMUL_OPS = frozenset({"matmul", "mm", "bmm", "addmm", "baddbmm"})


def module_op_name(module: nn.Module) -> str:
    """The functional name of a module's op (``Conv2d`` -> ``conv2d``), so traced module calls
    and functional calls of the same op share one name in profiles and regressions."""
    for cls, name in _MODULE_OP_NAMES.items():
        if isinstance(module, cls):
            return name
    class_name = type(module).__name__
    return _ACRONYM_OP_NAMES.get(class_name) or snake_case(class_name)


def snake_case(name: str) -> str:
    """``AdaptiveAvgPool2d`` -> ``adaptive_avg_pool2d``; ``ReLU6`` -> ``relu6``."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    name = re.sub(r"([a-z])([A-Z])", r"\1_\2", name)
    return name.lower()


def value_bytes(value: Any) -> int:
    """Bytes a value occupies when shipped between tiers (see the module docstring)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, torch.Size):
        return 8 * len(value)
    if isinstance(value, (tuple, list)):
        return sum(value_bytes(v) for v in value)
    if isinstance(value, Mapping):
        return sum(value_bytes(v) for v in value.values())
    if isinstance(value, (bool, int, float)):
        return 8
    return 0


def module_param_bytes(module: nn.Module) -> int:
    """Bytes of the parameters and buffers a module owns (recursively): what a tier must hold."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def module_attrs(module: nn.Module) -> dict[str, Any]:
    """The hyper-parameters a latency regression keys on, as plain JSON-ready values."""
    keys = (
        "kernel_size",
        "stride",
        "padding",
        "dilation",
        "in_channels",
        "out_channels",
        "groups",
        "in_features",
        "out_features",
        "num_features",
        "output_size",
    )
    attrs: dict[str, Any] = {}
    for key in keys:
        if hasattr(module, key):
            plain = _plain(getattr(module, key))
            if plain is not None:
                attrs[key] = plain
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
        attrs["bias"] = module.bias is not None
    return attrs


def _plain(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        items = [_plain(v) for v in value]
        return items if all(i is not None for i in items) else None
    return None


def module_flops(module: nn.Module, inputs: Sequence[Any], output: Any) -> int:
    """FLOPs of one call of a leaf module (rules in the module docstring)."""
    x = _first_tensor(inputs)
    out_numel = _numel(output)
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        per_in = module.out_channels // module.groups * math.prod(module.kernel_size)
        flops = 2 * _numel(x) * per_in
        return flops + (out_numel if module.bias is not None else 0)
    if isinstance(module, nn.modules.conv._ConvNd):
        per_out = module.in_channels // module.groups * math.prod(module.kernel_size)
        return 2 * out_numel * per_out + (out_numel if module.bias is not None else 0)
    if isinstance(module, nn.Linear):
        batch = out_numel // max(module.out_features, 1)
        flops = 2 * batch * module.in_features * module.out_features
        return flops + (batch * module.out_features if module.bias is not None else 0)
    name = module_op_name(module)
    if name in _WINDOW_POOL_OPS:
        return out_numel * _kernel_area(module.kernel_size, _dims(name))  # type: ignore[arg-type]
    return _named_flops(name, inputs, output)


def function_flops(name: str, args: Sequence[Any], kwargs: Mapping[str, Any], output: Any) -> int:
    """FLOPs of one ``call_function``/``call_method`` node, given its evaluated arguments."""
    if name.endswith("_") and not name.endswith("__"):
        name = name[:-1]  # in-place variants (relu_, add_) cost what the out-of-place op does
    if name.startswith("conv") and name[4:] in {"1d", "2d", "3d"}:
        weight = args[1] if len(args) > 1 else kwargs.get("weight")
        bias = args[2] if len(args) > 2 else kwargs.get("bias")
        if isinstance(weight, torch.Tensor):
            out_numel = _numel(output)
            flops = 2 * out_numel * math.prod(weight.shape[1:])
            return flops + (out_numel if bias is not None else 0)
    if name == "linear":
        weight = args[1] if len(args) > 1 else kwargs.get("weight")
        bias = args[2] if len(args) > 2 else kwargs.get("bias")
        if isinstance(weight, torch.Tensor):
            out_numel = _numel(output)
            flops = 2 * out_numel * weight.shape[-1]
            return flops + (out_numel if bias is not None else 0)
    if name in _MATMUL_OPS:
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        lhs = tensors[-2] if len(tensors) >= 2 else None
        if lhs is not None and lhs.dim() >= 1:
            flops = 2 * _numel(output) * lhs.shape[-1]
            return flops + (_numel(output) if name in {"addmm", "baddbmm"} else 0)
    if name in _WINDOW_POOL_OPS:
        kernel = args[1] if len(args) > 1 else kwargs.get("kernel_size")
        if kernel is not None:
            return _numel(output) * _kernel_area(kernel, _dims(name))
    return _named_flops(name, args, output)


def _named_flops(name: str, inputs: Sequence[Any], output: Any) -> int:
    if name in _ZERO_COST_OPS:
        return 0
    if name in _ADAPTIVE_POOL_OPS or name in _REDUCTION_OPS:
        return _numel(_first_tensor(inputs))
    if name in _SOFTMAX_OPS:
        return 5 * _numel(_first_tensor(inputs))
    if name == "batch_norm":
        return 2 * _numel(output)
    if name in _NORM_OPS:
        return 5 * _numel(output)
    return _numel(output)


def _first_tensor(values: Sequence[Any]) -> torch.Tensor | None:
    for value in values:
        if isinstance(value, torch.Tensor):
            return value
    return None


def _numel(value: Any) -> int:
    return value.numel() if isinstance(value, torch.Tensor) else 0


def _dims(op_name: str) -> int:
    return int(op_name[-2])


def _kernel_area(kernel: int | Sequence[int], dims: int) -> int:
    if isinstance(kernel, int):
        return kernel**dims
    return math.prod(kernel)
