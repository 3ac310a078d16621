"""``"ef:CODEC"``: error feedback (error compensation) around any codec.

Each sender keeps the residual e of what it meant to send and did not: it encodes
c = update + e, sends C(c), and keeps e' = c - decode(C(c)). Nothing is lost, only delayed, so
biased compressors (top-k, random masks, low rank, 1-bit) converge like uncompressed SGD
(Seide et al. 2014, 1-bit SGD; Stich et al. 2018 and Karimireddy et al. 2019 for the proofs).
After any number of rounds, sum(decoded) + e_final == sum(updates) exactly up to float
rounding -- the invariant the tests check.

The codec must be a contraction, ||C(x) - x|| < ||x|| (top-k, an unscaled random mask, a
projection, a quantizer): then the residual stays bounded. An unbiased but rescaled sparsifier
such as ``randk`` (error (n/k - 1) ||x||^2) is not, and error feedback around it diverges (the
update benchmark saw NaN within a few rounds); use ``randmask`` for the error-feedback form.

In federated learning with client sampling a residual waits for the client's next selection;
it is kept per client id (and survives a checkpoint).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch

from edgeweave.codec import Codec
from edgeweave.train.compress.base import UpdateCompressor, load_residuals, residual_state
from edgeweave.train.types import Params


class ErrorFeedback(UpdateCompressor):
    """Per-sender residual memory around a (typically biased) codec."""

    def __init__(self, codec: Codec) -> None:
        self.codec, self.name = codec, f"ef:{codec.name}"
        self.residual: dict[int, dict[str, torch.Tensor]] = {}

    def compress(self, key: int, update: Mapping[str, torch.Tensor]) -> tuple[Params, int]:
        memory = self.residual.setdefault(key, {})
        out, total = OrderedDict(), 0
        for name, t in update.items():
            if not t.is_floating_point():
                enc = self.codec.encode(t)
                total += enc.nbytes
                out[name] = self.codec.decode(enc)
                continue
            c = t.detach().to(torch.float64) + memory.get(name, 0.0)
            enc = self.codec.encode(c.to(t.dtype))
            total += enc.nbytes
            dec = self.codec.decode(enc)
            memory[name] = c - dec.to(torch.float64)
            out[name] = dec
        return out, total

    def state(self) -> dict[str, Any]:
        return {"residual": residual_state(self.residual)}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.residual = load_residuals(state.get("residual", {}), self.name)
