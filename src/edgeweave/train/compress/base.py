"""The update-compressor interface: what a client (or the server) puts on the wire for one
update, and what the receiver decodes, with the exact payload bytes.

Codecs (:mod:`edgeweave.codec`) are stateless tensor transforms. Compressors that converge well
at high compression are not: error feedback keeps the part of each update that was not sent,
DGC keeps a momentum and a velocity. An :class:`UpdateCompressor` holds that state per sender
(keyed by client id; the server's broadcast uses its own key), works on a whole update (a name ->
tensor mapping, so DGC can clip its global norm) and is checkpointable through
:meth:`state`/:meth:`load_state`. :class:`CodecCompressor` is the stateless case: any codec.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch

from edgeweave.codec import Codec, get_codec
from edgeweave.errors import EdgeWeaveError
from edgeweave.train.types import Params, TrainError


def codec_named(name: str, context: str) -> Codec:
    try:
        return get_codec(name)
    except EdgeWeaveError as e:
        raise TrainError(f"{context}: {e}") from None


class UpdateCompressor(ABC):
    """Compresses one sender's update at a time; may keep per-sender state."""

    name: str

    def begin_round(self, n_senders: int) -> None:  # noqa: B027  (optional hook)
        """Called once per server round (per applied update in asynchronous runs) before the
        round's updates are compressed; ``n_senders`` is how many will be."""

    @abstractmethod
    def compress(self, key: int, update: Mapping[str, torch.Tensor]) -> tuple[Params, int]:
        """(the update as the receiver decodes it, payload bytes on the wire) for sender ``key``."""

    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly after a restart (tensors and plain values)."""
        return {}

    def load_state(self, state: Mapping[str, Any]) -> None:  # noqa: B027  (stateless default)
        """Restore :meth:`state`."""


class CodecCompressor(UpdateCompressor):
    """A stateless codec applied to each tensor of the update."""

    def __init__(self, codec: Codec) -> None:
        self.codec, self.name = codec, codec.name

    def compress(self, key: int, update: Mapping[str, torch.Tensor]) -> tuple[Params, int]:
        out, total = OrderedDict(), 0
        for name, t in update.items():
            enc = self.codec.encode(t)
            total += enc.nbytes
            out[name] = self.codec.decode(enc)
        return out, total


def residual_state(memory: Mapping[int, Mapping[str, torch.Tensor]]) -> dict[str, dict]:
    return {str(k): {n: t.clone() for n, t in v.items()} for k, v in memory.items()}


def load_residuals(state: Mapping[str, Mapping[str, torch.Tensor]], context: str
                   ) -> dict[int, dict[str, torch.Tensor]]:
    try:
        return {int(k): {str(n): torch.as_tensor(t).clone() for n, t in v.items()}
                for k, v in state.items()}
    except (TypeError, ValueError, AttributeError) as e:
        raise TrainError(f"{context}: checkpointed state is malformed ({e})") from None
