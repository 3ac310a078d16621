"""The two halves of a split model: the device part (first layers) and the edge part (the rest).

Vanilla split learning (Gupta & Raskar 2018; Vepakomma et al. 2018, "Split learning for health"):
the device computes the cut-layer activations and sends them WITH THE LABELS to the edge; the
edge finishes the forward pass, computes the loss, updates its layers and returns the gradient of
the loss w.r.t. the activations; the device back-propagates it through its own layers. Both
halves take their SGD step from gradients computed at the same weights, so with a lossless codec
and no privacy transform one split step is exactly one step of the unsplit model.

The U-shaped variant (Vepakomma et al. 2018, "no label sharing") keeps the last layers and the
labels on the device too: the edge runs only the middle layers, returns their output, and later
takes the gradient w.r.t. it (:meth:`SplitEdge.middle_forward` / :meth:`SplitEdge.middle_backward`);
two round trips per step instead of one, but neither labels nor logits leave the device.

Both halves validate everything that crosses the link (the edge may face any device): a
malformed or ill-shaped tensor raises :class:`~edgeweave.train.types.TrainError` naming the
field, BEFORE any weight changes, so one bad request cannot corrupt the shared edge model. The
codec, dtype and shape a tensor DECLARES are checked against what the model expects before its
payload is decoded (:func:`check_declared`): a codec allocates the declared shape, so a few
hundred compressed bytes declaring a huge tensor would otherwise cost gigabytes of memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edgeweave.codec import CodecError, Encoded, get_codec
from edgeweave.train.split.privacy import ActivationPrivacy
from edgeweave.train.types import Params, TrainError

DEFAULT_MAX_BATCH = 4096
FLOAT_NAMES = ("float32", "float16", "bfloat16", "float64")
LABEL_NAMES = ("int64", "int32", "int16", "uint8", "int8")


def check_declared(e: Encoded, what: str, dtypes: tuple[str, ...],
                   shape: tuple[int, ...] | None) -> None:
    """Refuse ``e`` BEFORE decoding unless its codec is known, its dtype one of ``dtypes`` and
    its declared shape exactly ``shape`` (None: checked by the caller; see the module
    docstring)."""
    try:
        get_codec(e.codec)
    except CodecError as err:
        raise TrainError(f"{what}: {err}") from None
    if e.dtype not in dtypes:
        raise TrainError(f"{what}: dtype {e.dtype!r}, expected one of {', '.join(dtypes)}")
    if shape is not None and tuple(e.shape) != tuple(shape):
        raise TrainError(f"{what}: declared shape {list(e.shape)}, expected {list(shape)}")


def output_shape(module: nn.Module, sample: tuple[int, ...]) -> tuple[int, ...]:
    """The per-sample output shape of ``module`` on one zero sample of shape ``sample``: probed
    in eval mode without gradients and without touching the global RNG, so it changes neither
    weights, buffers nor any seeded run."""
    was = module.training
    module.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            out = module(torch.zeros(1, *sample))
    except RuntimeError as e:
        raise TrainError(f"split: a sample of shape {list(sample)} does not fit the layers: "
                         f"{str(e).splitlines()[0]}") from None
    finally:
        module.train(was)
    return tuple(out.shape[1:])


def split_sequential(model: nn.Module, cut: int) -> tuple[nn.Sequential, nn.Sequential]:
    """``(model[:cut], model[cut:])``: the device part and the edge part (modules are shared
    with ``model``, not copied)."""
    if not isinstance(model, nn.Sequential):
        raise TrainError(f"split: model is a {type(model).__name__}; split learning cuts a "
                         "sequential model spec such as --model cnn:32,64,128 or mlp:64,64,10")
    if not 1 <= cut < len(model):
        raise TrainError(f"split: cut {cut} is out of range; expected 1..{len(model) - 1} for a "
                         f"model of {len(model)} layers")
    return model[:cut], model[cut:]


def codec_for(name: str, what: str) -> None:
    try:
        get_codec(name)
    except CodecError as e:
        raise TrainError(f"split config: {what}: {e}") from None


def step_seed(*parts: int) -> int:
    """A 63-bit seed from a tuple of ints (seed, epoch, client, step, stream)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts])
               .generate_state(2, np.uint64)[0] >> np.uint64(1))


def decode_encoded(e: Encoded) -> torch.Tensor:
    """Decode with the codec the Encoded names (CodecError if unknown or malformed)."""
    return get_codec(e.codec).decode(e)


def sgd_(params: list[nn.Parameter], lr: float) -> None:
    """Plain SGD, ``w -= lr * grad``, then clear the grads (the reference step of local.py)."""
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p.sub_(lr * p.grad)
                p.grad = None


def module_params(module: nn.Module) -> Params:
    return OrderedDict((k, v.detach().clone()) for k, v in module.state_dict().items()
                       if v.is_floating_point())


@dataclass
class StepReply:
    """What the edge returns for one batch: the encoded gradient (None when evaluating), the mean
    loss and the number of correct top-1 predictions."""

    grad: Encoded | None
    loss: float
    correct: int


