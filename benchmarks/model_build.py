"""Building a zoo model whose weights are all replaced: random init (the old way) against the
meta device (zoo.model_skeleton), measured in one run.

Two paths: a weights file loaded into a built-in (``load_model(spec, weights=...)``, used by
every ``--weights`` flag), and a node capturing a built-in it will deploy stages of (the first
Deploy of a model on ``edgeweave serve`` and on a cluster worker). "random init" rebuilds what
those paths did before: a real build, then the file copied in / a real capture whose weights are
moved to meta. Both sides load the same file and must give the same model.

    .venv/bin/python benchmarks/model_build.py [--models alexnet vgg16 resnet18] [--json out.json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from _zoo import emit
from edgeweave.graph import capture, load_model, model_factory
from edgeweave.graph.zoo import load_weights
from edgeweave.runtime.models import TrustedModels, _weights_to_meta


def timed(fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def old_load(name: str, path: Path) -> torch.nn.Module:
    module = model_factory(name)().module
    load_weights(module, path)  # a real module: the file is copied into its tensors
    return module.eval()


def new_load(name: str, path: Path) -> torch.nn.Module:
    return load_model(name, weights=str(path)).module


def new_capture(name: str, shape: tuple[int, ...]) -> Any:
    return TrustedModels().graph(name, shape)


def old_capture(name: str) -> Any:
    made = model_factory(name)()
    graph = capture(made.module, made.input_shape, name=name, spec=name)
    _weights_to_meta(graph.module)
    return graph


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["alexnet", "vgg16", "resnet18"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model_factory("resnet18")()  # pay torchvision's import outside the timings

    table = Table(title=f"building a model whose weights are replaced ({args.threads} thread)")
    for col in ("model", "path", "random init s", "meta s", "ratio"):
        table.add_column(col, justify="left" if col in ("model", "path") else "right")
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeweave-build-") as tmp:
        for name in args.models:
            path = Path(tmp) / f"{name}.pt"
            torch.save(model_factory(name)().module.state_dict(), path)
            old_s, old = timed(old_load, name, path)
            new_s, new = timed(new_load, name, path)
            same = all(torch.equal(a, b) for a, b in
                       zip(old.state_dict().values(), new.state_dict().values(), strict=True))
            if not same:
                raise SystemExit(f"{name}: the meta-built model differs from the real one")
            del old, new
            cap_old_s, g_old = timed(old_capture, name)
            cap_new_s, g_new = timed(new_capture, name, g_old.input_shape)
            if [n.to_dict() for n in g_old.nodes] != [n.to_dict() for n in g_new.nodes]:
                raise SystemExit(f"{name}: the meta capture differs from the real one")
            for what, a, b in (("load --weights file", old_s, new_s),
                               ("node capture (first Deploy)", cap_old_s, cap_new_s)):
                rows.append({"model": name, "path": what, "random_init_s": a, "meta_s": b,
                             "ratio": a / b})
                table.add_row(name, what, f"{a:.2f}", f"{b:.3f}", f"{a / b:.1f}x")
    emit(Console(), [table], {"threads": args.threads, "rows": rows}, args.json)


if __name__ == "__main__":
    main()
