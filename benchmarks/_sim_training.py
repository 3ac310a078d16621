"""The simulator benchmark's training rows: federated training on the campus fleet with and
without concurrent inference, flat and hierarchical, over several seeds (benchmarks/simulator.py
prints them)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

CAMPUS = Path(__file__).resolve().parent.parent / "examples" / "sim" / "campus.yaml"


def training(console: Console, devices: int, minutes: float,
             seeds: Sequence[int] = (1,)) -> list[dict]:
    """Rounds and time to accuracy with and without inference, and inference with and without
    training, flat and hierarchical, once per seed (the scenario's mobility and requests and
    the experiment's client sampling and data all follow it). With and without inference share
    a seed, so each seed is a paired comparison; one seed alone mixes the load's effect with
    which clients the load happens to make late."""
    from edgeweave.sim.run import simulate
    from edgeweave.sim.scenario import HierarchicalSpec, load_scenario

    rows = []
    for seed in seeds:
        base = load_scenario(CAMPUS).with_devices(devices)
        assert base.training is not None
        experiment = base.training.experiment.model_copy(update={"seed": seed})
        base = base.model_copy(update={
            "duration_s": minutes * 60.0, "seed": seed,
            "training": base.training.model_copy(update={"experiment": experiment})})
        alone = simulate(base, training=False).summary
        for kind in ("flat", "hierarchical"):
            scn = base
            if kind == "hierarchical":
                assert base.training is not None
                scn = base.model_copy(update={"training": base.training.model_copy(
                    update={"hierarchical": HierarchicalSpec(edge_rounds=2)})})
            for load in (False, True):
                rows.append(_training_row(console, simulate(scn, inference=load), alone,
                                          kind, load, devices, seed))
    return rows


def _training_row(console: Console, run: Any, alone: dict[str, Any], kind: str, load: bool,
                  devices: int, seed: int) -> dict[str, Any]:
    tr = run.training
    assert tr is not None
    rounds = tr["rounds"]
    row = {"training": kind, "inference_load": load, "devices": devices, "seed": seed,
           "rounds": len(rounds), "time_to_accuracy": tr["time_to_accuracy"],
           "final_accuracy": tr["final_accuracy"],
           "mean_round_s": sum(r["sim_round_s"] for r in rounds) / len(rounds),
           "dropped_mobility": sum(r["dropped_mobility"] for r in rounds),
           "training_end_s": rounds[-1]["sim_end_s"]}
    if load:
        s = run.summary
        row["inference_with_training"] = {
            "service_p50_ms": s["service_ms"]["p50"],
            "service_p95_ms": s["service_ms"]["p95"], "failure_rate": s["failure_rate"]}
        row["inference_alone"] = {
            "service_p50_ms": alone["service_ms"]["p50"],
            "service_p95_ms": alone["service_ms"]["p95"],
            "failure_rate": alone["failure_rate"]}
    tta = tr["time_to_accuracy"]
    console.print(f"training {kind}, inference {'on' if load else 'off'}, seed {seed}: target "
                  f"{tta['target']} at round {tta['round']} ({tta['sim_s']} s)",
                  highlight=False)
    return row


def training_means(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (training, inference) over the seeds: mean rounds and simulated seconds to the
    target (over the seeds that reached it, with how many did), mean round length, mean final
    accuracy, and the paired change inference made per seed (on minus off, same seed)."""
    out = []
    for kind in dict.fromkeys(r["training"] for r in rows):
        by_load = {load: {r["seed"]: r for r in rows
                          if r["training"] == kind and r["inference_load"] == load}
                   for load in (False, True)}
        for load, runs in by_load.items():
            hit = [r for r in runs.values() if r["time_to_accuracy"]["round"] is not None]
            row: dict[str, Any] = {
                "training": kind, "inference_load": load, "seeds": len(runs),
                "reached": len(hit),
                "round_to_target": _mean([r["time_to_accuracy"]["round"] for r in hit]),
                "time_to_target_s": _mean([r["time_to_accuracy"]["sim_s"] for r in hit]),
                "mean_round_s": _mean([r["mean_round_s"] for r in runs.values()]),
                "final_accuracy": _mean([r["final_accuracy"] for r in runs.values()]),
                "dropped_mobility": _mean([r["dropped_mobility"] for r in runs.values()])}
            if load:
                off = by_load[False]
                paired = [(r, off[s]) for s, r in runs.items() if s in off]
                row["mean_round_s_change"] = _mean([a["mean_round_s"] / b["mean_round_s"] - 1
                                                    for a, b in paired])
                both = [(a["time_to_accuracy"]["sim_s"], b["time_to_accuracy"]["sim_s"])
                        for a, b in paired if a["time_to_accuracy"]["sim_s"] is not None
                        and b["time_to_accuracy"]["sim_s"] is not None]
                row["time_to_target_change"] = _mean([a / b - 1 for a, b in both])
                row["inference_p95_ms_alone"] = _mean(
                    [r["inference_alone"]["service_p95_ms"] for r in runs.values()])
                row["inference_p95_ms_with"] = _mean(
                    [r["inference_with_training"]["service_p95_ms"] for r in runs.values()])
            out.append(row)
    return out


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None
