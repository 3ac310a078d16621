"""An input filter's settings, as a served model's ``filter:`` section spells them; every check
names the field (``filter.max_fn``, ...) so a bad YAML value or flag is reported in the words
the user wrote.

A filter is turned on with what it is asked (``positive``: the reference model's classes that
count as "an object") and the error it may make (``max_fn``, ``max_fp``); it learns the rest
from each stream's own first ``learn_frames`` frames (:mod:`.online`), as NoScope trains its
specialised model on the reference model's labels for that stream."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgeweave.errors import ServeError
from edgeweave.serve.filter.difference import DifferenceDetector
from edgeweave.serve.stage import check_fraction, check_known_fields, check_positive_int

#: Difference detectors a filter may choose from (the optimiser picks the cheapest that meets
#: the targets): whole-frame MSE against the empty scene, its 4x4-blocked variant, and the
#: frame before.
DETECTORS = {
    "reference": lambda refresh: DifferenceDetector("reference", refresh=refresh),
    "blocked": lambda refresh: DifferenceDetector("reference", blocks=4, refresh=refresh),
    "earlier": lambda refresh: DifferenceDetector("earlier", t=1, refresh=refresh),
}


@dataclass(frozen=True)
class FilterConfig:
    """``positive``: the classes the query asks for. ``max_fn``/``max_fp``: the target false-
    negative and false-positive rates the optimiser must meet on the tuning frames.
    ``learn_frames``: frames of each stream (all sent on to the model) to learn from: the first
    half trains, the second tunes. ``detectors``: the difference detectors to choose from
    (:data:`DETECTORS`). ``refresh``: most frames in a row the earlier-frame detector may skip.
    ``epochs``: the specialised model's training epochs. ``max_streams``: streams the filter
    keeps state for (sources beyond it pass through unfiltered: a peer names its stream)."""

    positive: tuple[int, ...] = ()
    max_fn: float = 0.01
    max_fp: float = 0.01
    learn_frames: int = 600
    detectors: tuple[str, ...] = ("reference", "blocked", "earlier")
    refresh: int = 30
    epochs: int = 15
    max_streams: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        positive = self.positive
        if isinstance(positive, int | str) or not all(
                isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in positive):
            raise ServeError(f"filter.positive must be a list of class numbers (>= 0) the query "
                             f"asks for, got {positive!r}")
        if not positive:
            raise ServeError("filter.positive is empty: name the model's classes that count "
                             "as an object (e.g. positive: [1, 2])")
        object.__setattr__(self, "positive", tuple(sorted(set(positive))))
        check_fraction(self.max_fn, "filter.max_fn")
        check_fraction(self.max_fp, "filter.max_fp")
        check_positive_int(self.learn_frames, "filter.learn_frames", minimum=20)
        check_positive_int(self.refresh, "filter.refresh")
        check_positive_int(self.epochs, "filter.epochs")
        check_positive_int(self.max_streams, "filter.max_streams")
        if isinstance(self.detectors, str) or not self.detectors or \
                any(d not in DETECTORS for d in self.detectors):
            raise ServeError(f"filter.detectors must be a non-empty list of "
                             f"{', '.join(DETECTORS)}, got {self.detectors!r}")
        object.__setattr__(self, "detectors", tuple(self.detectors))

    def make_detectors(self) -> list[DifferenceDetector]:
        return [DETECTORS[name](self.refresh) for name in self.detectors]

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> FilterConfig:
        """From a YAML ``filter:`` section; an unknown field is named with the known ones."""
        check_known_fields(cls, values, "filter")
        values = dict(values)
        for name in ("positive", "detectors"):
            if isinstance(values.get(name), list):
                values[name] = tuple(values[name])
        return cls(**values)