class SplitDevice:
    """The device's layers, its activation codec and privacy transform, and its SGD step."""

    def __init__(self, module: nn.Module, lr: float, codec: str = "none",
                 privacy: ActivationPrivacy | None = None, head: nn.Module | None = None,
                 feature_shape: tuple[int, ...] | None = None) -> None:
        codec_for(codec, "activation codec")
        if head is not None and feature_shape is None:
            raise TrainError("split device: a U-shaped split needs the per-sample shape of the "
                             "edge's output (feature_shape)")
        self.module, self.lr, self.head = module, lr, head
        self.feature_shape = feature_shape
        self.codec = get_codec(codec)
        self.privacy = privacy
        self._sent: torch.Tensor | None = None

    def _params(self) -> list[nn.Parameter]:
        return [*self.module.parameters(), *(self.head.parameters() if self.head else ())]

    def _transform(self, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        if self.privacy is None:
            return self.module(x)
        assert gen is not None
        return self.privacy.on_activation(self.module(self.privacy.on_input(x, gen)), gen)

    def forward(self, x: torch.Tensor, gen: torch.Generator | None = None) -> Encoded:
        """Run the device layers (and the privacy transform) and encode what is sent."""
        self.module.train()
        a = self._transform(x, gen)
        self._sent = a
        return self.codec.encode(a.detach())

    def backward(self, grad: Encoded) -> None:
        """Back-propagate the edge's gradient through what was sent, then take the SGD step."""
        if self._sent is None:
            raise TrainError("split device: backward without a forward")
        what = "split device: gradient from the edge"
        check_declared(grad, what, FLOAT_NAMES, tuple(self._sent.shape))
        try:
            g = decode_encoded(grad)
        except CodecError as e:
            raise TrainError(f"{what}: {e}") from None
        self._sent.backward(g.to(self._sent.dtype))
        self._sent = None
        sgd_(self._params(), self.lr)

    def head_step(self, features: Encoded, y: torch.Tensor,
                  train: bool = True) -> tuple[Encoded | None, float, int]:
        """U-shape: run the device's last layers and the loss on the edge's features; return the
        encoded gradient w.r.t. the features (None when evaluating), the loss and the hits."""
        if self.head is None or self.feature_shape is None:
            raise TrainError("split device: head_step needs a device head (U-shaped split)")
        what = "split device: features from the edge"
        check_declared(features, what, FLOAT_NAMES, (len(y), *self.feature_shape))
        try:
            f = decode_encoded(features).to(torch.float32)
        except CodecError as e:
            raise TrainError(f"{what}: {e}") from None
        self.head.train(train)
        f.requires_grad_(train)
        with torch.set_grad_enabled(train):
            out = self.head(f)
            loss = nn.functional.cross_entropy(out, y)
        correct = int((out.argmax(1) == y).sum())
        if not train:
            return None, float(loss), correct
        loss.backward()  # head grads wait in .grad for the step in backward()
        assert f.grad is not None
        return self.codec.encode(f.grad), float(loss.detach()), correct

    @torch.no_grad()
    def infer(self, x: torch.Tensor, gen: torch.Generator | None = None) -> Encoded:
        self.module.eval()
        return self.codec.encode(self._transform(x, gen))

    def weights(self) -> Params:
        out = module_params(self.module)
        if self.head is not None:  # Sequential slices keep their layer names: keys are disjoint
            out.update(module_params(self.head))
        return out

    def load_weights(self, params: Params) -> None:
        for m in (self.module, self.head):
            if m is not None:
                m.load_state_dict(OrderedDict((k, v) for k, v in params.items()
                                              if k in m.state_dict()), strict=False)


class SplitEdge:
    """The edge's layers, the loss and its SGD step; also relays device weights between
    clients in sequential split learning. Thread-safe: one request at a time."""

    def __init__(self, module: nn.Module, lr: float, grad_codec: str = "none",
                 device_like: Params | None = None, max_batch: int = DEFAULT_MAX_BATCH, *,
                 sample_shape: tuple[int, ...]) -> None:
        """``sample_shape``: the per-sample shape of the activations this edge takes (the
        device part's output, :func:`output_shape`); anything else is refused undecoded."""
        codec_for(grad_codec, "gradient codec")
        self.module, self.lr, self.max_batch = module, lr, max_batch
        self.sample_shape = tuple(sample_shape)
        self.grad_codec = get_codec(grad_codec)
        self.device_like = device_like
        self.device_weights: Params | None = None
        self.device_weights_from: int | None = None
        self.steps = 0
        self.max_pending = 256
        # U-shape: client -> (step, activations, features) kept between the two round trips
        self._pending: dict[int, tuple[int, torch.Tensor, torch.Tensor]] = {}
        self._lock = threading.Lock()

    def _decode(self, e: Encoded, what: str) -> torch.Tensor:
        try:
            return decode_encoded(e)
        except CodecError as err:
            raise TrainError(f"split edge: {what}: {err}") from None

    def _activations(self, act: Encoded) -> torch.Tensor:
        check_declared(act, "split edge: activations", FLOAT_NAMES, None)
        batch = act.shape[0] if act.shape else 0
        if not 1 <= batch <= self.max_batch:
            raise TrainError(f"split edge: activations of shape {list(act.shape)}: a batch of "
                             f"{batch} samples; expected 1..{self.max_batch}")
        want = (batch, *self.sample_shape)
        if tuple(act.shape) != want:  # the words the edge's old shape error used: kept
            raise TrainError(f"split edge: activations of shape {list(act.shape)} do not fit "
                             f"the edge layers, which take {list(want)}")
        a = self._decode(act, "activations")
        if not bool(torch.isfinite(a).all()):
            raise TrainError("split edge: activations have NaN/inf values")
        return a.to(torch.float32)

    def _inputs(self, act: Encoded, labels: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
        a = self._activations(act)
        check_declared(labels, "split edge: labels", LABEL_NAMES, tuple(act.shape[:1]))
        return a, self._decode(labels, "labels").long()

    def _run(self, a: torch.Tensor, train: bool) -> torch.Tensor:
        self.module.train(train)
        try:
            with torch.set_grad_enabled(train):
                return self.module(a.requires_grad_(train))
        except RuntimeError as e:
            raise TrainError(f"split edge: activations of shape {list(a.shape)} do not fit "
                             f"the edge layers: {str(e).splitlines()[0]}") from None

    def step(self, act: Encoded, labels: Encoded, train: bool = True) -> StepReply:
        a, y = self._inputs(act, labels)
        with self._lock:
            out = self._run(a, train)
            if out.dim() != 2:
                raise TrainError(f"split edge: the edge layers produced shape {list(out.shape)}, "
                                 "expected (batch, classes): is the cut right?")
            if int(y.min()) < 0 or int(y.max()) >= out.shape[1]:
                raise TrainError(f"split edge: labels must be in [0, {out.shape[1]}), got "
                                 f"[{int(y.min())}, {int(y.max())}]")
            loss = nn.functional.cross_entropy(out, y)
            correct = int((out.argmax(1) == y).sum())
            if not train:
                return StepReply(None, float(loss), correct)
            loss.backward()
            assert a.grad is not None
            sgd_(list(self.module.parameters()), self.lr)
            self.steps += 1
            grad = self.grad_codec.encode(a.grad)
            a.grad = None
        return StepReply(grad, float(loss.detach()), correct)

    def middle_forward(self, client_id: int, step: int, act: Encoded, train: bool = True
                       ) -> Encoded:
        """U-shape, first trip: the middle layers' output (kept for the backward if training)."""
        a = self._activations(act)
        with self._lock:
            out = self._run(a, train)
            if train:
                if client_id not in self._pending and len(self._pending) >= self.max_pending:
                    raise TrainError(f"split edge: {len(self._pending)} clients are mid-step; "
                                     "finish their backward first")
                self._pending[client_id] = (step, a, out)
            return self.grad_codec.encode(out.detach())

    def middle_backward(self, client_id: int, step: int, grad: Encoded) -> Encoded:
        """U-shape, second trip: back-propagate the device's feature gradient, take the SGD
        step, return the gradient w.r.t. the activations of that forward."""
        with self._lock:
            pending = self._pending.get(client_id)
            if pending is None or pending[0] != step:
                raise TrainError(f"split edge: no forward pending for client {client_id} step "
                                 f"{step}; call MiddleForward with train=true first")
            _, a, out = pending
            check_declared(grad, "split edge: feature gradient", FLOAT_NAMES, tuple(out.shape))
            g = self._decode(grad, "feature gradient")
            if not bool(torch.isfinite(g).all()):
                raise TrainError("split edge: feature gradient has NaN/inf values")
            del self._pending[client_id]
            try:
                out.backward(g.to(out.dtype))
            except RuntimeError as e:  # e.g. the weights moved under a stale forward
                raise TrainError(f"split edge: backward for client {client_id} step {step} "
                                 f"failed: {str(e).splitlines()[0]}") from None
            assert a.grad is not None
            sgd_(list(self.module.parameters()), self.lr)
            self.steps += 1
            return self.grad_codec.encode(a.grad)

    def put_device_weights(self, client_id: int, params: Params) -> None:
        if self.device_like is not None:
            _check_like(params, self.device_like)
        with self._lock:
            self.device_weights = OrderedDict((k, v.clone()) for k, v in params.items())
            self.device_weights_from = client_id

    def get_device_weights(self) -> Params:
        with self._lock:
            if self.device_weights is None:
                raise TrainError("split edge: no device weights uploaded yet")
            return OrderedDict((k, v.clone()) for k, v in self.device_weights.items())

    def weights(self) -> Params:
        with self._lock:
            return module_params(self.module)


def _check_like(params: Params, like: Params) -> None:
    if list(params) != list(like):
        raise TrainError(f"split edge: device weights have names {list(params)}, expected "
                         f"{list(like)}")
    for k, v in params.items():
        if v.shape != like[k].shape or v.dtype != like[k].dtype:
            raise TrainError(f"split edge: device weight {k!r} is {v.dtype} {list(v.shape)}, "
                             f"expected {like[k].dtype} {list(like[k].shape)}")
