"""How one real image looks different each time a camera sees it: a sub-pixel shift, a small
rotation, a lighting change (gain and offset) and sensor noise. Shared by the recurring-image
and the video workloads so both describe their variation the same way."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Variation:
    """Ranges of one view's variation; each view draws uniformly inside them."""

    shift_px: float = 0.6        #: translation in x and y, each in [-shift_px, shift_px]
    rotate_deg: float = 10.0     #: rotation in [-rotate_deg, rotate_deg] about the centre
    gain: float = 0.2            #: brightness multiplied by a factor in [1 - gain, 1 + gain]
    offset: float = 0.05         #: then shifted by an offset in [-offset, offset]
    noise: float = 0.03          #: then Gaussian noise with this standard deviation, clipped

    def describe(self) -> str:
        parts = [
            (self.shift_px, f"shift U(-{self.shift_px:g}, {self.shift_px:g}) px in x and y"),
            (self.rotate_deg,
             f"rotation U(-{self.rotate_deg:g}, {self.rotate_deg:g}) deg (bilinear)"),
            (self.gain, f"lighting gain U({1 - self.gain:g}, {1 + self.gain:g})"),
            (self.offset, f"lighting offset U(-{self.offset:g}, {self.offset:g})"),
            (self.noise, f"Gaussian noise sd {self.noise:g}"),
        ]
        said = [text for amount, text in parts if amount > 0]
        return ", ".join(said) + ", clipped to [0, 1]" if said else "no variation"


def view(image: np.ndarray, variation: Variation, rng: np.random.Generator) -> np.ndarray:
    """One varied view of a 2-D image with values in [0, 1] (same shape, float32)."""
    v = variation
    angle = math.radians(rng.uniform(-v.rotate_deg, v.rotate_deg))
    shift = rng.uniform(-v.shift_px, v.shift_px, size=2)
    warped = warp(image, angle, shift)
    lit = warped * rng.uniform(1 - v.gain, 1 + v.gain) + rng.uniform(-v.offset, v.offset)
    noisy = lit + rng.normal(0.0, v.noise, size=image.shape) if v.noise > 0 else lit
    return np.clip(noisy, 0.0, 1.0).astype(np.float32)


def warp(image: np.ndarray, angle_rad: float, shift: np.ndarray) -> np.ndarray:
    """Rotate about the centre by ``angle_rad`` and translate by ``shift`` (rows, cols),
    bilinear, zero outside (the background of the digits)."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    rot = np.array([[c, -s], [s, c]])
    centre = (np.array(image.shape, dtype=float) - 1) / 2
    # affine_transform maps output coordinates to input ones: in = R^-1 (out - centre - shift)
    # + centre, and R^-1 = R^T for a rotation.
    inv = rot.T
    offset = centre - inv @ (centre + shift)
    return ndimage.affine_transform(image, inv, offset=offset, order=1, mode="constant",
                                    cval=0.0)


def augment(images: np.ndarray, variation: Variation, copies: int, seed: int = 0
            ) -> np.ndarray:
    """``copies`` varied views of every 2-D image in ``images`` ``(M, H, W)``, image-major:
    training data for a model that must label varied views consistently."""
    rng = np.random.default_rng(seed)
    return np.stack([view(img, variation, rng) for img in images for _ in range(copies)])
