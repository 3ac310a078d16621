"""Distributed deep neural networks (DDNN; Teerapittayanon, McDanel and Kung, ICDCS 2017).

Several end devices observe the same event from different views. Each device runs a small
on-device network that yields a feature map and a *local exit vector* (class scores). The exit
vectors of all devices are AGGREGATED into one local decision:

* ``"max"``: element-wise max over devices (max pooling, MP),
* ``"avg"``: element-wise mean over devices (average pooling, AP),
* ``"concat"``: concatenation followed by a linear layer (CC).

If the normalized entropy of the aggregated local decision (see
:func:`edgeweave.adapt.exits.normalized_entropy`) is at most ``threshold``, the sample exits
locally and the devices only ever transmit their tiny exit vectors. Otherwise the devices'
feature maps are aggregated the same way (max / avg over devices, or channel concatenation)
and the edge/cloud part of the network gives the final decision. The threshold follows
:func:`edgeweave.adapt.exits.exit_mask`: ``threshold >= 1`` exits everything locally, a
negative threshold sends everything to the cloud.

Communication accounting (per sample, all devices together, float32 = 4 bytes a value):

* local exit: ``n_devices * num_classes * 4`` bytes (each device's exit vector to the local
  aggregator);
* cloud exit: the above plus ``n_devices * feature_values * feature_bits / 8`` bytes (each
  device's feature map; ``feature_bits`` is 32 for fp32, the default; DDNN itself used
  binarized device networks, i.e. 1 bit a value, which ``feature_bits=1`` models);
* raw upload baseline: ``n_devices * pixels * 4`` bytes -- every device uploading its raw
  input as fp32 (the conservative, consistent choice; an 8-bit sensor would send 1/4 of it).

Note that on 8x8 digits the default device feature map (8 channels x 4 x 4 = 128 values) is
*larger* than the raw 64-pixel view, so cloud exits cost more than raw upload; the savings
come from the samples that exit locally (or from narrower / binarized features).

:func:`make_views` synthesizes the multi-view setting from single images (see its doc).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from edgeweave.adapt.exit_rules import exit_mask
from edgeweave.adapt.fit import fit
from edgeweave.errors import EdgeWeaveError

AGGREGATIONS = ("max", "avg", "concat")
FLOAT_BYTES = 4


class DDNNError(EdgeWeaveError):
    """A DDNN model or request is malformed (aggregation, number of views, shapes)."""


def make_views(x: torch.Tensor, n_devices: int, seed: int = 0, shift: int = 1,
               sigma: float = 0.15, patch: int = 3, per_sample_shift: bool = False,
               camera_seed: int = 0               ) -> torch.Tensor:
    """Deterministic synthetic "camera views" of images ``x`` (N, C, H, W) for ``n_devices``.

    Device ``i`` sees every image

    1. translated by an offset in ``[-shift, shift]`` pixels along each axis (zero padding;
       content shifted out is lost). By default the offset is fixed per device -- its
       camera's viewpoint -- drawn from a generator seeded with ``(camera_seed, i)``, so it
       is the same for the train and test splits whatever ``seed`` is;
       ``per_sample_shift=True`` draws a new offset for every sample instead (harder);
    2. with one random ``patch`` x ``patch`` square occluded (set to 0), per sample;
    3. with its own additive Gaussian noise of std ``sigma``;

    then clamped to [0, 1]. Occlusion and noise come from a generator seeded with
    ``(seed, i)`` only, so device 0's views do not depend on ``n_devices``; use a different
    ``seed`` per split. A single view is thus noisier and less complete than the event
    itself, while several views together carry more of it.

    Returns a tensor of shape (n_devices, N, C, H, W).
    """
    if x.dim() != 4:
        raise DDNNError(f"make_views expects (N, C, H, W) images, got shape {tuple(x.shape)}")
    if n_devices < 1:
        raise DDNNError(f"n_devices must be >= 1, got {n_devices}")
    n, _, h, w = x.shape
    if patch > min(h, w):
        raise DDNNError(f"occlusion patch {patch} larger than the image {h}x{w}")
    x = x.float()
    padded = F.pad(x, (shift, shift, shift, shift))
    rows = torch.arange(h)
    cols = torch.arange(w)
    views = []
    for i in range(n_devices):
        gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + i)
        if per_sample_shift:
            dy = torch.randint(-shift, shift + 1, (n,), generator=gen)
            dx = torch.randint(-shift, shift + 1, (n,), generator=gen)
        else:  # one fixed offset per device: its camera's viewpoint, the same for every split
            cam = torch.Generator().manual_seed(int(camera_seed) * 1_000_003 + i)
            dy = torch.randint(-shift, shift + 1, (1,), generator=cam).expand(n)
            dx = torch.randint(-shift, shift + 1, (1,), generator=cam).expand(n)
        view = torch.empty_like(x)
        for oy in range(-shift, shift + 1):
            for ox in range(-shift, shift + 1):
                sel = (dy == oy) & (dx == ox)
                if sel.any():
                    # content moves by (oy, ox): output[r, c] = input[r - oy, c - ox]
                    view[sel] = padded[sel, :, shift - oy: shift - oy + h,
                                       shift - ox: shift - ox + w]
        r0 = torch.randint(0, h - patch + 1, (n,), generator=gen)
        c0 = torch.randint(0, w - patch + 1, (n,), generator=gen)
        rmask = (rows[None, :] >= r0[:, None]) & (rows[None, :] < r0[:, None] + patch)
        cmask = (cols[None, :] >= c0[:, None]) & (cols[None, :] < c0[:, None] + patch)
        occluded = rmask[:, :, None] & cmask[:, None, :]  # (N, H, W)
        view = view.masked_fill(occluded[:, None], 0.0)
        view = view + sigma * torch.randn(view.shape, generator=gen)
        views.append(view.clamp(0.0, 1.0))
    return torch.stack(views)


class DDNN(nn.Module):
    """Devices (conv feature extractor + local exit head each), local aggregator, cloud part.

    Each device: ``Conv2d(in_channels, channels, 3, padding=1) + ReLU + MaxPool2d(2)``, giving
    a ``channels x (H/2) x (W/2)`` feature map, and a linear local exit head on it. The cloud
    part takes the aggregated feature map: ``Conv2d(., 32, 3, padding=1) + ReLU + Linear``.
    """

    def __init__(self, n_devices: int = 3, aggregation: str = "max", num_classes: int = 10,
                 in_channels: int = 1, image_size: int = 8, channels: int = 8):
        super().__init__()
        if aggregation not in AGGREGATIONS:
            raise DDNNError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        if n_devices < 1:
            raise DDNNError(f"n_devices must be >= 1, got {n_devices}")
        if image_size < 2 or image_size % 2:
            raise DDNNError(f"image_size must be even and >= 2, got {image_size}")
        self.n_devices = n_devices
        self.aggregation = aggregation
        self.num_classes = num_classes
        self.input_shape = (in_channels, image_size, image_size)
        side = image_size // 2
        self.feature_shape = (channels, side, side)
        self.feature_values = channels * side * side
        self.devices = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(),
                          nn.MaxPool2d(2))
            for _ in range(n_devices))
        self.local_heads = nn.ModuleList(
            nn.Sequential(nn.Flatten(), nn.Linear(self.feature_values, num_classes))
            for _ in range(n_devices))
        concat = aggregation == "concat"
        self.local_aggregator = (nn.Linear(n_devices * num_classes, num_classes) if concat
                                 else None)
        cloud_in = channels * n_devices if concat else channels
        self.cloud = nn.Sequential(nn.Conv2d(cloud_in, 32, 3, padding=1), nn.ReLU(),
                                   nn.Flatten(), nn.Linear(32 * side * side, num_classes))

    def check_views(self, views: torch.Tensor) -> None:
        if not isinstance(views, torch.Tensor) or views.dim() != 5:
            shape = tuple(views.shape) if isinstance(views, torch.Tensor) else type(views)
            raise DDNNError(f"views must be (n_devices, N, C, H, W), got {shape}")
        if views.shape[0] != self.n_devices:
            raise DDNNError(f"model has {self.n_devices} devices but got {views.shape[0]} views")
        if tuple(views.shape[2:]) != self.input_shape:
            raise DDNNError(f"each view must be (N, {', '.join(map(str, self.input_shape))}),"
                            f" got {tuple(views.shape[1:])}")

    def _aggregate(self, stacked: torch.Tensor, concat_dim: int) -> torch.Tensor:
        """Aggregate (n_devices, N, ...) over devices (max / mean / concat)."""
        if self.aggregation == "max":
            return stacked.max(0).values
        if self.aggregation == "avg":
            return stacked.mean(0)
        return torch.cat(list(stacked), dim=concat_dim)

    def device_outputs(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (n_devices, N, C', H', W'), per-device exit vectors (n_devices, N, K))."""
        self.check_views(views)
        feats = torch.stack([dev(v) for dev, v in zip(self.devices, views, strict=True)])
        exits = torch.stack([head(f) for head, f in zip(self.local_heads, feats, strict=True)])
        return feats, exits

    def _heads(self, feats: torch.Tensor, exits: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        local = self._aggregate(exits, concat_dim=1)
        if self.local_aggregator is not None:
            local = self.local_aggregator(local)
        cloud = self.cloud(self._aggregate(feats, concat_dim=1))
        return local, cloud

    def forward(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``views`` (n_devices, N, C, H, W) -> (local_logits, cloud_logits), each (N, K)."""
        return self._heads(*self.device_outputs(views))

    def bytes_local(self) -> int:
        """Bytes a locally-exiting sample sends: every device's exit vector, fp32."""
        return self.n_devices * self.num_classes * FLOAT_BYTES

    def bytes_cloud(self, feature_bits: int = 32) -> float:
        """Bytes a cloud-exiting sample sends: exit vectors plus every device's feature map."""
        return self.bytes_local() + self.n_devices * self.feature_values * feature_bits / 8

    def raw_upload_bytes(self) -> int:
        """Bytes of every device uploading its raw input as fp32."""
        c, h, w = self.input_shape
        return self.n_devices * c * h * w * FLOAT_BYTES

    @torch.no_grad()
    def infer(self, views: torch.Tensor, threshold: float, feature_bits: int = 32
              ) -> DDNNInference:
        """Staged inference: local exit when normalized entropy <= threshold, else cloud."""
        if feature_bits < 1:
            raise DDNNError(f"feature_bits must be >= 1, got {feature_bits}")
        self.eval()
        local, cloud = self(views)
        is_local = exit_mask(local, float(threshold), "entropy")
        preds = torch.where(is_local, local.argmax(1), cloud.argmax(1))
        sent = torch.where(is_local, torch.tensor(float(self.bytes_local())),
                           torch.tensor(float(self.bytes_cloud(feature_bits))))
        return DDNNInference(predictions=preds, local_exit=is_local, bytes_per_sample=sent,
                             raw_upload_bytes=self.raw_upload_bytes())


@dataclass
class DDNNInference:
    """Result of :meth:`DDNN.infer`: per-sample predictions, exit taken (True = local) and
    bytes sent by all devices together; ``raw_upload_bytes`` is the per-sample raw baseline."""

    predictions: torch.Tensor
    local_exit: torch.Tensor
    bytes_per_sample: torch.Tensor
    raw_upload_bytes: int


def _device_major(views: torch.Tensor) -> torch.Tensor:
    return views.transpose(0, 1)


def train_ddnn(model: DDNN, views: torch.Tensor, y: torch.Tensor, epochs: int = 20,
               seed: int = 0, lr: float = 3e-3, batch: int = 64,
               local_weight: float = 1.0, cloud_weight: float = 1.0) -> DDNN:
    """Joint training, as DDNN does: ``local_weight * CE(local) + cloud_weight * CE(cloud)``."""
    model.check_views(views)
    if views.shape[1] != len(y):
        raise DDNNError(f"{views.shape[1]} samples per view but {len(y)} labels")

    def loss(m, xb, yb):
        local, cloud = m(_device_major(xb))
        return (local_weight * F.cross_entropy(local, yb)
                + cloud_weight * F.cross_entropy(cloud, yb))

    # fit() indexes samples along dim 0, so hand it (N, n_devices, C, H, W)
    return fit(model, _device_major(views).contiguous(), y, epochs=epochs, lr=lr, batch=batch,
               seed=seed, loss_fn=loss)


@torch.no_grad()
def ddnn_report(model: DDNN, views: torch.Tensor, y: torch.Tensor, threshold: float,
                feature_bits: int = 32) -> dict:
    """Accuracy (overall, of local exits, of cloud exits), local-exit fraction, bytes.

    Also reports the local-only and cloud-only accuracies and each device's own local-exit
    accuracy (a single view alone), for comparing aggregation against single devices.
    Accuracies over an empty set of samples are ``nan``.
    """
    res = model.infer(views, threshold, feature_bits=feature_bits)
    correct = res.predictions == y
    loc = res.local_exit

    def acc(mask: torch.Tensor) -> float:
        return float(correct[mask].float().mean()) if mask.any() else float("nan")

    feats, exits = model.device_outputs(views)
    local, cloud = model._heads(feats, exits)
    mean_bytes = float(res.bytes_per_sample.mean())
    return {
        "n_devices": model.n_devices,
        "aggregation": model.aggregation,
        "threshold": float(threshold),
        "accuracy": float(correct.float().mean()),
        "local_exit_accuracy": acc(loc),
        "cloud_exit_accuracy": acc(~loc),
        "fraction_local": float(loc.float().mean()),
        "mean_bytes_per_sample": mean_bytes,
        "raw_upload_bytes": res.raw_upload_bytes,
        "reduction_factor": res.raw_upload_bytes / mean_bytes,
        "local_only_accuracy": float((local.argmax(1) == y).float().mean()),
        "cloud_only_accuracy": float((cloud.argmax(1) == y).float().mean()),
        "device_local_accuracy": [float((e.argmax(1) == y).float().mean()) for e in exits],
        "feature_bits": feature_bits,
    }
