"""What crosses the network in a round, and how many bytes it takes.

Without a codec a model travels as raw tensors: exactly ``numel * element_size`` bytes each
(float32: 4 per parameter). The byte counts are otherwise always the codecs' own payload sizes
(:attr:`edgeweave.codec.Encoded.nbytes`), never an estimate.

Uplink (``up``, or ``codec`` for both directions): each client's update goes up as its delta
w_i - w_sent, compressed per client by an :class:`~edgeweave.train.compress.UpdateCompressor`:
a plain codec (``"int8"``, ``"qsgd:127"``, ``"topk:0.01"``), error feedback around one
(``"ef:topk:0.001"``) or DGC (``"dgc:0.001,0.9,5,4"``). Stateful compressors keep their memory
per client id. The server aggregates what it decoded.

Downlink (``down``, or ``codec``): with a plain codec the model itself is encoded and decoded, and
clients train from what they actually received, lossy or not. With a stateful spec (``"ef:..."``,
``"dgc:..."``) the server instead sends the broadcast delta w_t - w_{t-1} through that compressor
(server-side error feedback: what it could not send is carried into the next broadcast), and
clients rebuild the model as the sum of the deltas they received. That assumes every client holds
the previous broadcast -- true for a broadcast/multicast channel or clients that stay in sync,
not for a client that skipped rounds (it would first need the full model). The first broadcast
is the full model, raw. Each ``down`` call is one broadcast (in asynchronous runs, one per
launched client), so the delta is against the previous call's model.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch

from edgeweave.train.compress import CodecCompressor, UpdateCompressor, make_compressor
from edgeweave.train.types import Params, TrainError, Updates

SERVER_KEY = -1
"""The sender key of the server's own (downlink) compressor state."""


def raw_nbytes(params: Params) -> int:
    return sum(v.numel() * v.element_size() for v in params.values())


def _copy(params: Mapping[str, torch.Tensor]) -> Params:
    return OrderedDict((k, v.detach().clone()) for k, v in params.items())


class Transfer:
    """Uplink and downlink compression with exact byte counts; ``codec`` sets both directions,
    ``up``/``down`` override one of them."""

    def __init__(self, codec: str | None = None, up: str | None = None,
                 down: str | None = None) -> None:
        self.codec = codec
        up_spec = up if up is not None else codec
        down_spec = down if down is not None else codec
        self.up_spec, self.down_spec = up_spec, down_spec
        self.uplink: UpdateCompressor | None = None
        self.downlink: UpdateCompressor | None = None
        if up_spec is not None:
            ctx = "server config: up_codec" if up is not None else "server config: codec"
            self.uplink = make_compressor(up_spec, ctx)
        if down_spec is not None:
            ctx = "server config: down_codec" if down is not None else "server config: codec"
            self.downlink = make_compressor(down_spec, ctx)
        # downlink delta mode: the model the clients hold, and the last model broadcast
        self.held: Params | None = None
        self.previous: Params | None = None

    @property
    def delta_down(self) -> bool:
        """Whether the downlink sends deltas (stateful compressor) rather than models."""
        return self.downlink is not None and not isinstance(self.downlink, CodecCompressor)

    def down(self, params: Params) -> tuple[Params, int]:
        """(what one client receives, payload bytes sent to one client)."""
        if self.downlink is None:
            return params, raw_nbytes(params)
        if not self.delta_down:
            return self.downlink.compress(SERVER_KEY, params)
        if self.held is None or self.previous is None or self.held.keys() != params.keys():
            self.held, self.previous = _copy(params), _copy(params)
            return _copy(params), raw_nbytes(params)
        delta = OrderedDict((k, params[k] - self.previous[k]) for k in params)
        self.downlink.begin_round(1)
        decoded, nbytes = self.downlink.compress(SERVER_KEY, delta)
        for k in params:
            self.held[k] = self.held[k] + decoded[k].to(self.held[k].dtype)
        self.previous = _copy(params)
        return _copy(self.held), nbytes

    def up(self, sent: Params, updates: Updates) -> tuple[Updates, int]:
        """(the updates as the server decodes them, payload bytes of all of them)."""
        n = len(updates)
        if self.uplink is None:
            per_client = sum(v[0].numel() * v.element_size() for v in updates.params.values())
            return updates, n * per_client if n else 0
        self.uplink.begin_round(n)
        total = 0
        rows: dict[str, list[torch.Tensor]] = {k: [] for k in updates.params}
        for i, cid in enumerate(updates.client_ids):  # one payload per client, as each uploads
            delta = OrderedDict((k, stacked[i] - sent[k]) for k, stacked in updates.params.items())
            decoded, nbytes = self.uplink.compress(int(cid), delta)
            total += nbytes
            for k in rows:
                rows[k].append(sent[k] + decoded[k].to(sent[k].dtype))
        if n:
            updates.params = {k: torch.stack(r) for k, r in rows.items()}
        return updates, total

    # -- checkpoints --------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Compressor memories and the downlink replica, for an exact resume."""
        return {"up": self.uplink.state() if self.uplink else {},
                "down": self.downlink.state() if self.downlink else {},
                "held": dict(self.held) if self.held is not None else None,
                "previous": dict(self.previous) if self.previous is not None else None}

    def load_state(self, state: Mapping[str, Any]) -> None:
        if not isinstance(state, Mapping):
            raise TrainError(f"transfer: checkpointed state is a {type(state).__name__}, "
                             "expected a dict")
        if self.uplink:
            self.uplink.load_state(state.get("up") or {})
        if self.downlink:
            self.downlink.load_state(state.get("down") or {})
        held, previous = state.get("held"), state.get("previous")
        self.held = _copy(held) if held is not None else None
        self.previous = _copy(previous) if previous is not None else None
