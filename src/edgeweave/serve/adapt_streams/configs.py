"""A stream's configurations (VideoStorm, Zhang et al. NSDI 2017; Chameleon, Jiang et al.
SIGCOMM 2018): input resolution x model variant, each with its accuracy measured on held-out
data and its compute cost per frame measured on this host. The third knob, frame rate, is
applied by the allocator (:mod:`.allocate`) through the same quality metric the stem scheduler
uses (:mod:`edgeweave.serve.stems.quality`).

Resolution is real: the 8x8 digits are resized to ``side`` x ``side`` (area averaging below 8,
so detail is really lost) and each resolution gets its own model, the zoo's ``digits-cnn``
with its first Linear sized for the smaller feature map, so compute falls with the square of
the side, as a detector's does. Variants are :mod:`edgeweave.adapt.compress`'s, derived from
that model: int8 (dynamic), filter-pruned, low-rank and distilled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from edgeweave.adapt import compress
from edgeweave.adapt.datasets import Split, digits
from edgeweave.adapt.fit import accuracy, fit
from edgeweave.graph.digits import DigitsCNN
from edgeweave.serve.stems.costs import ms_per_frame
from edgeweave.serve.stems.errors import TenancyError

#: The digits' own side; smaller resolutions lose detail, larger ones would only cost more.
NATIVE_SIDE = 8
RESOLUTIONS = (8, 6, 4)


def digits_cnn_at(side: int) -> nn.Sequential:
    """``digits-cnn`` for ``side`` x ``side`` input (identical to the zoo's at 8)."""
    if isinstance(side, bool) or not isinstance(side, int) or side < 2 or side % 2:
        raise TenancyError(f"resolution: expected an even side >= 2 pixels, got {side!r}")
    model = DigitsCNN()
    if side != NATIVE_SIDE:
        model[6] = nn.Linear(32 * (side // 2) ** 2, 64)
    return model


def resize(x: torch.Tensor, side: int) -> torch.Tensor:
    """Frames at ``side`` x ``side``: area-averaged down (detail really lost), bilinear up."""
    if x.shape[-1] == side:
        return x
    mode = "area" if side < x.shape[-1] else "bilinear"
    return F.interpolate(x, size=(side, side), mode=mode)


def _variants(base: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int
              ) -> dict[str, Callable[[], nn.Module]]:
    """How each variant derives from the trained ``base`` (built lazily, only those asked for)."""
    return {
        "fp32": lambda: base,
        "int8": lambda: compress.quantize_dynamic(base).module,
        "pruned": lambda: compress.filter_prune(base, 0.5, x=x, y=y, epochs=max(1, epochs // 2),
                                                seed=seed).module,
        "low-rank": lambda: compress.low_rank(base, 8, x=x, y=y, epochs=max(1, epochs // 2),
                                              seed=seed).module,
        "distilled": lambda: compress.distill(base, x, y, width=0.5, epochs=epochs,
                                              seed=seed).module,
    }


VARIANTS = ("fp32", "int8", "pruned", "low-rank", "distilled")


@dataclass(frozen=True)
class StreamConfig:
    """One resolution x variant: held-out accuracy and CPU ms per frame (at a batch)."""

    resolution: int
    variant: str
    accuracy: float
    ms_per_frame: float

    @property
    def name(self) -> str:
        return f"{self.resolution}px-{self.variant}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self)}


def measure_configs(data: Split | None = None, resolutions: Sequence[int] = RESOLUTIONS,
                    variants: Sequence[str] = VARIANTS, epochs: int = 6, seed: int = 0,
                    batch: int = 64) -> list[StreamConfig]:
    """Train a model per resolution, derive the variants, and measure every configuration's
    accuracy (test split) and cost (ms per frame on a batch of ``batch`` test frames)."""
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or not variants:
        raise TenancyError(f"variants: expected some of {', '.join(VARIANTS)}, got "
                           f"{list(variants)}")
    if not resolutions:
        raise TenancyError("resolutions: expected at least one side")
    data = data or digits(seed=seed)
    out = []
    for side in resolutions:
        torch.manual_seed(seed)
        x, xt = resize(data.x_train, side), resize(data.x_test, side)
        base = fit(digits_cnn_at(side), x, data.y_train, epochs=epochs, seed=seed)
        made = _variants(base, x, data.y_train, epochs, seed)
        for name in variants:
            model = made[name]().eval()
            out.append(StreamConfig(side, name, accuracy(model, xt, data.y_test),
                                    ms_per_frame(model, xt[:batch])))
    return out
