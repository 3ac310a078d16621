"""Shared frame of the parametrised update codecs (qsgd, topk, randk, lowrank, randmask, sketch,
selective): input checks, seeds, and the name/argument convention.

Why a shared frame: every one of them compresses a float update tensor into a payload whose
``len`` is the exact wire size, and the randomised ones (QSGD's stochastic rounding, rand-k's
coordinates, Konecny's masks and rotations) must decode to the same random structure the encoder
used. The randomness therefore comes from one integer seed, carried in ``Encoded.params["seed"]``
(metadata, like int8's scale): :meth:`UpdateCodec.encode` takes ``seed=`` explicitly, and without
one derives it from the tensor's bytes, so encoding is deterministic (the same tensor always gives
the same payload) while different clients' updates still get independent randomness.

Non-float tensors (integer buffers such as BatchNorm's step counter) pass through as raw bytes
(``params["raw"] = 1``); empty tensors give an empty payload. Scalars that a codec must send with
the data (norms, min/max) are float32 in the payload (float64 for float64 tensors) and counted.
"""

from __future__ import annotations

import hashlib
import math
from abc import abstractmethod

import torch

from edgeweave.codec.base import Codec, CodecError, Encoded
from edgeweave.codec.wire import dtype_name, nbytes_for, tensor_from_bytes, tensor_to_bytes

MAX_SEED = 2**48  # exactly representable in the float params


def parse_numbers(family: str, usage: str, args: str, defaults: list[float]) -> list[float]:
    """``"0.1,2"`` -> ``[0.1, 2.0]`` with missing trailing values taken from ``defaults``."""
    parts = [a.strip() for a in args.split(",")] if args else []
    if len(parts) > len(defaults) or any(not p for p in parts):
        raise CodecError(f"codec {family}:{args}: expected {usage}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise CodecError(f"codec {family}:{args}: arguments must be numbers; expected {usage}"
                         ) from None
    if not all(math.isfinite(v) for v in values):
        raise CodecError(f"codec {family}:{args}: arguments must be finite; expected {usage}")
    return values + defaults[len(values):]


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def scalar_dtype(dtype: str) -> str:
    """Payload dtype of a codec's scalars (norms, min/max) for a tensor of ``dtype``."""
    return "float64" if dtype == "float64" else "float32"


def content_seed(x: torch.Tensor) -> int:
    data, dtype, shape = tensor_to_bytes(x)
    h = hashlib.blake2b(data, digest_size=6, person=b"edgeweave-seed")
    h.update(f"{dtype}{shape}".encode())
    return int.from_bytes(h.digest(), "little") % MAX_SEED


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def take_k(fraction: float, n: int) -> int:
    """Coordinates kept at ``fraction`` of ``n``: ceil(fraction * n), at least 1 (n > 0)."""
    return 0 if n == 0 else min(n, max(1, math.ceil(fraction * n - 1e-9)))


class UpdateCodec(Codec):
    """Base of the update codecs: subclasses implement :meth:`_encode` and :meth:`_decode` on a
    flat, finite float tensor (float32, or float64 for float64 inputs)."""

    lossy = True
    randomized = False  # True if the payload depends on the seed

    @abstractmethod
    def _encode(self, x: torch.Tensor, dtype: str, shape: tuple[int, ...],
                seed: int) -> tuple[bytes, dict[str, float]]:
        """Payload and params for the flat tensor ``x`` (the original has ``dtype``, ``shape``)."""

    @abstractmethod
    def _decode(self, e: Encoded, n: int, work: torch.dtype) -> torch.Tensor:
        """The flat decoded tensor of ``n`` elements (any float dtype)."""

    def encode(self, t: torch.Tensor, *, seed: int | None = None) -> Encoded:
        """Encode ``t``; ``seed`` fixes the randomness (derived from the content if None)."""
        if not isinstance(t, torch.Tensor):
            raise CodecError(f"{self.name}: expected a torch.Tensor, got {type(t).__name__}")
        x = t.detach()
        if not x.is_floating_point():
            data, dtype, raw_shape = tensor_to_bytes(x, context=self.name)
            return Encoded(self.name, dtype, tuple(raw_shape), data, {"raw": 1.0})
        dtype = dtype_name(x.dtype, context=self.name)
        shape = tuple(x.shape)
        if x.numel() == 0:
            return Encoded(self.name, dtype, shape, b"", {})
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            raise CodecError(f"{self.name}: tensor has {int((~finite).sum())} NaN/inf value(s) "
                             f"of {x.numel()}; expected finite values")
        if seed is None:
            seed = content_seed(x) if self.randomized else 0
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < MAX_SEED:
            raise CodecError(f"{self.name}: seed is {seed!r}, expected an int in [0, 2**48)")
        flat = x.to("cpu", work_dtype(x.dtype)).reshape(-1)
        payload, params = self._encode(flat, dtype, shape, seed)
        if self.randomized:
            params["seed"] = float(seed)
        return Encoded(self.name, dtype, shape, payload, params)

    def decode(self, e: Encoded) -> torch.Tensor:
        dtype = self._check(e)
        if not dtype.is_floating_point:
            return tensor_from_bytes(e.payload, e.dtype, e.shape, context=self.name)
        if e.params.get("raw"):
            raise CodecError(f"{self.name}: params['raw'] is set for a {e.dtype} tensor; raw "
                             "passthrough is only for non-float tensors")
        n = math.prod(e.shape)
        if n == 0:
            if e.payload:
                raise CodecError(f"{self.name}: empty tensor with a {len(e.payload)}-byte payload")
            return torch.empty(e.shape, dtype=dtype)
        flat = self._decode(e, n, work_dtype(dtype))
        info = torch.finfo(dtype)
        return flat.clamp(info.min, info.max).to(dtype).reshape(e.shape)

    def seed_of(self, e: Encoded) -> int:
        seed = e.params.get("seed")
        if seed is None or not float(seed).is_integer() or not 0 <= seed < MAX_SEED:
            raise CodecError(f"{self.name}: params['seed'] is {seed!r}, expected an integer "
                             "in [0, 2**48)")
        return int(seed)

    def param(self, e: Encoded, key: str, allowed: tuple[float, ...]) -> float:
        value = e.params.get(key)
        if value not in allowed:
            raise CodecError(f"{self.name}: params[{key!r}] is {value!r}, expected one of "
                             f"{list(allowed)}")
        return float(value)

    def values(self, data: bytes, dtype: str, k: int) -> torch.Tensor:
        """``k`` values of the original ``dtype`` from ``data`` (exact length checked)."""
        return tensor_from_bytes(data, dtype, (k,), context=self.name)

    def max_payload_nbytes(self, dtype: str, shape: tuple[int, ...]) -> int:
        # values + indices (or codes + a few scalars) never exceed twice the raw size + 64 bytes
        return 2 * nbytes_for(dtype, shape, context=self.name) + 64
