"""Codec interface, the encoded form of a tensor, and the codec registry.

A codec turns a tensor into an :class:`Encoded` (payload bytes plus small metadata) and back.
Codecs are stateless and safe to share between threads. Names compose with ``+``: the part after
the last ``+`` must be a byte compressor (``"zstd"``, ``"lz4"``) that wraps the codec named before
it, so ``get_codec("int8+zstd")`` quantizes to uint8 and then zstd-compresses the payload.

Parametrised codecs (update compressors such as ``"topk:0.01"`` or ``"qsgd:127"``) are families:
``register_family("topk", factory)`` makes ``get_codec("topk:ARGS")`` build ``factory("ARGS")``
(and ``get_codec("topk")`` build ``factory("")``, the family's defaults) on first use. Family
members are cached like compositions and are not listed by :func:`list_codecs`.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from edgeweave.errors import EdgeWeaveError


class CodecError(EdgeWeaveError):
    """A tensor cannot be encoded, or an encoded tensor is malformed, corrupt or unknown."""


@dataclass(frozen=True)
class Encoded:
    """One encoded tensor, ready to put on the wire.

    ``payload`` is the only part whose size grows with the tensor; ``codec``, ``dtype``, ``shape``
    and ``params`` are metadata of a few dozen bytes, sent alongside (e.g. as message fields).
    ``dtype`` and ``shape`` describe the ORIGINAL tensor, which :meth:`Codec.decode` restores.
    """

    codec: str
    dtype: str
    shape: tuple[int, ...]
    payload: bytes
    params: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.codec, str) or not isinstance(self.dtype, str):
            raise CodecError(
                f"encoded: codec and dtype must be strings, got {self.codec!r} and {self.dtype!r}"
            )
        try:
            shape = tuple(int(d) for d in self.shape)
        except (TypeError, ValueError):
            raise CodecError(
                f"{self.codec}: shape {self.shape!r} is not a sequence of ints"
            ) from None
        if not isinstance(self.payload, bytes | bytearray | memoryview):
            raise CodecError(
                f"{self.codec}: payload is a {type(self.payload).__name__}, expected bytes"
            )
        if not isinstance(self.params, Mapping):
            raise CodecError(
                f"{self.codec}: params is a {type(self.params).__name__}, expected a dict"
            )
        try:
            params = {str(k): float(v) for k, v in self.params.items()}
        except (TypeError, ValueError):
            raise CodecError(f"{self.codec}: params {self.params!r} are not all numbers") from None
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "payload", bytes(self.payload))
        object.__setattr__(self, "params", params)

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data that cross the wire (``len(payload)``); metadata not included."""
        return len(self.payload)


class Codec(ABC):
    """Encodes a tensor to :class:`Encoded` and decodes it back to the original dtype and shape.

    ``lossy`` says whether ``decode(encode(t))`` may differ from ``t``. Subclasses set ``name`` and
    ``lossy`` and implement :meth:`encode` and :meth:`decode`.
    """

    name: str
    lossy: bool

    @abstractmethod
    def encode(self, t: torch.Tensor) -> Encoded:
        """Encode a tensor (any device; it is read, never modified)."""

    @abstractmethod
    def decode(self, e: Encoded) -> torch.Tensor:
        """Decode to a new CPU tensor with ``e.dtype`` and ``e.shape``; CodecError if malformed."""

    def max_payload_nbytes(self, dtype: str, shape: tuple[int, ...]) -> int:
        """Upper bound on the payload size this codec produces for a tensor of dtype and shape.

        Wrappers use it to refuse oversized (e.g. decompression bomb) payloads. The default is the
        raw size ``numel * itemsize``; codecs whose payload can be larger must override it.
        """
        from edgeweave.codec.wire import nbytes_for

        return nbytes_for(dtype, shape, context=self.name)

    def _check(self, e: Encoded) -> torch.dtype:
        """Check that ``e`` was made by this codec; return the torch dtype of the original."""
        from edgeweave.codec.wire import check_shape, to_torch_dtype

        if not isinstance(e, Encoded):
            raise CodecError(f"{self.name}: expected an Encoded, got {type(e).__name__}")
        if e.codec != self.name:
            raise CodecError(
                f"{self.name}: Encoded is for codec {e.codec!r}, expected {self.name!r}"
            )
        check_shape(e.shape, context=self.name)
        return to_torch_dtype(e.dtype, context=self.name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} lossy={self.lossy}>"


_LOCK = threading.Lock()
_CODECS: dict[str, Codec] = {}
_WRAPPERS: dict[str, Callable[[Codec], Codec]] = {}
_COMPOSED: dict[str, Codec] = {}
#: composed and family codecs cached at most: names can come from peers (every distinct
#: "topk:0.N" would otherwise stay in memory for good); the oldest entry goes first
_COMPOSED_MAX = 256
_FAMILIES: dict[str, tuple[Callable[[str], Codec], str]] = {}


