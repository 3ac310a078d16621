"""Sequential multi-client split learning (SplitNN) with exact byte accounting.

Variant: the "centralized" sequential mode of Vepakomma et al. 2018 ("Split learning for
health"). One edge holds the edge part; the clients take turns. Client k trains its device part
on all its local batches, then uploads the device-part weights to the edge, and the next client
downloads them before its turn (the edge relays; it does not average). Labels go to the edge
(vanilla split learning). An epoch is one turn of every client, i.e. one pass over all the data,
which is what a FedAvg round with one local epoch also does, so bytes and accuracy per epoch
compare like for like.

Bytes per training step, exactly (``B`` samples, ``A`` activation entries per sample):
``up = codec payload of the (B, ...) activations + 8 B`` (int64 labels, raw);
``down = gradient-codec payload of the same shape``. Raw fp32 is ``4 A B`` each way, fp16
``2 A B``, int8 ``A B`` (+zstd: whatever zstd makes of it). Each handoff moves the device-part
weights up once and down once (raw fp32 by default). All counts are ``Encoded.nbytes`` of what
was actually sent, never a formula.

U-shaped variant (``SplitConfig.head``): layers ``[head:]`` and the labels stay on the device.
Per step the device sends the activations and later the gradient w.r.t. the edge's output (up),
and receives the edge's output and the gradient w.r.t. the activations (down); no label bytes.

The same :class:`SplitTrainer` drives an in-process edge (:class:`LocalLink`) or a remote one
over gRPC (:class:`~edgeweave.train.split.grpc_edge.GrpcLink`); with the same config and seed
they produce the same model.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from edgeweave.codec import Encoded, get_codec
from edgeweave.train.models import build_model, sample_shape
from edgeweave.train.split.parts import (
    SplitDevice,
    SplitEdge,
    StepReply,
    codec_for,
    module_params,
    output_shape,
    split_sequential,
    step_seed,
)
from edgeweave.train.split.privacy import ActivationPrivacy
from edgeweave.train.task import FederatedData, client_seed
from edgeweave.train.types import Params, TrainError

_PRIVACY_STREAM = 1
_EVAL_STREAM = 2


@dataclass(frozen=True)
class SplitConfig:
    """One split-learning run. ``grad_codec`` defaults to ``codec``; ``weights_codec`` carries
    the device-part weights between clients (lossless "none" by default). ``head`` (U-shape)
    keeps layers ``[head:]`` and the labels on the device; the edge runs ``[cut:head]``."""

    model: str
    cut: int
    head: int | None = None
    lr: float = 0.05
    batch_size: int = 16
    epochs: int = 1
    codec: str = "none"
    grad_codec: str | None = None
    weights_codec: str = "none"
    seed: int = 0
    init_seed: int = 0
    private_inference: bool = True
    eval_batch_size: int = 512

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.batch_size < 1 or self.epochs < 1 or self.eval_batch_size < 1:
            raise TrainError(f"split config: need lr > 0, batch_size >= 1, epochs >= 1, "
                             f"eval_batch_size >= 1; got {self.lr}, {self.batch_size}, "
                             f"{self.epochs}, {self.eval_batch_size}")
        codec_for(self.codec, "codec")
        codec_for(self.downlink_codec, "grad_codec")
        codec_for(self.weights_codec, "weights_codec")

    @property
    def downlink_codec(self) -> str:
        return self.grad_codec or self.codec

    def build(self) -> tuple[nn.Sequential, nn.Sequential, nn.Sequential | None]:
        """(device front, edge part, device head or None), initialised from ``init_seed`` (both
        sides build the same model from the spec, so no weights are shipped at the start)."""
        torch.manual_seed(self.init_seed)
        model = build_model(self.model)
        front, rest = split_sequential(model, self.cut)
        assert isinstance(model, nn.Sequential)  # split_sequential checked it
        if self.head is None:
            return front, rest, None
        if not self.cut < self.head < len(model):
            raise TrainError(f"split config: head {self.head} must be in {self.cut + 1}.."
                             f"{len(model) - 1} (after the cut {self.cut}, before the end)")
        return front, model[self.cut:self.head], model[self.head:]


def _device_like(front: nn.Module, head: nn.Module | None) -> Params:
    out = module_params(front)
    if head is not None:
        out.update(module_params(head))
    return out


def make_edge(config: SplitConfig) -> SplitEdge:
    front, edge_part, head = config.build()
    return SplitEdge(edge_part, config.lr, config.downlink_codec,
                     device_like=_device_like(front, head),
                     sample_shape=output_shape(front, sample_shape(config.model)))


class EdgeLink(Protocol):
    """How a device reaches its edge; byte counts are the payloads actually sent."""

    def forward(self, client_id: int, step: int, act: Encoded, labels: Encoded,
                train: bool) -> StepReply: ...

    def put_device_weights(self, client_id: int, params: Params, codec: str) -> int: ...

    def get_device_weights(self, client_id: int, like: Params) -> tuple[Params, int]: ...

    def middle_forward(self, client_id: int, step: int, act: Encoded,
                       train: bool) -> Encoded: ...

    def middle_backward(self, client_id: int, step: int, grad: Encoded) -> Encoded: ...


class LocalLink:
    """An in-process edge: the same encoded tensors pass, nothing is serialised further."""

    def __init__(self, edge: SplitEdge) -> None:
        self.edge = edge
        self._codec = "none"

    def forward(self, client_id: int, step: int, act: Encoded, labels: Encoded,
                train: bool) -> StepReply:
        return self.edge.step(act, labels, train)

    def put_device_weights(self, client_id: int, params: Params, codec: str) -> int:
        c = get_codec(codec)
        enc = {k: c.encode(v) for k, v in params.items()}
        self._codec = codec
        self.edge.put_device_weights(client_id,
                                     OrderedDict((k, c.decode(e)) for k, e in enc.items()))
        return sum(e.nbytes for e in enc.values())

    def get_device_weights(self, client_id: int, like: Params) -> tuple[Params, int]:
        c = get_codec(self._codec)
        enc = {k: c.encode(v) for k, v in self.edge.get_device_weights().items()}
        return (OrderedDict((k, c.decode(e)) for k, e in enc.items()),
                sum(e.nbytes for e in enc.values()))

    def middle_forward(self, client_id: int, step: int, act: Encoded, train: bool) -> Encoded:
        return self.edge.middle_forward(client_id, step, act, train)

    def middle_backward(self, client_id: int, step: int, grad: Encoded) -> Encoded:
        return self.edge.middle_backward(client_id, step, grad)


@dataclass
class SplitEpoch:
    """One epoch (every client's turn once). Bytes are payloads: ``bytes_up`` = activations +
    labels + weights uploaded; ``bytes_down`` = gradients + weights downloaded. In the U-shape
    ``activation_bytes`` also holds the feature gradients sent up and ``gradient_bytes`` the
    features sent down (everything tensor-shaped per step, each way)."""

    epoch: int
    train_loss: float
    test_loss: float
    test_acc: float
    bytes_up: int
    bytes_down: int
    activation_bytes: int
    label_bytes: int
    gradient_bytes: int
    weight_bytes_up: int
    weight_bytes_down: int
    steps: int
    handoffs: int
    wall_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SplitTrainer:
    """Runs :class:`SplitConfig` over clients' data through an :class:`EdgeLink`."""

    def __init__(self, config: SplitConfig, link: EdgeLink | None = None,
                 privacy: ActivationPrivacy | None = None) -> None:
        self.config = config
        front, edge_part, head = config.build()
        act_shape = output_shape(front, sample_shape(config.model))
        feats = None if head is None else output_shape(edge_part, act_shape)
        self.device = SplitDevice(front, config.lr, config.codec, privacy, head, feats)
        if link is None:
            link = LocalLink(SplitEdge(edge_part, config.lr, config.downlink_codec,
                                       device_like=_device_like(front, head),
                                       sample_shape=act_shape))
        self.link = link
        self.privacy = privacy
        self.holder: int | None = None
        self.step = 0
        self.publish_bytes = 0

    @property
    def edge(self) -> SplitEdge | None:
        return getattr(self.link, "edge", None)

    def _gen(self, *parts: int) -> torch.Generator | None:
        if self.privacy is None:
            return None
        return torch.Generator().manual_seed(step_seed(self.config.seed, *parts))

    def _handoff(self, client_id: int, counts: dict[str, int]) -> None:
        """The previous holder uploads the device weights, ``client_id`` downloads them."""
        if self.holder is None or self.holder == client_id:
            self.holder = client_id
            return
        like = self.device.weights()
        counts["weight_up"] += self.link.put_device_weights(self.holder, like,
                                                            self.config.weights_codec)
        params, n = self.link.get_device_weights(client_id, like)
        counts["weight_down"] += n
        self.device.load_weights(params)
        counts["handoffs"] += 1
        self.holder = client_id

    def _client_turn(self, epoch: int, cid: int, x: torch.Tensor, y: torch.Tensor,
                     counts: dict[str, int], losses: list[float]) -> None:
        cfg = self.config
        g = torch.Generator().manual_seed(client_seed(cfg.seed, epoch, cid))
        perm = torch.randperm(len(y), generator=g)
        labels_codec = get_codec("none")
        for lo in range(0, len(y), cfg.batch_size):
            idx = perm[lo:lo + cfg.batch_size]
            act = self.device.forward(x[idx], self._gen(_PRIVACY_STREAM, epoch, cid, self.step))
            if cfg.head is not None:
                losses.append(self._u_step(cid, act, y[idx].long(), counts))
                continue
            labels = labels_codec.encode(y[idx].long())
            reply = self.link.forward(cid, self.step, act, labels, True)
            if reply.grad is None:
                raise TrainError(f"split: the edge returned no gradient for step {self.step}")
            self.device.backward(reply.grad)
            counts["act"] += act.nbytes
            counts["labels"] += labels.nbytes
            counts["grad"] += reply.grad.nbytes
            counts["steps"] += 1
            losses.append(reply.loss)
            self.step += 1

    def _u_step(self, cid: int, act: Encoded, y: torch.Tensor, counts: dict[str, int]) -> float:
        """One U-shaped step: two round trips, labels never leave the device."""
        feats = self.link.middle_forward(cid, self.step, act, True)
        gfeat, loss, _ = self.device.head_step(feats, y)
        assert gfeat is not None
        gact = self.link.middle_backward(cid, self.step, gfeat)
        self.device.backward(gact)
        counts["act"] += act.nbytes + gfeat.nbytes
        counts["grad"] += feats.nbytes + gact.nbytes
        counts["steps"] += 1
        self.step += 1
        return loss

    def train_epoch(self, epoch: int, data: FederatedData) -> tuple[dict[str, int], float]:
        counts = dict.fromkeys(("act", "labels", "grad", "weight_up", "weight_down", "steps",
                                "handoffs"), 0)
        losses: list[float] = []
        for cid in range(data.num_clients):
            x, y = data.client(cid)
            if len(y) == 0:
                continue
            self._handoff(cid, counts)
            self._client_turn(epoch, cid, x, y, counts, losses)
        return counts, (sum(losses) / len(losses) if losses else float("nan"))

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, int]:
        """(mean loss, accuracy, bytes sent up) of the current model on (x, y), through the
        link; with ``private_inference`` the privacy transform is applied as in deployment."""
        cfg = self.config
        loss, correct, sent = 0.0, 0, 0
        codec = get_codec("none")
        for lo in range(0, len(y), cfg.eval_batch_size):
            xb, yb = x[lo:lo + cfg.eval_batch_size], y[lo:lo + cfg.eval_batch_size]
            gen = self._gen(_EVAL_STREAM, lo) if cfg.private_inference else None
            if cfg.private_inference or self.privacy is None:
                act = self.device.infer(xb, gen)
            else:
                saved, self.device.privacy = self.device.privacy, None
                try:
                    act = self.device.infer(xb)
                finally:
                    self.device.privacy = saved
            if cfg.head is not None:
                feats = self.link.middle_forward(-1, -1, act, False)
                _, b_loss, b_correct = self.device.head_step(feats, yb.long(), train=False)
                sent += act.nbytes
            else:
                labels = codec.encode(yb.long())
                reply = self.link.forward(-1, -1, act, labels, False)
                b_loss, b_correct = reply.loss, reply.correct
                sent += act.nbytes + labels.nbytes
            loss += b_loss * len(yb)
            correct += b_correct
        n = max(len(y), 1)
        return loss / n, correct / n, sent

    def run(self, data: FederatedData, test_x: torch.Tensor | None = None,
            test_y: torch.Tensor | None = None, *, publish: bool = False,
            progress: Callable[[SplitEpoch], Any] | None = None) -> list[SplitEpoch]:
        """Train ``config.epochs`` epochs; evaluate after each when a test set is given. With
        ``publish`` the last holder uploads the final device weights to the edge (counted in
        :attr:`publish_bytes`, not in the epochs)."""
        records = []
        for epoch in range(self.config.epochs):
            start = time.perf_counter()
            counts, train_loss = self.train_epoch(epoch, data)
            wall = time.perf_counter() - start
            test_loss = test_acc = float("nan")
            if test_x is not None and test_y is not None:
                test_loss, test_acc, _ = self.evaluate(test_x, test_y)
            rec = SplitEpoch(
                epoch=epoch, train_loss=train_loss, test_loss=test_loss, test_acc=test_acc,
                bytes_up=counts["act"] + counts["labels"] + counts["weight_up"],
                bytes_down=counts["grad"] + counts["weight_down"],
                activation_bytes=counts["act"], label_bytes=counts["labels"],
                gradient_bytes=counts["grad"], weight_bytes_up=counts["weight_up"],
                weight_bytes_down=counts["weight_down"], steps=counts["steps"],
                handoffs=counts["handoffs"], wall_s=wall)
            records.append(rec)
            if progress is not None:
                progress(rec)
        if publish and self.holder is not None:
            self.publish_bytes += self.link.put_device_weights(
                self.holder, self.device.weights(), self.config.weights_codec)
        return records
