"""What crosses the network in a round, and how many bytes it takes.

Without a codec a model travels as raw tensors: exactly ``numel * element_size`` bytes each
(float32: 4 per parameter). With a codec the model sent down is encoded and decoded (clients
train from what they actually received, lossy or not) and each client's update goes up as its
delta w_i - w_sent, encoded per client: deltas are small and centred on zero, which is what int8
and zstd compress well. The byte counts are then the codec's own payload sizes
(:attr:`edgeweave.codec.Encoded.nbytes`), never an estimate.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from edgeweave.train.types import Params, TrainError, Updates


def raw_nbytes(params: Params) -> int:
    return sum(v.numel() * v.element_size() for v in params.values())


class Transfer:
    def __init__(self, codec: str | None = None) -> None:
        self.codec = None
        if codec is not None:
            from edgeweave.codec import get_codec
            from edgeweave.errors import EdgeWeaveError

            try:
                self.codec = get_codec(codec)
            except EdgeWeaveError as e:
                raise TrainError(f"server config: codec: {e}") from None

    def down(self, params: Params) -> tuple[Params, int]:
        """(what one client receives, payload bytes sent to one client)."""
        if self.codec is None:
            return params, raw_nbytes(params)
        out, total = OrderedDict(), 0
        for k, v in params.items():
            enc = self.codec.encode(v)
            total += enc.nbytes
            out[k] = self.codec.decode(enc)
        return out, total

    def up(self, sent: Params, updates: Updates) -> tuple[Updates, int]:
        """(the updates as the server decodes them, payload bytes of all of them)."""
        n = len(updates)
        if self.codec is None:
            per_client = sum(v[0].numel() * v.element_size() for v in updates.params.values())
            return updates, n * per_client if n else 0
        total = 0
        decoded = {}
        for k, stacked in updates.params.items():
            rows = []
            for i in range(n):  # one payload per client: that is what each one uploads
                enc = self.codec.encode(stacked[i] - sent[k])
                total += enc.nbytes
                rows.append(sent[k] + self.codec.decode(enc))
            decoded[k] = torch.stack(rows) if rows else stacked
        updates.params = decoded
        return updates, total
