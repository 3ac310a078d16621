"""Video streams of a static scene in which objects appear a chosen fraction of the time: the
workload an input filter exists for (NoScope, FFS-VA: most frames of a fixed camera hold
nothing of interest).

The scene is a crop of one of the real photographs scikit-learn ships (``china.jpg``,
``flower.jpg``), area-downsampled to the frame size. Objects are real handwritten digits,
enlarged, varied (:mod:`~edgeweave.serve.workloads.variation`), given an ink colour and moved in
a straight line across the scene during an *episode*; episodes and the gaps between them are
laid out so exactly ``round(occurrence * frames)`` frames hold an object. Every frame gets a slow
sinusoidal lighting drift (gain) and fresh Gaussian camera noise, and is stored as 8-bit RGB as
a camera would deliver it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage

from edgeweave.errors import ServeError
from edgeweave.serve.stage import check_fraction, check_positive_int
from edgeweave.serve.workloads.variation import Variation, view

#: Class of a frame with no object in it.
BACKGROUND = -1


@dataclass(frozen=True)
class VideoStream:
    frames: torch.Tensor   #: (N, 3, H, W) uint8
    classes: np.ndarray    #: per frame the object's class, or BACKGROUND
    description: str

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def present(self) -> np.ndarray:
        return self.classes != BACKGROUND

    def as_float(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Frames ``start:stop`` as float32 in [0, 1], the models' input."""
        return self.frames[start:stop].float() / 255.0


@dataclass(frozen=True)
class Scene:
    """How the stream looks: frame size, object size, episode lengths, drift and noise."""

    size: int = 32
    object_px: int = 14
    episode: tuple[int, int] = (30, 90)   #: frames per episode, uniform in this range
    drift: float = 0.15                   #: lighting gain amplitude
    drift_period: int = 900               #: frames per lighting cycle (30 s at 30 frame/s)
    noise: float = 0.02                   #: camera noise sd, in [0, 1] pixel units
    variation: Variation = field(default_factory=lambda: Variation(
        shift_px=0.0, rotate_deg=15.0, gain=0.0, offset=0.0, noise=0.0))


def video_stream(digits: torch.Tensor, digit_labels: torch.Tensor, *, frames: int,
                 occurrence: float, seed: int = 0, camera: int = 0,
                 scene: Scene | None = None) -> VideoStream:
    """A stream of ``frames`` frames from fixed camera number ``camera`` (which picks the
    photograph and the crop), objects drawn from ``digits`` ``(M, 1, 8, 8)``; ``seed`` draws
    everything else (episodes, objects, drift phase, noise)."""
    check_positive_int(frames, "frames")
    occ = check_fraction(occurrence, "occurrence")
    scene = scene or Scene()
    if len(digits) == 0 or len(digits) != len(digit_labels):
        raise ServeError("the object pool is empty or its labels do not match it")
    photo, name, box = _scene(scene.size, np.random.default_rng([camera, 7]))
    rng = np.random.default_rng(seed)
    episodes = _episodes(frames, occ, scene.episode, rng)
    classes = np.full(frames, BACKGROUND, dtype=np.int64)
    layers = np.zeros((frames, 3, scene.size, scene.size), dtype=np.float32)
    alpha = np.zeros((frames, 1, scene.size, scene.size), dtype=np.float32)
    pool = digits[:, 0].numpy()
    for start, length in episodes:
        pick = int(rng.integers(len(pool)))
        classes[start:start + length] = int(digit_labels[pick])
        _render(pool[pick], start, length, scene, photo, rng, layers, alpha)
    phase = rng.uniform(0, 2 * math.pi)
    t = np.arange(frames, dtype=np.float32)
    gain = 1 + scene.drift * np.sin(2 * math.pi * t / scene.drift_period + phase)
    out = (photo[None] * (1 - alpha) + layers * alpha) * gain[:, None, None, None]
    out += rng.normal(0.0, scene.noise, size=out.shape).astype(np.float32)
    pixels = np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)
    return VideoStream(
        frames=torch.from_numpy(pixels),
        classes=classes,
        description=(
            f"{frames} frames {scene.size}x{scene.size} RGB uint8 (camera {camera}, seed "
            f"{seed}): scene = crop {box} of sklearn's {name}, area-downsampled; "
            f"{len(episodes)} episodes of "
            f"U{{{scene.episode[0]}..{scene.episode[1]}}} frames in which one real "
            f"handwritten digit ({scene.object_px} px, {scene.variation.describe()}, random "
            f"ink colour, dark on a bright path, bright on a dark one) moves in a straight "
            f"line, {int((classes != BACKGROUND).sum())} object frames ({occ:.0%} asked); "
            f"lighting gain 1 + {scene.drift:g} "
            f"sin(2 pi t / {scene.drift_period}); camera noise sd {scene.noise:g}"),
    )


