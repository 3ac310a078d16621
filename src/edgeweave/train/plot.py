"""Accuracy against rounds and against bytes, from a run's metrics.jsonl.

Both views matter at the edge: rounds measure how much coordination a strategy needs, bytes
what the links actually carry (FedAvg vs FedSGD differ in one, a codec in the other). Bytes are
cumulative up + down over all clients, so two runs with different codecs or client counts are
compared on the same axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edgeweave.durable import replace_with
from edgeweave.train.checkpoint import read_metrics
from edgeweave.train.types import TrainError


def _series(path: Path) -> tuple[list[int], list[float], list[float]]:
    rows = read_metrics(path)
    if not rows:
        raise TrainError(f"plot: {path} has no round metrics")
    rounds, acc, mbytes = [], [], []
    total = 0
    for d in rows:
        total += int(d.get("bytes_up", 0)) + int(d.get("bytes_down", 0))
        if d.get("test_acc") is None:  # a round without evaluation
            continue
        rounds.append(int(d["round"]))
        acc.append(float(d["test_acc"]))
        mbytes.append(total / 1e6)
    return rounds, acc, mbytes


def plot_metrics(metrics: Path | Sequence[Path], out: Path,
                 labels: Sequence[str] | None = None) -> Path:
    """Write a two-panel PNG (accuracy vs round, accuracy vs MB) of one or several runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [Path(metrics)] if isinstance(metrics, str | Path) else [Path(p) for p in metrics]
    names = list(labels) if labels is not None else [p.parent.name or str(p) for p in paths]
    fig, (ax_r, ax_b) = plt.subplots(1, 2, figsize=(10, 4))
    for path, name in zip(paths, names, strict=True):
        rounds, acc, mbytes = _series(path)
        ax_r.plot(rounds, acc, marker=".", label=name)
        ax_b.plot(mbytes, acc, marker=".", label=name)
    from matplotlib.ticker import MaxNLocator

    ax_r.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_r.set_xlabel("round")
    ax_b.set_xlabel("MB transferred (up + down, cumulative)")
    for ax in (ax_r, ax_b):
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
    ax_r.legend()
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    replace_with(out, lambda f: fig.savefig(f, dpi=100, format=out.suffix.lstrip(".") or "png"))
    plt.close(fig)
    return out
