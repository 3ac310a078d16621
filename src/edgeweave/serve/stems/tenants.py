"""A real multi-tenant workload: several digits tasks fine-tuned from one backbone, each at every
candidate sharing depth, with accuracy measured on held-out data (Mainstream's premise, that
freezing deeper shares more and usually costs accuracy, is measured here, not assumed).

The backbone is pretrained on a *source* task, telling apart the digits 0-4 only: a stand-in for
the ImageNet pretraining Mainstream's tenants start from. Its features are general strokes, but
not tuned to 5-9 or to the tenants' questions, so a tenant frozen deeper has less left to adapt.
Each tenant at depth ``d`` keeps blocks ``1..d`` frozen (the backbone's own) and trains copies
of the later blocks and a new head on its task. The frozen blocks' outputs are computed once per
depth and the tail trains on them, which is the same training at a fraction of the cost.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from edgeweave.adapt.datasets import Split, digits
from edgeweave.adapt.fit import accuracy, fit
from edgeweave.serve.stems.backbone import STEM_BLOCKS, check_depth, head, stem_backbone
from edgeweave.serve.stems.errors import TenancyError
from edgeweave.serve.stems.forest import StemForest, tail_of
from edgeweave.serve.stems.quality import DEFAULT_EVENT_S
from edgeweave.serve.stems.schedule import Tenant

#: Digits the source task (the backbone's pretraining) classifies.
SOURCE_DIGITS = 5


@dataclass(frozen=True)
class Task:
    """A tenant's question about a digit: how many answers, and the answer for each label."""

    name: str
    classes: int
    relabel: Callable[[torch.Tensor], torch.Tensor] = field(repr=False)
    description: str


def _member(digits_: tuple[int, ...]) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda y: torch.isin(y, torch.tensor(digits_)).long()


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("digit", 10, lambda y: y, "which digit"),
    Task("odd", 2, lambda y: y % 2, "odd or even"),
    Task("gt4", 2, lambda y: (y > 4).long(), "greater than 4"),
    Task("zero", 2, lambda y: (y == 0).long(), "is it a 0"),
    Task("prime", 2, _member((2, 3, 5, 7)), "is it prime"),
    Task("loop", 2, _member((0, 6, 8, 9)), "does it have a closed loop"),
)}


def task(name: str) -> Task:
    if name not in TASKS:
        raise TenancyError(f"unknown tenant task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]


def stem_data(side: int = 16, seed: int = 0) -> Split:
    """sklearn's digits (:func:`edgeweave.adapt.datasets.digits`) upsampled to ``side``."""
    from edgeweave.plan.branchy import upsample  # deferred: the plan layer is heavy to import

    raw = digits(seed=seed)
    return Split(*(upsample(t, side) if t.dim() == 4 else t for t in (
        raw.x_train, raw.y_train, raw.x_val, raw.y_val, raw.x_test, raw.y_test)))


@dataclass(frozen=True)
class Backbone:
    """The pretrained blocks (frozen from here on) and the source task's held-out accuracy."""

    side: int
    width: int
    blocks: tuple[nn.Module, ...] = field(repr=False)
    source_accuracy: float


def pretrain_backbone(data: Split, side: int = 16, width: int = 16, epochs: int = 6,
                      seed: int = 0) -> Backbone:
    """Train :func:`stem_backbone` on the source task (digits 0-4 of ``data``)."""
    torch.manual_seed(seed)
    model = stem_backbone(side, width, SOURCE_DIGITS)
    tr, te = data.y_train < SOURCE_DIGITS, data.y_test < SOURCE_DIGITS
    fit(model, data.x_train[tr], data.y_train[tr], epochs=epochs, seed=seed)
    acc = accuracy(model, data.x_test[te], data.y_test[te])
    blocks = tuple(model[i].requires_grad_(False) for i in range(STEM_BLOCKS))
    return Backbone(side, width, blocks, acc)


@dataclass(frozen=True)
class FineTuned:
    """A tenant's version frozen at ``depth``: its own tail and its held-out accuracy."""

    task: str
    depth: int
    tail: nn.Sequential = field(repr=False)
    accuracy: float


@torch.no_grad()
def _features(blocks: Sequence[nn.Module], depth: int, x: torch.Tensor) -> torch.Tensor:
    for block in blocks[:depth]:
        x = block.eval()(x)
    return x


def fine_tune(backbone: Backbone, task_name: str, depth: int, data: Split, epochs: int = 4,
              seed: int = 0) -> FineTuned:
    """Fine-tune ``task_name`` with the backbone frozen up to ``depth`` blocks."""
    t = task(task_name)
    check_depth(depth, "depth")
    torch.manual_seed(seed)
    own = [copy.deepcopy(b).requires_grad_(True) for b in backbone.blocks]
    tail = tail_of(own, depth, head(t.classes))
    fit(tail, _features(backbone.blocks, depth, data.x_train), t.relabel(data.y_train),
        epochs=epochs, seed=seed)
    acc = accuracy(tail, _features(backbone.blocks, depth, data.x_test), t.relabel(data.y_test))
    return FineTuned(task_name, depth, tail.requires_grad_(False), acc)


@dataclass(frozen=True)
class TenantVersions:
    """Every version of one tenant (one per depth it was fine-tuned at)."""

    name: str
    task: str
    versions: dict[int, FineTuned] = field(repr=False)

    @property
    def classes(self) -> int:
        return TASKS[self.task].classes

    def accuracy(self) -> dict[int, float]:
        return {d: v.accuracy for d, v in sorted(self.versions.items())}

    def tenant(self, event_s: float = DEFAULT_EVENT_S) -> Tenant:
        """What the scheduler needs to know of it."""
        return Tenant(self.name, self.accuracy(), event_s)


def train_tenants(backbone: Backbone, tasks: Sequence[str], data: Split,
                  depths: Sequence[int] = tuple(range(STEM_BLOCKS + 1)), epochs: int = 4,
                  seed: int = 0) -> list[TenantVersions]:
    """Fine-tune every task at every depth; each tenant is named after its task."""
    if not tasks or len(set(tasks)) != len(tasks):
        raise TenancyError(f"tasks: expected distinct task names, got {list(tasks)}")
    for d in depths:
        check_depth(d, "depths")
    return [TenantVersions(name, name, {d: fine_tune(backbone, name, d, data, epochs, seed)
                                        for d in depths}) for name in tasks]


def build_forest(backbone: Backbone, tenants: Sequence[TenantVersions],
                 depths: dict[str, int]) -> StemForest:
    """The executor for tenants at the chosen ``depths`` (by name), sharing the backbone."""
    names = [t.name for t in tenants]
    unknown = sorted(set(depths) - set(names))
    missing = sorted(set(names) - set(depths))
    if unknown or missing:
        raise TenancyError(f"depths: unknown tenant(s) {unknown}, missing tenant(s) {missing}; "
                           f"tenants: {', '.join(names)}")
    tails = []
    for t in tenants:
        d = check_depth(depths[t.name], f"depth of tenant {t.name!r}")
        if d not in t.versions:
            raise TenancyError(f"tenant {t.name!r} was not fine-tuned at depth {d}; it was at "
                               f"{sorted(t.versions)}")
        tails.append(t.versions[d].tail)
    return StemForest(list(backbone.blocks), tails, [depths[n] for n in names],
                      [t.classes for t in tenants], names).eval()
