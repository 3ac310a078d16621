"""Prefetching cache entries to a device before it needs them (Precog, Drolia et al., SEC 2017).

The edge sees every device's answers. A first-order Markov chain over classes, learned from all
devices' sequences of distinct classes (a user moving from one object to the next), predicts a
device's next classes from its current one; the edge then pushes the entries it holds for those
classes, and has not sent that device yet, so the device's next lookups hit locally instead of
crossing the link. Precog also pushes small specialised classifiers; here only cache entries.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from edgeweave.errors import ServeError
from edgeweave.serve.cache.semantic import CacheEntry, SemanticCache
from edgeweave.serve.stage import check_positive_int

#: Entry ids remembered per device as already sent (oldest forgotten first).
_SENT_MEMORY = 4096


class MarkovPredictor:
    """Transition counts between consecutive distinct classes, shared by all sources, with
    add-``smoothing`` priors; each source's current class is tracked separately."""

    def __init__(self, num_classes: int, smoothing: float = 0.1):
        check_positive_int(num_classes, "number of classes")
        self.num_classes = num_classes
        self.counts = np.full((num_classes, num_classes), smoothing, dtype=np.float64)
        np.fill_diagonal(self.counts, 0.0)
        self.current: dict[str, int] = {}

    def observe(self, source: str, label: int) -> bool:
        """Record ``source``'s latest class; True if it changed (a new visit began)."""
        if not 0 <= label < self.num_classes:
            raise ServeError(f"label {label} is outside the model's classes "
                             f"0..{self.num_classes - 1}")
        last = self.current.get(source)
        self.current[source] = label
        if last is None or last == label:
            return last is None
        self.counts[last, label] += 1.0
        return True

    def probabilities(self, label: int) -> np.ndarray:
        """P(next distinct class | current class ``label``)."""
        row = self.counts[label]
        total = row.sum()
        return row / total if total > 0 else np.full(self.num_classes, 1.0 / self.num_classes)

    def predict(self, source: str, top: int = 1) -> list[int]:
        """The ``top`` likeliest next classes of ``source`` (empty before its first answer)."""
        current = self.current.get(source)
        if current is None:
            return []
        p = self.probabilities(current)
        order = np.argsort(-p, kind="stable")
        return [int(c) for c in order if c != current][:top]


class Prefetcher:
    """The edge's side of Precog: after each answer to a device, what to push to it."""

    def __init__(self, edge: SemanticCache, predictor: MarkovPredictor, top: int = 2,
                 budget: int = 16, max_sources: int | None = None):
        self.edge, self.predictor = edge, predictor
        self.top = check_positive_int(top, "prefetch.top")
        self.budget = check_positive_int(budget, "prefetch.budget")
        self.max_sources = max_sources
        self._sent: OrderedDict[str, OrderedDict[str, None]] = OrderedDict()

    def after(self, source: str, label: int, budget: int | None = None) -> list[CacheEntry]:
        """Entries to push to ``source`` now that its answer was ``label``: up to ``budget``
        (at most the configured one) entries of the predicted next classes, newest first,
        taking classes in turn. With ``max_sources``, the least recently seen source beyond
        it is forgotten (its current class and what it was sent)."""
        budget = self.budget if budget is None else min(budget, self.budget)
        if not self.predictor.observe(source, label):
            return []
        sent = self._sent.setdefault(source, OrderedDict())
        self._sent.move_to_end(source)
        while self.max_sources is not None and len(self._sent) > self.max_sources:
            old, _ = self._sent.popitem(last=False)
            self.predictor.current.pop(old, None)
        per_class = []
        for cls in self.predictor.predict(source, self.top):
            fresh = [e for e in self.edge.entries({cls}) if e.uid not in sent]
            per_class.append(fresh[::-1])
        push: list[CacheEntry] = []
        for rank in range(budget):
            for entries in per_class:
                if rank < len(entries) and len(push) < budget:
                    push.append(entries[rank])
        for entry in push:
            sent[entry.uid] = None
            if len(sent) > _SENT_MEMORY:
                sent.popitem(last=False)
        return push