def register(codec: Codec, *, replace: bool = False) -> Codec:
    """Make ``codec`` available as ``get_codec(codec.name)``; returns it.

    Names must be non-empty and may not contain ``+`` (reserved for composition). Registering a
    taken name raises CodecError unless ``replace=True``.
    """
    if not isinstance(codec, Codec):
        raise CodecError(f"register: expected a Codec instance, got {type(codec).__name__}")
    name = getattr(codec, "name", None)
    if not isinstance(name, str) or not name or "+" in name or name != name.strip():
        raise CodecError(
            f"register: codec name {name!r} is invalid; expected a non-empty name without '+'"
        )
    with _LOCK:
        if name in _CODECS and not replace:
            raise CodecError(f"register: codec {name!r} is already registered")
        _CODECS[name] = codec
        _COMPOSED.clear()
    return codec


def register_wrapper(name: str, wrap: Callable[[Codec], Codec], *, replace: bool = False) -> None:
    """Register a byte-level wrapper (a compressor) usable as the last part of ``"a+name"``.

    ``wrap(inner)`` must return a codec named ``f"{inner.name}+{name}"``.
    """
    if not name or "+" in name:
        raise CodecError(f"register: wrapper name {name!r} is invalid")
    with _LOCK:
        if name in _WRAPPERS and not replace:
            raise CodecError(f"register: wrapper {name!r} is already registered")
        _WRAPPERS[name] = wrap
        _COMPOSED.clear()


def register_family(
    name: str, factory: Callable[[str], Codec], usage: str, *, replace: bool = False
) -> None:
    """Make ``get_codec(f"{name}:{args}")`` return ``factory(args)`` (``factory("")`` for ``name``).

    ``factory`` must return a codec whose ``name`` is the full requested name, and raise
    CodecError for arguments it cannot parse. ``usage`` (e.g. ``"topk:FRACTION"``) is quoted in
    error messages.
    """
    if not name or any(c in name for c in "+:") or name != name.strip():
        raise CodecError(f"register: family name {name!r} is invalid")
    with _LOCK:
        if (name in _FAMILIES or name in _CODECS) and not replace:
            raise CodecError(f"register: codec family {name!r} is already registered")
        _FAMILIES[name] = (factory, usage)
        _COMPOSED.clear()


def list_families() -> list[str]:
    """Usage strings of the parametrised codec families, e.g. ``["qsgd:LEVELS", ...]``."""
    with _LOCK:
        return sorted(usage for _, usage in _FAMILIES.values())


def _from_family(name: str) -> Codec | None:
    """Build a family member for ``name`` (no ``+``), or None if no family claims it."""
    family, _, args = name.partition(":")
    with _LOCK:
        entry = _FAMILIES.get(family)
    if entry is None:
        return None
    codec = entry[0](args)
    if not isinstance(codec, Codec) or codec.name != name:
        raise CodecError(f"codec family {family!r}: factory did not build a codec named {name!r}")
    _remember(name, codec)
    return codec


def _remember(name: str, codec: Codec) -> None:
    with _LOCK:
        while len(_COMPOSED) >= _COMPOSED_MAX:
            del _COMPOSED[next(iter(_COMPOSED))]
        _COMPOSED[name] = codec


def list_codecs() -> list[str]:
    """Sorted names of the registered codecs (compositions such as ``"int8+zstd"`` not listed)."""
    with _LOCK:
        return sorted(_CODECS)


def list_compressors() -> list[str]:
    """Sorted names of the wrappers usable after ``+`` (e.g. ``["lz4", "zstd"]``)."""
    with _LOCK:
        return sorted(_WRAPPERS)


def _unknown(name: str, why: str) -> CodecError:
    families = list_families()
    also = f"; parametrised: {', '.join(families)}" if families else ""
    return CodecError(
        f"codec: {why}; known codecs: {', '.join(list_codecs())}{also}; compose as "
        f"'<codec>+<compressor>' with compressor one of {', '.join(list_compressors())} "
        f"(e.g. 'int8+zstd')"
    )


def get_codec(name: str) -> Codec:
    """The codec called ``name``, building compositions like ``"fp16+zstd"`` on demand."""
    if not isinstance(name, str):
        raise CodecError(f"codec: name must be a string, got {type(name).__name__}")
    with _LOCK:
        codec = _CODECS.get(name) or _COMPOSED.get(name)
        wrap = None
        if codec is None and "+" in name:
            inner_name, _, outer = name.rpartition("+")
            wrap = _WRAPPERS.get(outer)
    if codec is not None:
        return codec
    if "+" not in name:
        codec = _from_family(name)
        if codec is None:
            raise _unknown(name, f"unknown codec {name!r}")
        return codec
    if wrap is None:
        raise _unknown(name, f"in {name!r}, {outer!r} is not a compressor (compressors go last)")
    if not inner_name:
        raise _unknown(name, f"codec name {name!r} has an empty part")
    codec = wrap(get_codec(inner_name))
    _remember(name, codec)
    return codec
