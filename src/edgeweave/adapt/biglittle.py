"""Big/little model selection (Park et al., "Big/LITTLE deep neural network for ultra low power
inference", CODES+ISSS 2015): run a small, cheap *little* model on every input and pass the
input on to the *big* model (possibly on the edge server) only when the little model is not
sure enough of its answer.

How sure the little model is comes from its softmax, by one of three rules (``mode``), each
read as a *surety* score where higher means surer:

* ``"confidence"`` (default): the maximum softmax probability, in (0, 1];
* ``"margin"``: top-1 minus top-2 probability, in [0, 1];
* ``"entropy"``: the normalized entropy ``H(p) / log(num_classes)`` in [0, 1], where LOWER
  means surer (as in :mod:`edgeweave.adapt.exits`).

A sample ESCALATES to the big model when ``confidence < threshold``, ``margin < threshold`` or
``entropy > threshold``. So, at the extremes, for confidence and margin a threshold ``<= 0``
escalates nothing (the little model alone) and a threshold ``> 1`` escalates everything (the
big model alone); for entropy a threshold ``>= 1`` escalates nothing and a negative one
everything (:data:`NO_ESCALATION` and :data:`ALL_ESCALATE` hold such values). Scores are
computed in float64, so a threshold calibrated between two validation scores separates them
exactly.

Costs: with ``r`` the fraction escalated, the expected latency per input is
``little_ms + r * (big_ms + transfer_ms)`` (``transfer_ms``: sending the input up and the
answer back when the big model is on the edge) and the worst case is
``little_ms + big_ms + transfer_ms``. The latencies come from the planner
(:func:`edgeweave.plan.select.big_little_costs` reads them off the fleet's profiles); this
module only measures accuracy and escalation on real data.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from edgeweave.errors import EdgeWeaveError

MODES = ("confidence", "margin", "entropy")
#: A threshold per mode that escalates nothing (the little model answers everything).
NO_ESCALATION = {"confidence": 0.0, "margin": 0.0, "entropy": 1.0}
#: A threshold per mode that escalates everything (the big model answers everything).
ALL_ESCALATE = {"confidence": 2.0, "margin": 2.0, "entropy": -1.0}


class BigLittleError(EdgeWeaveError):
    """A big/little pair or request is malformed (mode, threshold, calibration target, data)."""


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise BigLittleError(f"mode must be one of {MODES}, got {mode!r}")


def _check_threshold(threshold: float) -> float:
    try:
        t = float(threshold)
    except (TypeError, ValueError) as exc:
        raise BigLittleError(f"threshold must be a number, got {threshold!r}") from exc
    if math.isnan(t):
        raise BigLittleError("threshold must not be NaN")
    return t


def surety(logits: torch.Tensor, mode: str = "confidence") -> torch.Tensor:
    """Per-row float64 score, higher = surer: max probability, top-1 minus top-2 probability,
    or minus the normalized entropy (see module doc)."""
    _check_mode(mode)
    if logits.dim() != 2 or logits.shape[0] == 0:
        raise BigLittleError(f"expected (N, num_classes) logits with N >= 1, got shape "
                             f"{tuple(logits.shape)}")
    logp = F.log_softmax(logits.detach().double(), dim=-1)
    p = logp.exp()
    if mode == "confidence":
        return p.max(-1).values
    if mode == "margin":
        if p.shape[1] < 2:
            return p[:, 0]
        top = p.topk(2, dim=-1).values
        return top[:, 0] - top[:, 1]
    if p.shape[1] < 2:
        return torch.zeros(p.shape[0], dtype=torch.float64)
    entropy = -(p * logp).nan_to_num().sum(-1) / math.log(p.shape[1])
    return -entropy.clamp(0.0, 1.0)


def _surety_threshold(threshold: float, mode: str) -> float:
    """The threshold on :func:`surety` (escalate iff surety < it) for a user threshold."""
    return -threshold if mode == "entropy" else threshold


def escalation_mask(little_logits: torch.Tensor, threshold: float,
                    mode: str = "confidence") -> torch.Tensor:
    """Boolean mask of the rows the little model passes on to the big one (see module doc)."""
    t = _check_threshold(threshold)
    return surety(little_logits, mode) < _surety_threshold(t, mode)


class BigLittleOutput(NamedTuple):
    logits: torch.Tensor       #: the answering model's logits per sample
    predictions: torch.Tensor  #: argmax of those
    escalated: torch.Tensor    #: True where the big model answered


class BigLittle:
    """A little model, a big model and the escalation rule between them.

    Neither model is copied or trained here; both are put in eval mode when run.
    """

    def __init__(self, little: nn.Module, big: nn.Module, threshold: float,
                 mode: str = "confidence"):
        _check_mode(mode)
        self.little = little
        self.big = big
        self.threshold = _check_threshold(threshold)
        self.mode = mode

    def __repr__(self) -> str:
        return f"BigLittle(threshold={self.threshold:g}, mode={self.mode!r})"

    @classmethod
    def calibrated(cls, little: nn.Module, big: nn.Module, x_val: torch.Tensor,
                   y_val: torch.Tensor, target_accuracy: float | None = None,
                   escalation_budget: float | None = None, mode: str = "confidence"
                   ) -> BigLittle:
        """A pair whose threshold :func:`calibrate_threshold` chose on validation data."""
        cal = calibrate_threshold(little, big, x_val, y_val, target_accuracy,
                                  escalation_budget, mode)
        return cls(little, big, cal.threshold, mode)

    @torch.no_grad()
    def infer(self, x: torch.Tensor) -> BigLittleOutput:
        """Run the little model on the whole batch and the big one on the escalated rows only."""
        if x.shape[0] == 0:
            raise BigLittleError("infer: the batch is empty")
        self.little.eval()
        small = self.little(x)
        escalated = escalation_mask(small, self.threshold, self.mode)
        logits = small.clone()
        if bool(escalated.any()):
            self.big.eval()
            logits[escalated] = self.big(x[escalated]).to(logits.dtype)
        return BigLittleOutput(logits, logits.argmax(1), escalated)


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Calibration:
    """A threshold chosen on validation data and what it gives there."""

    threshold: float
    mode: str
    accuracy: float          #: validation accuracy of the pair at this threshold
    escalation_rate: float   #: fraction of validation samples escalated
    met: bool                #: whether the target accuracy was reached (True without a target)
    little_accuracy: float
    big_accuracy: float


def _check_data(x: torch.Tensor, y: torch.Tensor, what: str) -> None:
    if len(x) == 0 or len(x) != len(y):
        raise BigLittleError(f"{what}: need the same positive number of samples in x and y, "
                             f"got {len(x)} and {len(y)}")


@torch.no_grad()
def calibrate_threshold(little: nn.Module, big: nn.Module, x_val: torch.Tensor,
                        y_val: torch.Tensor, target_accuracy: float | None = None,
                        escalation_budget: float | None = None, mode: str = "confidence"
                        ) -> Calibration:
    """Choose the escalation threshold on validation data.

    Escalating the k least sure samples (k = 0..n, never splitting tied scores) gives an
    accuracy and an escalation rate k/n per k; the threshold is the midpoint between the k-th
    and (k+1)-th scores (:data:`NO_ESCALATION` for k = 0, :data:`ALL_ESCALATE` for k = n).

    * ``target_accuracy`` only: the fewest escalations whose accuracy is >= the target; if no
      k reaches it, the most accurate k (fewest escalations among ties), with ``met=False``.
    * ``escalation_budget`` only (a fraction in [0, 1]): the most accurate k with k/n <= budget
      (fewest escalations among ties).
    * both: the fewest escalations within the budget that reach the target, else the most
      accurate k within the budget (``met=False``).
    """
    _check_mode(mode)
    _check_data(x_val, y_val, "calibrate_threshold")
    if target_accuracy is None and escalation_budget is None:
        raise BigLittleError("calibrate_threshold needs a target_accuracy, an "
                             "escalation_budget, or both")
    if target_accuracy is not None and not 0.0 <= target_accuracy <= 1.0:
        raise BigLittleError(f"target_accuracy must be in [0, 1], got {target_accuracy}")
    if escalation_budget is not None and not 0.0 <= escalation_budget <= 1.0:
        raise BigLittleError(f"escalation_budget must be in [0, 1], got {escalation_budget}")
    little.eval()
    big.eval()
    small = little(x_val)
    little_right = (small.argmax(1) == y_val).double()
    big_right = (big(x_val).argmax(1) == y_val).double()
    n = len(y_val)
    s = surety(small, mode)
    order = torch.argsort(s, stable=True)  # least sure first
    s = s[order]
    gain = (big_right - little_right)[order].cumsum(0)
    acc = torch.cat([torch.zeros(1, dtype=torch.float64), gain]) / n + little_right.mean()
    ks = [0] + [k for k in range(1, n) if s[k - 1] < s[k]] + [n]
    if escalation_budget is not None:
        ks = [k for k in ks if k <= math.floor(escalation_budget * n + 1e-9)]
    accs = {k: float(acc[k]) for k in ks}
    met = True
    reaching = ([k for k in ks if accs[k] >= target_accuracy - 1e-12]
                if target_accuracy is not None else [])
    if reaching:
        k = min(reaching)
    else:
        met = target_accuracy is None
        best = max(accs.values())
        k = min(kk for kk in ks if accs[kk] >= best - 1e-12)
    if k == 0:
        threshold = NO_ESCALATION[mode]
    elif k == n:
        threshold = ALL_ESCALATE[mode]
    else:
        lo, hi = float(s[k - 1]), float(s[k])
        mid = lo + (hi - lo) / 2
        ts = mid if mid > lo else hi  # escalate iff surety < ts: lo < ts <= hi
        threshold = -ts if mode == "entropy" else ts
    return Calibration(threshold, mode, accs[k], k / n, met, float(little_right.mean()),
                       float(big_right.mean()))


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BigLittleReport:
    """Accuracy and escalation of a pair on some data, with its expected cost when the
    latencies (and energies) of the two models are given (see module doc for the formula)."""

    threshold: float
    mode: str
    samples: int
    accuracy: float
    escalation_rate: float
    little_accuracy: float               #: the little model alone
    big_accuracy: float                  #: the big model alone
    kept_accuracy: float | None          #: little's accuracy on the samples it kept
    escalated_accuracy: float | None     #: big's accuracy on the samples escalated to it
    little_ms: float | None = None
    big_ms: float | None = None
    transfer_ms: float = 0.0
    expected_ms: float | None = None
    worst_ms: float | None = None
    little_energy_j: float | None = None
    big_energy_j: float | None = None
    expected_energy_j: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def biglittle_report(pair: BigLittle, x: torch.Tensor, y: torch.Tensor,
                     little_ms: float | None = None, big_ms: float | None = None,
                     transfer_ms: float = 0.0, little_energy_j: float | None = None,
                     big_energy_j: float | None = None) -> BigLittleReport:
    """Run ``pair`` on ``x`` and score it against ``y``.

    ``big_ms`` is the big model's latency where it runs, ``transfer_ms`` what reaching it
    adds (0 on the device; input up and answer down when it is on the edge); ``big_energy_j``
    is the DEVICE's energy for one escalation (idle and radio while the edge computes, or
    compute on the device), as the planner's energy objective counts it.
    """
    _check_data(x, y, "biglittle_report")
    if transfer_ms < 0 or any(v is not None and v < 0 for v in
                              (little_ms, big_ms, little_energy_j, big_energy_j)):
        raise BigLittleError("latencies and energies must be >= 0")
    out = pair.infer(x)
    right = out.predictions == y
    little_right = pair.little(x).argmax(1) == y
    big_right = pair.big(x).argmax(1) == y
    esc = out.escalated
    rate = float(esc.double().mean())
    kept = ~esc
    expected_ms = worst_ms = None
    if little_ms is not None and big_ms is not None:
        expected_ms = little_ms + rate * (big_ms + transfer_ms)
        worst_ms = little_ms + big_ms + transfer_ms
    expected_energy = None
    if little_energy_j is not None and big_energy_j is not None:
        expected_energy = little_energy_j + rate * big_energy_j
    return BigLittleReport(
        threshold=pair.threshold, mode=pair.mode, samples=len(y),
        accuracy=float(right.double().mean()), escalation_rate=rate,
        little_accuracy=float(little_right.double().mean()),
        big_accuracy=float(big_right.double().mean()),
        kept_accuracy=float(right[kept].double().mean()) if bool(kept.any()) else None,
        escalated_accuracy=float(right[esc].double().mean()) if bool(esc.any()) else None,
        little_ms=little_ms, big_ms=big_ms, transfer_ms=transfer_ms, expected_ms=expected_ms,
        worst_ms=worst_ms, little_energy_j=little_energy_j, big_energy_j=big_energy_j,
        expected_energy_j=expected_energy,
    )
