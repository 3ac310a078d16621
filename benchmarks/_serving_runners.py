"""`serving.py --runners`: how a batch can run, timed (the eager module, the program traced at
batch 1, one traced per batch size, one thread). `serve.batching` runs the one traced at batch
1, from this: it runs any batch size with the same results and a program traced per size was
not faster."""

from __future__ import annotations

import time
import warnings

import torch
from rich.table import Table


def runner_times(model: str, shape: tuple[int, ...], sizes: tuple[int, ...], reps: int
                 ) -> list[dict]:
    """ms per request for a batch run eagerly, by the program traced at batch 1, and by one
    traced at that batch size (one thread)."""
    import torchvision

    torch.set_num_threads(1)
    net = getattr(torchvision.models, model)(weights=None).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced1 = torch.jit.trace(net, torch.zeros(shape), check_trace=False)
    out = []
    for size in sizes:
        x = torch.randn(size, *shape[1:])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced_b = torch.jit.trace(net, x, check_trace=False)
        row: dict = {"model": model, "batch": size}
        with torch.inference_mode():
            for name, fn in (("eager", net), ("traced_at_1", traced1),
                             ("traced_at_batch", traced_b)):
                for _ in range(2):
                    fn(x)
                start = time.perf_counter()
                for _ in range(reps):
                    fn(x)
                row[name] = (time.perf_counter() - start) / reps / size * 1000
            row["traced_at_1_matches"] = bool(torch.allclose(traced1(x), net(x), atol=1e-4))
        out.append(row)
    return out


def runners_table(runners: list[dict]) -> Table:
    rt = Table(title="ms per request by batch runner (one thread)")
    for col in ("model", "batch", "eager", "traced at 1", "traced at batch", "same?"):
        rt.add_column(col)
    for r in runners:
        rt.add_row(r["model"], str(r["batch"]), f"{r['eager']:.1f}",
                   f"{r['traced_at_1']:.1f}", f"{r['traced_at_batch']:.1f}",
                   "yes" if r["traced_at_1_matches"] else "NO")
    return rt
