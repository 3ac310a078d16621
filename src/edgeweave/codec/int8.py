"""``"int8"``: affine per-tensor quantization of float tensors to uint8, lossy.

``x ~ (q - zero_point) * scale`` with ``q`` in ``[0, 255]``. The range is ``[min(x, 0), max(x, 0)]``
(as torch's MinMax observers do), so 0 is represented exactly: ReLU zeros stay zeros, which keeps
sparse activations compressible by a following ``+zstd``. ``scale = (hi - lo) / 255`` and
``zero_point = round(-lo / scale)``; both go into ``Encoded.params`` as floats.

Guarantee: ``|decode(encode(x)) - x| <= scale / 2`` plus float rounding (a few ulps of max|x|, and
for float16/bfloat16 inputs the rounding of the result to that dtype). All-zero and empty tensors
use ``scale = 1, zero_point = 0`` (exact); constant tensors are exact up to float rounding.
Non-finite values (NaN, inf) raise CodecError. Non-float tensors (ints, bool) pass through as raw
bytes, losslessly. Payload: one byte per element.
"""

from __future__ import annotations

import math
import sys

import torch

from edgeweave.codec.base import Codec, CodecError, Encoded, register
from edgeweave.codec.wire import dtype_name, nbytes_for, tensor_from_bytes, tensor_to_bytes

_LEVELS = 255
_ZERO_POINTS = frozenset(float(z) for z in range(_LEVELS + 1))
# Outside this scale range float32 arithmetic could underflow or overflow; use float64 there.
_F32_SCALE_RANGE = (1e-30, 1e30)


def _work_dtype(dtype: torch.dtype, scale: float) -> torch.dtype:
    lo, hi = _F32_SCALE_RANGE
    if dtype == torch.float64 or not lo <= scale <= hi:
        return torch.float64
    return torch.float32


class Int8Codec(Codec):
    """Per-tensor affine uint8 quantization (scale, zero_point from min/max, 0 exact)."""

    name = "int8"
    lossy = True

    def encode(self, t: torch.Tensor) -> Encoded:
        if not isinstance(t, torch.Tensor):
            raise CodecError(f"{self.name}: expected a torch.Tensor, got {type(t).__name__}")
        x = t.detach()
        if not x.is_floating_point():
            data, dtype, raw_shape = tensor_to_bytes(x, context=self.name)
            return Encoded(self.name, dtype, tuple(raw_shape), data)
        dtype = dtype_name(x.dtype, context=self.name)
        shape = tuple(x.shape)
        if x.numel() == 0:
            return Encoded(self.name, dtype, shape, b"", {"scale": 1.0, "zero_point": 0.0})
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise CodecError(
                f"{self.name}: tensor has {bad} NaN/inf value(s) of {x.numel()}; "
                f"expected finite values (use 'none' or 'fp16' to carry NaN/inf)"
            )
        lo = min(float(x.min()), 0.0)
        hi = max(float(x.max()), 0.0)
        # hi/255 - lo/255 rather than (hi - lo)/255: cannot overflow even for float64 extremes.
        scale = hi / _LEVELS - lo / _LEVELS
        if scale == 0.0:  # all zeros
            scale, zero_point = 1.0, 0
        else:
            # float64 ranges narrower than ~5e-306 (pure subnormals) would give a subnormal scale
            scale = max(scale, sys.float_info.min)
            zero_point = min(max(round(-lo / scale), 0), _LEVELS)
        work = _work_dtype(x.dtype, scale)
        q = torch.round(x.to(work) / scale).add_(zero_point).clamp_(0, _LEVELS).to(torch.uint8)
        data, _, _ = tensor_to_bytes(q, context=self.name)
        return Encoded(
            self.name, dtype, shape, data, {"scale": scale, "zero_point": float(zero_point)}
        )

    def decode(self, e: Encoded) -> torch.Tensor:
        dtype = self._check(e)
        if not dtype.is_floating_point:
            return tensor_from_bytes(e.payload, e.dtype, e.shape, context=self.name)
        scale = e.params.get("scale")
        zero_point = e.params.get("zero_point")
        if scale is None or not math.isfinite(scale) or scale <= 0:
            raise CodecError(
                f"{self.name}: params['scale'] is {scale!r}, expected a finite number > 0"
            )
        if zero_point not in _ZERO_POINTS:
            raise CodecError(
                f"{self.name}: params['zero_point'] is {zero_point!r}, "
                f"expected an integer in [0, {_LEVELS}]"
            )
        q = tensor_from_bytes(e.payload, "uint8", e.shape, context=self.name)
        work = _work_dtype(dtype, scale)
        x = q.to(work).sub_(int(zero_point)).mul_(scale)
        if work != dtype:
            # (q - zp) * scale may exceed max|x| by scale/2: keep it finite in the original dtype
            info = torch.finfo(dtype)
            x = x.clamp_(info.min, info.max).to(dtype)
        return x

    def max_payload_nbytes(self, dtype: str, shape: tuple[int, ...]) -> int:
        raw = nbytes_for(dtype, shape, context=self.name)
        if dtype in ("float32", "float64", "float16", "bfloat16"):
            return nbytes_for("uint8", shape)
        return raw


register(Int8Codec())
