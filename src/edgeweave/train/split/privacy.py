"""Privacy for the activations a device sends at a model cut: small transforms that compose.

A transform acts on the device, before anything leaves it: :meth:`ActivationPrivacy.on_input`
perturbs the raw input before the device layers, :meth:`ActivationPrivacy.on_activation`
perturbs the cut-layer output before it is encoded. Both stay inside autograd (clipping is a
differentiable rescale, noise and masks are constants added or multiplied in), so the gradient
the edge returns drives an exact backward pass through the function that was really computed.

* :class:`ClipNoise` -- Mao et al. 2018, "Learning from differentially private neural
  activations with edge computing": bound each sample's activation norm by ``clip`` (L2 for
  Gaussian noise, L1 for Laplace), then add noise calibrated to that bound. Any two inputs give
  clipped activations at most ``2 * clip`` apart, so each released activation is a Gaussian (or
  Laplace) mechanism on that sample with sensitivity ``2 * clip``.
* :class:`Nullify` -- Arden's "arbitrary data nullification" (Wang et al. 2018, "Not just
  privacy: improving performance of private deep learning in mobile cloud"): each entry is
  zeroed independently with probability ``rate`` (no rescaling, unlike dropout).
* :func:`arden` -- nullification of the input, then the device layers, then clipping and
  Laplace (or Gaussian) noise on the activations. Arden's "noisy training" (the cloud-side
  network learns on perturbed representations so it is robust to them) is what split learning
  does anyway: the edge layers only ever see the perturbed activations, and private inference
  applies the same transform.

What the guarantees cover, and what they do not (see :meth:`ActivationPrivacy.guarantee`):
the (epsilon, delta) figure bounds what anyone who sees the transmitted activations (the edge,
an eavesdropper, anything computed from them) learns about ONE sample's input features,
accumulated over every time that sample's activation is sent (once per epoch, plus any private
inference). It does NOT cover: the labels (vanilla split learning sends them to the edge in the
clear); the device-side weights handed to the next client in sequential split learning (trained
on raw data, so the next client -- or the edge relaying them -- sees an un-noised function of
this client's data); membership in the batch and batch sizes; or side channels such as timing.
Nullification alone has no formal DP guarantee; Arden argues it amplifies the noise's
protection, but this module credits only the noise (a conservative bound).
"""

from __future__ import annotations

import math
from abc import ABC
from collections.abc import Sequence
from typing import Any

import torch

from edgeweave.train.types import TrainError

DEFAULT_DELTA = 1e-5


class ActivationPrivacy(ABC):  # noqa: B024  (every hook has a sensible identity default)
    """A device-side perturbation of the input and/or the cut activations."""

    name: str = "identity"

    def on_input(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Perturb the raw input before the device layers (default: unchanged)."""
        return x

    def on_activation(self, a: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Perturb the cut-layer output before it is encoded and sent (default: unchanged)."""
        return a

    def guarantee(self, releases: int, delta: float = DEFAULT_DELTA) -> dict[str, Any]:
        """The formal per-sample guarantee after ``releases`` activations of one sample were
        sent: ``{"epsilon": ..., "delta": ..., "mechanism": ..., "covers": ...}``;
        ``epsilon`` is ``inf`` for transforms without a formal guarantee."""
        return {"mechanism": self.name, "epsilon": math.inf, "delta": 0.0,
                "covers": "nothing formal"}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


def _gaussian_epsilon(noise_multiplier: float, releases: int, delta: float) -> float:
    """epsilon of ``releases`` Gaussian mechanisms with std = noise_multiplier * sensitivity,
    composed by RDP (Opacus's accountant; no subsampling amplification: q = 1)."""
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 256))
    rdp = compute_rdp(q=1.0, noise_multiplier=noise_multiplier, steps=releases, orders=orders)
    eps, _ = get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
    return float(eps)


