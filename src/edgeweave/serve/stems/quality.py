"""What a tenant gets out of a frame rate and a per-frame accuracy: the scheduler's objective.

Two metrics, chosen by name:

* ``event`` (the default), Mainstream's (Jiang et al., ATC 2018): a tenant watches for events
  that last ``event_s`` seconds; sampling at ``fps`` it sees ``k = fps * event_s`` frames of an
  event, and it detects the event unless it misclassifies every one of them. With frame errors
  taken as independent (Mainstream's simplification), the detection probability is
  ``1 - (1 - a)^k``; below one frame per event (``k < 1``) an event is sampled at all with
  probability ``k``, so the probability is ``k * a`` (the two agree at ``k = 1``). Mainstream
  turns this recall into an event F1 score; we keep the recall, which is what frame rate and
  accuracy trade against each other.
* ``frames``: the fraction of the stream's frames classified correctly, ``a * fps /
  native_fps`` (frames not sampled count as wrong): a linear metric for tenants that need
  every frame (counting, tracking).

Both increase with accuracy and with frame rate, so sharing deeper (cheaper, less accurate)
buys frame rate: that is the trade the scheduler makes.
"""

from __future__ import annotations

import math

from edgeweave.serve.stems.errors import TenancyError

METRICS = ("event", "frames")
#: How long an event lasts unless a tenant or stream says otherwise: 3 frames of a 30 fps
#: stream, so that frame rate matters (at 0.5 s even 4 fps sees two frames of every event).
DEFAULT_EVENT_S = 0.1


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise TenancyError(f"metric: expected one of {', '.join(METRICS)}, got {metric!r}")


def quality(metric: str, accuracy: float, fps: float, native_fps: float,
            event_s: float) -> float:
    """The tenant's value in [0, 1] at per-frame ``accuracy`` and sampling rate ``fps``."""
    if metric == "event":
        k = fps * event_s
        return 1.0 - (1.0 - accuracy) ** k if k >= 1.0 else k * accuracy
    if metric == "frames":
        return accuracy * fps / native_fps
    raise TenancyError(f"metric: expected one of {', '.join(METRICS)}, got {metric!r}")


def check_accuracy(value: float, where: str) -> None:
    if not isinstance(value, int | float) or not math.isfinite(value) or not 0 <= value <= 1:
        raise TenancyError(f"{where}: expected an accuracy in [0, 1], got {value!r}")


def check_positive(value: float, where: str, unit: str) -> float:
    """``value`` as a float when it is a finite number > 0; else the one clear error."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value) or value <= 0:
        raise TenancyError(f"{where}: expected a positive number ({unit}), got {value!r}")
    return float(value)
