"""Model specifiers: the one string a user types (CLI, config) to name a model.

A specifier is a built-in name (torchvision architectures, randomly initialised because
EdgeWeave never downloads weights, and the small ``digits-cnn``) or ``path/to/file.py:factory``
for the user's own model. Trained weights come separately as a state-dict file, so a
specifier stays the same whether or not the model has been trained.

A built-in whose weights are all about to be replaced (a weights file, or a node that keeps
only the structure) is built on the meta device (:func:`model_skeleton`): torchvision's random
initialisation is most of a build (about 2.7 s of vgg16's on one core) and would be thrown away.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeweave.errors import ModelError, first_line
from edgeweave.graph.digits import DigitsCNN

#: Default input of the torchvision image classifiers.
IMAGENET_INPUT_SHAPE: tuple[int, ...] = (1, 3, 224, 224)


@dataclass(frozen=True)
class ModelSpec:
    """A resolved specifier: the model (in eval mode) and the input shape it is profiled at."""

    name: str
    module: nn.Module
    input_shape: tuple[int, ...]


@dataclass(frozen=True)
class _Builtin:
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    description: str


def _torchvision(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision.models  # deferred: importing torchvision costs about a second

        return getattr(torchvision.models, name)(weights=None, **kwargs)

    return build


_BUILTINS: dict[str, _Builtin] = {
    "alexnet": _Builtin(_torchvision("alexnet"), IMAGENET_INPUT_SHAPE, "AlexNet (torchvision)"),
    "vgg16": _Builtin(_torchvision("vgg16"), IMAGENET_INPUT_SHAPE, "VGG-16 (torchvision)"),
    "resnet18": _Builtin(_torchvision("resnet18"), IMAGENET_INPUT_SHAPE, "ResNet-18 (torchvision)"),
    "resnet50": _Builtin(_torchvision("resnet50"), IMAGENET_INPUT_SHAPE, "ResNet-50 (torchvision)"),
    "mobilenet_v2": _Builtin(
        _torchvision("mobilenet_v2"), IMAGENET_INPUT_SHAPE, "MobileNetV2 (torchvision)"
    ),
    "squeezenet1_0": _Builtin(
        _torchvision("squeezenet1_0"), IMAGENET_INPUT_SHAPE, "SqueezeNet 1.0 (torchvision)"
    ),
    "shufflenet_v2_x1_0": _Builtin(
        _torchvision("shufflenet_v2_x1_0"),
        IMAGENET_INPUT_SHAPE,
        "ShuffleNetV2 x1.0 (torchvision)",
    ),
    # No auxiliary heads: they only exist in training and would change the output type.
    # init_weights=False skips the slow truncated-normal init; weights are random either way.
    "googlenet": _Builtin(
        _torchvision("googlenet", aux_logits=False, init_weights=False),
        IMAGENET_INPUT_SHAPE,
        "GoogLeNet / Inception v1 without auxiliary heads (torchvision)",
    ),
    "digits-cnn": _Builtin(
        DigitsCNN,
        DigitsCNN.input_shape,
        "small CNN for sklearn's 8x8 grayscale digits (built in)",
    ),
}


def list_models() -> list[tuple[str, str]]:
    """``(name, description)`` of every built-in specifier, the description ending with the
    default input shape."""
    return [
        (name, f"{entry.description}, input {_shape_text(entry.input_shape)}")
        for name, entry in _BUILTINS.items()
    ]


def load_model(spec: str, weights: str | None = None) -> ModelSpec:
    """Resolve a specifier to a model in eval mode, optionally loading a state-dict file.

    ``spec`` is a built-in name (see :func:`list_models`) or ``path/to/file.py:factory``, where
    ``factory()`` returns a module (with an ``input_shape`` attribute) or a
    ``(module, input_shape)`` tuple.
    """
    loaded = (model_skeleton(spec) if weights is not None else None) or model_factory(spec)()
    if weights is not None:
        load_weights(loaded.module, weights)
    loaded.module.eval()
    return loaded


def model_skeleton(spec: str) -> ModelSpec | None:
    """A built-in model with every parameter and buffer on the meta device (names, dtypes and
    shapes, no memory, no random initialisation), for a caller that replaces all of them; None
    for a model file (its code may need real tensors to build) and for a model with tensors a
    state dict does not carry (non-persistent buffers), which the caller then builds for real.
    """
    name = spec.strip().lower()
    if name not in _BUILTINS or names_a_file(spec):
        return None
    entry = _BUILTINS[name]
    with torch.device("meta"):
        module = entry.build().eval()
    named = _named_tensors(module)
    if set(module.state_dict()) != {n for n, _ in named} or len({id(t) for _, t in named}) \
            != len(named):  # tied weights: assigning would untie them
        return None
    return ModelSpec(name, module, entry.input_shape)


def model_factory(spec: str) -> Callable[[], ModelSpec]:
    """Resolve a specifier once (importing its file, if it names one) into a function that builds
    a fresh, randomly initialised model each call: node servers build a model per input shape
    they capture it at, from the file their operator named when starting them."""
    text = spec.strip()
    path_part, sep, factory_name = text.rpartition(":")
    if sep and path_part.endswith(".py"):
        return _file_factory(Path(path_part), factory_name, text)
    if text.endswith(".py"):
        raise ModelError(
            f"model specifier {spec!r} names a Python file but no factory; "
            f"expected '{text}:factory' where factory() returns the model"
        )
    if text.lower() in _BUILTINS:
        name = text.lower()
        entry = _BUILTINS[name]
        return lambda: ModelSpec(name, entry.build().eval(), entry.input_shape)
    known = ", ".join(_BUILTINS)
    raise ModelError(
        f"unknown model {spec!r}; known models: {known}; "
        "or give your own as 'path/to/file.py:factory'"
    )


def names_a_file(spec: str) -> bool:
    """True when ``spec`` looks like a path (``path/to/file.py:factory`` or any path), the form a
    node server must never resolve for a peer: only its operator installs model files."""
    text = spec.strip()
    return "/" in text or "\\" in text or ".py" in text or text.startswith(("~", "."))


def load_weights(module: nn.Module, weights: str | Path) -> None:
    """Load a state-dict file into ``module`` strictly; every failure is a :class:`ModelError`
    naming the file. A module built on the meta device (:func:`model_skeleton`) takes the file's
    tensors in place of its meta ones (cast to the module's dtypes, as copying would), and must
    end with none left on the meta device."""
    path = Path(weights)
    if not path.is_file():
        what = "is a directory, expected a file" if path.is_dir() else "does not exist"
        raise ModelError(f"weights file {str(path)!r} {what}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(
            f"weights file {str(path)!r} could not be read as a torch state dict: "
            f"{first_line(exc)}"
        ) from exc
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        found = (
            f"a dict with keys {_few(list(state))}"
            if isinstance(state, Mapping)
            else type(state).__name__
        )
        raise ModelError(
            f"weights file {str(path)!r} holds {found}; expected a state dict mapping parameter "
            "names to tensors, as saved by torch.save(model.state_dict(), path)"
        )
    expected = set(module.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_few(unexpected)}")
        raise ModelError(f"weights file {str(path)!r} does not match the model: {'; '.join(parts)}")
    on_meta = any(t.is_meta for _, t in _named_tensors(module))
    try:
        if on_meta:
            module.load_state_dict(_assignable(module, state), strict=True, assign=True)
        else:
            module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(line.strip() for line in str(exc).splitlines()[1:3])
        raise ModelError(
            f"weights file {str(path)!r} does not match the model: {detail or first_line(exc)}"
        ) from exc
    left = [name for name, t in _named_tensors(module) if t.is_meta]
    if left:
        raise ModelError(f"weights file {str(path)!r} leaves the model without values for "
                         f"{_few(left)}; expected every parameter and buffer of the model")


def _named_tensors(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [*module.named_parameters(remove_duplicate=False),
            *module.named_buffers(remove_duplicate=False)]


def _assignable(module: nn.Module, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` as a meta-built ``module`` must take it by assignment: each tensor in the
    module's dtype and with memory of its own (a file may store two entries as views of one
    storage; copying into a real module would have separated them)."""
    own = dict(module.state_dict(keep_vars=True))
    seen: set[int] = set()
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        target = own[key]
        tensor = value.detach()
        if tensor.dtype != target.dtype:
            tensor = tensor.to(target.dtype)
        elif tensor.untyped_storage().data_ptr() in seen:
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        out[key] = tensor
    return out


def _file_factory(path: Path, factory_name: str, spec: str) -> Callable[[], ModelSpec]:
    if not factory_name.isidentifier():
        raise ModelError(
            f"model specifier {spec!r} has factory {factory_name!r}; expected a Python name "
            "as in 'path/to/file.py:factory'"
        )
    if not path.is_file():
        what = "is a directory, expected a file" if path.is_dir() else "does not exist"
        raise ModelError(f"model file {str(path)!r} (from specifier {spec!r}) {what}")
    source = _import_file(path)
    factory = getattr(source, factory_name, None)
    if not callable(factory):
        available = sorted(
            n for n, v in vars(source).items() if callable(v) and not n.startswith("_")
        )
        raise ModelError(
            f"model file {str(path)!r} has no callable {factory_name!r}; "
            f"callables found: {', '.join(available) or 'none'}"
        )
    return lambda: _call_factory(factory, path, factory_name, spec)


def _call_factory(factory: Callable[[], Any], path: Path, factory_name: str, spec: str
                  ) -> ModelSpec:
    try:
        made = factory()
    except Exception as exc:
        raise ModelError(
            f"factory {factory_name!r} in {str(path)!r} raised {type(exc).__name__}: "
            f"{first_line(exc)}"
        ) from exc
    module, shape = made if isinstance(made, tuple) and len(made) == 2 else (made, None)
    if not isinstance(module, nn.Module):
        raise ModelError(
            f"factory {factory_name!r} in {str(path)!r} returned {type(made).__name__}; "
            "expected an nn.Module or a (module, input_shape) tuple"
        )
    if shape is None:
        shape = getattr(module, "input_shape", None)
        if shape is None:
            raise ModelError(
                f"factory {factory_name!r} in {str(path)!r} gave no input shape; return "
                "(module, input_shape) such as (model, (1, 3, 224, 224)) or set "
                "model.input_shape"
            )
    module.eval()
    return ModelSpec(f"{path.stem}:{factory_name}", module, _check_shape(shape, spec))


def _import_file(path: Path) -> Any:
    """Import a file by path under a unique module name, so two files with the same stem (and
    pickling of classes defined in them) do not collide."""
    resolved = path.resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:12]
    module_name = f"edgeweave_user_model_{resolved.stem}_{digest}"
    import_spec = importlib.util.spec_from_file_location(module_name, resolved)
    if import_spec is None or import_spec.loader is None:
        raise ModelError(f"model file {str(path)!r} cannot be imported as a Python module")
    source = importlib.util.module_from_spec(import_spec)
    sys.modules[module_name] = source
    try:
        import_spec.loader.exec_module(source)
    except Exception as exc:
        del sys.modules[module_name]
        raise ModelError(
            f"importing model file {str(path)!r} failed: {type(exc).__name__}: {first_line(exc)}"
        ) from exc
    return source


def _check_shape(shape: Any, spec: str) -> tuple[int, ...]:
    try:
        dims = tuple(shape)
    except TypeError:
        dims = ()
    if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        raise ModelError(
            f"model {spec!r} has input shape {shape!r}; expected a tuple of positive ints "
            "such as (1, 3, 224, 224)"
        )
    return dims


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def _few(items: list[Any], limit: int = 5) -> str:
    shown = ", ".join(repr(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")

