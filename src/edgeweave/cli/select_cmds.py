"""`edgeweave adapt select`: wiring only (real digits + adapt's variants and big/little pair +
the planner's model selection + a table)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from edgeweave.cli import reporting
from edgeweave.cli.options import write_output

SHAPE = (1, 1, 8, 8)


def _accuracy(module: Any, x: Any, y: Any) -> float:
    """Correct / total as a Python float, so accuracies of models and of big/little pairs
    compare exactly (ties in the selection are real ties)."""
    import torch

    with torch.no_grad():
        module.eval()
        return int((module(x).argmax(1) == y).sum()) / len(y)


def build_candidates(console: Console, model: str, fleet: Any, device: str | None,
                     epochs: int, mbps: float | None, cache: Path | None = None) -> list[Any]:
    """The candidates of ``model`` on ``fleet``: from the ``cache`` entry for this model and
    ``--epochs`` when there is a sound one (profiles retargeted to the fleet, nothing
    re-measured), else trained and profiled (:func:`_train_and_profile`) and cached."""
    import torch

    from edgeweave.cli import select_cache
    from edgeweave.cli.adapt_cmds import _digits_model
    from edgeweave.cli.entry_cache import make_dir
    from edgeweave.plan import BigLittleCandidate
    from edgeweave.profile import retarget

    torch.manual_seed(0)  # the model's initial weights: the same variants on every run
    spec = _digits_model(model)  # an nn.Sequential taking SHAPE, or a clear error
    key = select_cache.CacheKey(select_cache.model_digest(spec.module), epochs)
    candidates = None
    if cache is not None:
        make_dir(cache)
        candidates = select_cache.load(cache, key, console)
    if candidates is None:
        candidates = _train_and_profile(console, model, spec, fleet, device, epochs)
        if cache is not None:
            select_cache.store(cache, key, candidates)
    else:
        console.print(f"using the variants and profiles cached in {cache} ({model}, "
                      f"{epochs} epochs)")
        path = fleet.tier_path(device)
        moved = {id(p): retarget(p, path, fleet.name) for c in candidates
                 for p in ((c.little, c.big) if isinstance(c, BigLittleCandidate)
                           else (c.profile,))}
        candidates = [replace(c, little=moved[id(c.little)], big=moved[id(c.big)])
                      if isinstance(c, BigLittleCandidate) else
                      replace(c, profile=moved[id(c.profile)]) for c in candidates]
    if mbps is None:
        return candidates
    return [replace(c, little=_with_mbps(c.little, mbps), big=_with_mbps(c.big, mbps))
            if isinstance(c, BigLittleCandidate) else
            replace(c, profile=_with_mbps(c.profile, mbps)) for c in candidates]


def _with_mbps(profile: Any, mbps: float) -> Any:
    """The profile with its first hop at ``mbps`` (the ``--mbps`` override)."""
    return profile.with_link(profile.hop_names()[0], mbps=mbps)


def _train_and_profile(console: Console, model: str, spec: Any, fleet: Any,
                       device: str | None, epochs: int) -> list[Any]:
    """Train ``model`` on the digits train split, derive its compression variants and a
    big/little pair (little: the distilled student, big: fp32, threshold calibrated on the
    validation split to fp32's validation accuracy), and profile each on ``fleet``."""
    from edgeweave.adapt import (
        BigLittle,
        biglittle_report,
        calibrate_threshold,
        digits,
        distill,
        filter_prune,
        fit,
        low_rank,
        quantize_dynamic,
    )
    from edgeweave.adapt.compress import baseline
    from edgeweave.plan import BigLittleCandidate, Candidate, profile_variants
    from edgeweave.profile.measure import torch_threads

    data = digits()
    tune: dict[str, Any] = {"x": data.x_train, "y": data.y_train,
                            "epochs": max(1, epochs // 4), "lr": 3e-4}
    with console.status(f"training {model} and deriving variants on real digits"), \
            torch_threads(1):  # tiny models: one thread beats OpenMP barriers on a busy host
        base = fit(spec.module, data.x_train, data.y_train, epochs=epochs)
        variants = [baseline(base), quantize_dynamic(base),
                    filter_prune(base, 0.5, input_shape=SHAPE, **tune), low_rank(base, 16, **tune),
                    distill(base, data.x_train, data.y_train, width=0.5, epochs=epochs)]
    fp32, student = variants[0], variants[-1]
    with console.status(f"profiling {len(variants)} variants on fleet {fleet.name}"):
        profiles = profile_variants({v.name: v.module for v in variants}, SHAPE, fleet, device,
                                    warmup=1, repeats=3)
    candidates: list[Any] = [
        Candidate(v.name, _accuracy(v.module, data.x_val, data.y_val), profiles[v.name],
                  {"test_accuracy": _accuracy(v.module, data.x_test, data.y_test),
                   "weights": v.params, "recipe": v.recipe.get("method")})
        for v in variants
    ]
    target = candidates[0].accuracy
    cal = calibrate_threshold(student.module, fp32.module, data.x_val, data.y_val,
                              target_accuracy=target)
    pair = BigLittle(student.module, fp32.module, cal.threshold, cal.mode)
    test = biglittle_report(pair, data.x_test, data.y_test)
    candidates.append(BigLittleCandidate(
        "big/little", cal.accuracy, profiles[student.name], profiles[fp32.name],
        cal.escalation_rate, cal.threshold, cal.mode,
        {"test_accuracy": test.accuracy, "test_escalation_rate": test.escalation_rate,
         "weights": student.params + fp32.params, "little": student.name, "big": fp32.name,
         "mode": cal.mode, "calibrated_for": f"fp32's validation accuracy {target:.2%}"}))
    return candidates


def _where(o: Any) -> str:
    if o.kind != "big-little":
        return str(o.mode)
    return f"device; big: {o.mode.rsplit('+ big ', 1)[-1]}"


def render(console: Console, selection: Any, title: str) -> Table:
    table = Table(title=title)
    for col in ("candidate", "val acc %", "test acc %", "weights", "esc %", "where", "ms", "mJ",
                "dev KiB", "verdict"):
        left = col in ("candidate", "where", "verdict")
        table.add_column(col, justify="left" if left else "right", no_wrap=col != "verdict",
                         overflow="fold")
    for o in selection.outcomes:
        chosen = o.name == selection.chosen
        verdict = ("[bold green]chosen[/]" if chosen else
                   "feasible" if o.feasible else "[red]" + "; ".join(o.why) + "[/]")
        test = o.notes.get("test_accuracy")
        esc = "-" if o.escalation_rate is None else f"{o.escalation_rate * 100:.1f}"
        table.add_row(("[bold]" + o.name + "[/]") if chosen else o.name,
                      f"{o.accuracy * 100:.2f}", "-" if test is None else f"{test * 100:.2f}",
                      str(o.notes.get("weights", "-")), esc, _where(o), f"{o.total_ms:.3f}",
                      f"{o.energy_j * 1e3:.3f}", f"{o.device_param_bytes / 1024:.1f}", verdict)
    console.print(table)
    pairs = [o for o in selection.outcomes if o.kind == "big-little"]
    for o in pairs:
        console.print(f"{o.name}: little {o.notes.get('little')} on the device, big "
                      f"{o.notes.get('big')} where the planner puts it; {o.notes.get('mode')} "
                      f"threshold {o.threshold:.4g}, calibrated for "
                      f"{o.notes.get('calibrated_for')}; ms and mJ are means (worst case "
                      f"{o.worst_ms:.3f} ms)", highlight=False)
    return table


def select(console: Console, model: str, fleet_spec: str | None, device: str | None,
           objective: str, slo_ms: float | None, energy_mj: float | None,
           device_mem_mb: float | None, min_acc: float | None, slo_stat: str, epochs: int,
           mbps: float | None, json_out: Path | None, page: Path | None = None,
           cache: Path | None = None) -> None:
    from edgeweave.plan.select import SelectionError, check_request
    from edgeweave.plan.select import select as choose
    from edgeweave.topology import DEFAULT_FLEET, load_fleet

    energy_j = None if energy_mj is None else energy_mj / 1e3
    check_request(objective, slo_ms, energy_j, device_mem_mb, min_acc, slo_stat)
    fleet = load_fleet(fleet_spec or DEFAULT_FLEET)
    fleet.tier_path(device)  # an unknown --device fails here, before any training
    candidates = build_candidates(console, model, fleet, device, epochs, mbps, cache)
    wants = []
    if slo_ms is not None:
        wants.append(f"SLO {slo_ms:g} ms ({slo_stat})")
    if energy_mj is not None:
        wants.append(f"energy {energy_mj:g} mJ")
    if device_mem_mb is not None:
        wants.append(f"device memory {device_mem_mb:g} MiB")
    goal = (f"max accuracy, then min {objective}" if min_acc is None
            else f"min {objective} at accuracy >= {min_acc:.2%}")
    title = (f"{model} variants on {fleet.name}: {goal}"
             + (f" under {', '.join(wants)}" if wants else "") + " (predicted per inference)")
    try:
        result = choose(candidates, objective, slo_ms, energy_j, device_mem_mb, min_acc,
                        slo_stat)
    except SelectionError as e:
        render(console, e.selection, title)
        if json_out:
            _write(json_out, e.selection.to_json())
        raise
    table = render(console, result, title)
    o = result.chosen_outcome
    assert o is not None
    console.print(f"chosen: [bold]{o.name}[/] -> {o.mode}: {o.total_ms:.3f} ms"
                  f"{' mean' if o.kind == 'big-little' else ''}, {o.energy_j * 1e3:.3f} mJ on "
                  f"the device, validation accuracy {o.accuracy:.2%}"
                  + ("" if result.exact else " (some placements from inexact planner searches)"))
    if json_out:
        _write(json_out, result.to_json())
        console.print(f"selection written to {json_out}")
    if page:
        reporting.write_tables(console, page, "edgeweave adapt select", [table], model=model,
                               fleet=fleet.name, chosen=o.name, mode=o.mode,
                               predicted_ms=o.total_ms, accuracy=o.accuracy)


def _write(path: Path, doc: dict[str, Any]) -> None:
    write_output("--json", path, json.dumps(doc, indent=1, default=str))