class ClipNoise(ActivationPrivacy):
    """Per-sample norm clipping of the activations plus calibrated noise (Mao et al. 2018).

    ``noise_multiplier`` is the noise scale in units of ``clip``: Gaussian std
    ``noise_multiplier * clip`` per entry (after L2 clipping), or Laplace scale ``b =
    noise_multiplier * clip`` per entry (after L1 clipping, the norm the Laplace mechanism is
    calibrated to). Sensitivity of one sample's clipped activation is ``2 * clip``.
    """

    def __init__(self, clip: float, noise_multiplier: float,
                 mechanism: str = "gaussian") -> None:
        if not clip > 0 or not math.isfinite(clip):
            raise TrainError(f"activation privacy: clip must be a positive number, got {clip}")
        if not noise_multiplier >= 0 or not math.isfinite(noise_multiplier):
            raise TrainError(f"activation privacy: noise_multiplier must be >= 0, got "
                             f"{noise_multiplier}")
        if mechanism not in ("gaussian", "laplace"):
            raise TrainError(f"activation privacy: mechanism {mechanism!r} is unknown; expected "
                             "'gaussian' or 'laplace'")
        self.clip, self.noise_multiplier, self.mechanism = clip, noise_multiplier, mechanism
        self.name = f"clip-{mechanism}"

    @property
    def norm_ord(self) -> int:
        return 2 if self.mechanism == "gaussian" else 1

    def clip_samples(self, a: torch.Tensor) -> torch.Tensor:
        """Rescale each sample (row of axis 0) to norm at most ``clip``; differentiable."""
        flat = a.reshape(a.shape[0], -1)
        norms = torch.linalg.vector_norm(flat, ord=self.norm_ord, dim=1)
        # clamp_min keeps the divide finite for an all-zero activation (factor is then 1)
        factor = (self.clip / norms.clamp_min(1e-12)).clamp(max=1.0)
        return a * factor.reshape((-1,) + (1,) * (a.dim() - 1))

    def on_activation(self, a: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        clipped = self.clip_samples(a)
        if self.noise_multiplier == 0:
            return clipped
        scale = self.noise_multiplier * self.clip
        if self.mechanism == "gaussian":
            noise = torch.randn(a.shape, generator=gen, dtype=a.dtype) * scale
        else:
            # Laplace(0, b) = b * (E1 - E2) with E1, E2 ~ Exp(1): two draws from the same
            # generator keep the transform reproducible from a seed
            u = torch.rand((2, *a.shape), generator=gen, dtype=torch.float64)
            e = -torch.log1p(-u)
            noise = ((e[0] - e[1]) * scale).to(a.dtype)
        return clipped + noise

    def guarantee(self, releases: int, delta: float = DEFAULT_DELTA) -> dict[str, Any]:
        covers = ("one sample's input features, against everything derived from its transmitted "
                  "activations; not labels, not the handed-on device weights")
        if self.noise_multiplier == 0 or releases < 1:
            eps = math.inf if releases >= 1 else 0.0
            return {"mechanism": self.name, "epsilon": eps, "delta": 0.0, "covers": covers}
        if self.mechanism == "laplace":
            # Laplace with scale b on an L1 sensitivity of 2 * clip: epsilon = 2 clip / b per
            # release, composed linearly (pure DP)
            eps = releases * 2.0 / self.noise_multiplier
            return {"mechanism": self.name, "epsilon": eps, "delta": 0.0, "covers": covers}
        eps = _gaussian_epsilon(self.noise_multiplier / 2.0, releases, delta)
        return {"mechanism": self.name, "epsilon": eps, "delta": delta, "covers": covers}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "clip": self.clip, "noise_multiplier": self.noise_multiplier}


class Nullify(ActivationPrivacy):
    """Zero each entry independently with probability ``rate`` (Arden's nullification), on the
    raw input (``where="input"``, as Arden does) or on the activations."""

    def __init__(self, rate: float, where: str = "input") -> None:
        if not 0 <= rate < 1:
            raise TrainError(f"activation privacy: nullification rate must be in [0, 1), got "
                             f"{rate}")
        if where not in ("input", "activation"):
            raise TrainError(f"activation privacy: where={where!r}; expected 'input' or "
                             "'activation'")
        self.rate, self.where = rate, where
        self.name = f"nullify-{where}"

    def _mask(self, t: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.rate == 0:
            return t
        keep = torch.rand(t.shape, generator=gen) >= self.rate
        return t * keep.to(t.dtype)

    def on_input(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return self._mask(x, gen) if self.where == "input" else x

    def on_activation(self, a: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return self._mask(a, gen) if self.where == "activation" else a

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "rate": self.rate}


class Compose(ActivationPrivacy):
    """Apply transforms in order (inputs in order, then activations in order)."""

    def __init__(self, transforms: Sequence[ActivationPrivacy], name: str = "compose") -> None:
        if not transforms:
            raise TrainError("activation privacy: compose needs at least one transform")
        self.transforms = list(transforms)
        self.name = name

    def on_input(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        for t in self.transforms:
            x = t.on_input(x, gen)
        return x

    def on_activation(self, a: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        for t in self.transforms:
            a = t.on_activation(a, gen)
        return a

    def guarantee(self, releases: int, delta: float = DEFAULT_DELTA) -> dict[str, Any]:
        # Post-processing: the noise mechanism's bound holds whatever else is applied; only
        # the tightest formal member is credited (nullification has none).
        best = min((t.guarantee(releases, delta) for t in self.transforms),
                   key=lambda g: g["epsilon"])
        return dict(best, mechanism=self.name)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "parts": [t.describe() for t in self.transforms]}


def arden(rate: float, clip: float, noise_multiplier: float,
          mechanism: str = "laplace") -> Compose:
    """Arden (Wang et al. 2018): nullify the input at ``rate``, run the device layers, clip and
    add noise to the activations."""
    return Compose([Nullify(rate, "input"), ClipNoise(clip, noise_multiplier, mechanism)],
                   name="arden")


def privacy_from_spec(spec: str | None) -> ActivationPrivacy | None:
    """Parse ``"gaussian:CLIP,MULT"``, ``"laplace:CLIP,MULT"``, ``"nullify:RATE"`` or
    ``"arden:RATE,CLIP,MULT"`` (None / "" / "none": no transform); for CLIs and benchmarks."""
    if spec is None or spec in ("", "none"):
        return None
    kind, _, args = spec.partition(":")
    try:
        nums = [float(a) for a in args.split(",") if a.strip()]
    except ValueError:
        raise TrainError(f"activation privacy {spec!r}: arguments must be numbers") from None
    want = {"gaussian": 2, "laplace": 2, "nullify": 1, "arden": 3}
    if kind not in want:
        raise TrainError(f"activation privacy {spec!r}: unknown kind {kind!r}; expected "
                         "gaussian:CLIP,MULT, laplace:CLIP,MULT, nullify:RATE or "
                         "arden:RATE,CLIP,MULT")
    if len(nums) != want[kind]:
        raise TrainError(f"activation privacy {spec!r}: {kind} takes {want[kind]} number(s), "
                         f"got {len(nums)}")
    if kind in ("gaussian", "laplace"):
        return ClipNoise(nums[0], nums[1], kind)
    if kind == "nullify":
        return Nullify(nums[0])
    return arden(nums[0], nums[1], nums[2])