def _scene(size: int, rng: np.random.Generator) -> tuple[np.ndarray, str, tuple[int, ...]]:
    """A random square crop of a real photograph, (3, size, size) in [0, 1]."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images()
    k = int(rng.integers(len(photos.images)))
    img = photos.images[k].astype(np.float32) / 255.0
    side = int(rng.integers(size * 3, min(img.shape[:2]) // 2))
    y, x = int(rng.integers(img.shape[0] - side)), int(rng.integers(img.shape[1] - side))
    crop = img[y:y + side, x:x + side]
    small = ndimage.zoom(crop, (size / side, size / side, 1), order=1, grid_mode=True,
                         mode="nearest")[:size, :size]
    name = photos.filenames[k].replace("\\", "/").rsplit("/", 1)[-1]
    return small.transpose(2, 0, 1).copy(), name, (y, x, side, side)


def _episodes(frames: int, occ: float, length: tuple[int, int], rng: np.random.Generator
              ) -> list[tuple[int, int]]:
    """(start, length) of episodes holding exactly round(occ * frames) frames in total, with
    the remaining frames split into random gaps before, between and after them."""
    total = round(occ * frames)
    lengths: list[int] = []
    while sum(lengths) < total:
        lengths.append(int(rng.integers(length[0], length[1] + 1)))
    if lengths:
        lengths[-1] -= sum(lengths) - total
    lengths = [n for n in lengths if n > 0]
    cuts = np.sort(rng.integers(0, frames - total + 1, size=len(lengths)))
    gaps = np.diff(np.concatenate([[0], cuts]))
    starts, pos = [], 0
    for gap, n in zip(gaps, lengths, strict=True):
        pos += int(gap)
        starts.append(pos)
        pos += n
    return list(zip(starts, lengths, strict=True))


def _ink(photo: np.ndarray, p0: np.ndarray, p1: np.ndarray, side: int,
         rng: np.random.Generator) -> np.ndarray:
    """A random ink colour that stands out from the scene along the object's path: dark on a
    bright background, bright on a dark one (an object nobody could see is not in the frame)."""
    lo, hi = np.minimum(p0, p1).astype(int), np.maximum(p0, p1).astype(int) + side
    background = float(photo[:, lo[0]:hi[0], lo[1]:hi[1]].mean())
    colour = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
    return colour * 0.3 if background > 0.45 else 0.6 + 0.4 * colour


def _render(digit: np.ndarray, start: int, length: int, scene: Scene, photo: np.ndarray,
            rng: np.random.Generator, layers: np.ndarray, alpha: np.ndarray) -> None:
    """Draw one episode's moving, coloured digit into ``layers`` / ``alpha``."""
    big = np.clip(ndimage.zoom(digit, scene.object_px / digit.shape[0], order=1), 0, 1)
    ink = view(big, scene.variation, rng)
    room = scene.size - ink.shape[0]
    p0, p1 = rng.uniform(0, room, size=2), rng.uniform(0, room, size=2)
    colour = _ink(photo, p0, p1, ink.shape[0], rng)
    for i in range(length):
        y, x = np.rint(p0 + (p1 - p0) * (i / max(1, length - 1))).astype(int)
        h, w = ink.shape
        f = start + i
        alpha[f, 0, y:y + h, x:x + w] = ink
        layers[f, :, y:y + h, x:x + w] = colour[:, None, None]
