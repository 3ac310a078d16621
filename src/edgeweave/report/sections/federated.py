"""A federated run (`edgeweave fl run`, `fl server --out`): accuracy and loss per round, bytes
on the wire, privacy spent, and the clients that dropped out, with the run's configuration.

Read from the run's folder: metrics.jsonl (one line per round, edgeweave.train.checkpoint)
and run.json beside it (config, versions, `format_version`). A corrupt line is reported and
skipped; the other rounds are still shown.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeweave import formats
from edgeweave.errors import ReportError
from edgeweave.report.inputs import check_version, read_json, read_jsonl
from edgeweave.report.markup import PALETTE, fmt, number, table
from edgeweave.report.section import Problem, Section, SectionKind

METRICS, RUN = "metrics.jsonl", "run.json"
#: Privacy spent, in the order they are looked for: DP-FedAvg's (user level), local DP's.
EPSILON_FIELDS = (("dp_epsilon", "dp_delta", "user-level DP"),
                  ("client_dp_epsilon_max", "client_dp_delta", "client-level DP"))


class FederatedRunKind(SectionKind):
    name = "federated run"
    order = 30
    format_version = formats.FL_RUN

    def claims_dir(self, path: Path) -> bool:
        return (path / METRICS).is_file()

    def claims_file(self, path: Path, doc: dict[str, Any] | None) -> bool:
        if path.suffix == ".jsonl":
            return path.name == METRICS or _first_line_is_a_round(path)
        return doc is not None and isinstance(doc.get("config"), dict) and "backend" in doc

    def source_of(self, path: Path) -> Path:
        """A run.json stands for its run's folder; a metrics file for itself (its folder may
        hold other things) unless it is the folder's metrics.jsonl."""
        if path.suffix == ".jsonl" and path.name != METRICS:
            return path
        return path.parent if path.is_file() else path

    def build(self, source: Path, doc: dict[str, Any] | None,
              problems: list[Problem]) -> Section:
        metrics = source / METRICS if source.is_dir() else source
        run_file = metrics.parent / RUN
        run: dict[str, Any] = {}
        if run_file.is_file():
            try:
                run = read_json(run_file)
            except ReportError as e:  # the rounds can still be shown without the config
                problems.append(Problem.of(run_file, e))
            else:
                check_version(run_file, run, self.format_version)
        rows, bad = read_jsonl(metrics) if metrics.is_file() else ([], None)
        if bad:
            problems.append(Problem(metrics, bad))
        rounds = _rounds(rows)
        if rows and not rounds:
            raise ReportError(f"{metrics}: no line has a round number (is this a federated "
                              "run's metrics.jsonl?)", metrics)
        cfg: dict[str, Any] = run["config"] if isinstance(run.get("config"), dict) else {}
        return _section(source, cfg, run, rounds)


def _first_line_is_a_round(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            first = json.loads(f.readline(1 << 20))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(first, dict) and {"round", "clients", "bytes_up"} <= first.keys()


def _rounds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per round (the first written, as a resumed run keeps), in round order."""
    seen: dict[int, dict[str, Any]] = {}
    for row in rows:
        r = row.get("round")
        if isinstance(r, int) and not isinstance(r, bool) and r not in seen:
            seen[r] = row
    return [seen[r] for r in sorted(seen)]


def _series(rounds: list[dict[str, Any]], key: str) -> list[float | None]:
    return [number(r.get(key)) for r in rounds]


def _total(rounds: list[dict[str, Any]], key: str) -> float:
    return sum(v for v in _series(rounds, key) if v is not None)


def _epsilon(rounds: list[dict[str, Any]]) -> tuple[str, str, str] | None:
    """(epsilon field, delta field, label) of the privacy this run accounted, if any."""
    for eps, delta, label in EPSILON_FIELDS:
        if any(eps in r for r in rounds):
            return eps, delta, label
    return None


def _section(source: Path, cfg: dict[str, Any], run: dict[str, Any],
             rounds: list[dict[str, Any]]) -> Section:
    name = cfg.get("name") or source.name
    strategy = (cfg.get("strategy") or {}).get("name", "?")
    data = cfg.get("data") or {}
    acc = [(r["round"], v) for r, v in zip(rounds, _series(rounds, "test_acc"), strict=True)
           if v is not None]
    final = acc[-1][1] if acc else None
    best = max(acc, key=lambda t: t[1]) if acc else None
    summary = (f"{strategy} on {data.get('dataset', '?')} ({data.get('partition', '?')}, "
               f"{fmt(data.get('clients'))} clients), {len(rounds)} rounds: final test "
               f"accuracy {fmt(final)}")
    sec = Section("federated run", f"Federated run: {name}", source, summary=summary)
    sec.numbers = [("rounds", fmt(len(rounds))), ("final test accuracy", fmt(final)),
                   ("best", f"{fmt(best[1])} (round {best[0]})" if best else "–"),
                   ("uploaded", fmt(_total(rounds, "bytes_up") / 1e6, "MB")),
                   ("downloaded", fmt(_total(rounds, "bytes_down") / 1e6, "MB"))]
    eps = _epsilon(rounds)
    if eps:
        spent = next((number(r.get(eps[0])) for r in reversed(rounds) if eps[0] in r), None)
        delta = next((r.get(eps[1]) for r in reversed(rounds) if eps[1] in r), None)
        sec.numbers.append((f"privacy spent ({eps[2]}, δ={fmt(delta)})",
                            f"ε = {fmt(spent)}" if spent is not None else "ε = ∞ (no noise)"))
    if any("failed" in r for r in rounds):
        sec.numbers.append(("clients dropped out", f"{fmt(int(_total(rounds, 'failed')))} of "
                                                   f"{fmt(int(_total(rounds, 'selected')))}"
                            if any("selected" in r for r in rounds)
                            else fmt(int(_total(rounds, "failed")))))
    _config(sec, cfg, run)
    if not rounds:
        sec.add_note(f"No round recorded yet: no {METRICS} in this folder, or it is empty.")
        return sec
    _learning_plot(sec, rounds)
    _traffic_plot(sec, rounds, eps)
    _round_table(sec, rounds, eps)
    return sec


def _config(sec: Section, cfg: dict[str, Any], run: dict[str, Any]) -> None:
    if not cfg:
        sec.add_note("No run.json beside the metrics, so the configuration is not known.")
        return
    data, fit = cfg.get("data") or {}, cfg.get("fit") or {}
    strategy = cfg.get("strategy") or {}
    extras = {k: cfg.get(k) for k in ("privacy", "secure_aggregation", "codec", "up_codec",
                                      "down_codec", "attack", "deadline_s") if cfg.get(k)}
    rows: list[list[Any]] = [["model", cfg.get("model")],
            ["data", f"{data.get('dataset')} ({data.get('partition')}, "
                     f"{data.get('clients')} clients)"],
            ["strategy", f"{strategy.get('name')} (fraction {fmt(strategy.get('fraction'))})"],
            ["local training", f"lr {fmt(fit.get('lr'))}, batch {fit.get('batch_size')}, "
                               f"{fit.get('epochs')} epoch(s)"],
            ["rounds / backend", f"{cfg.get('rounds')} / {run.get('backend', cfg.get('backend'))}"],
            ["simulated dropout", f"{fmt(cfg.get('dropout'))} of the selected clients"],
            ["seed / versions", f"{cfg.get('seed')} / EdgeWeave {run.get('edgeweave', '?')}, "
                                f"torch {run.get('torch', '?')}"]]
    rows += [[k.replace("_", " "), fmt(v)] for k, v in extras.items()]
    rows = [[k, str(v)] for k, v in rows]  # settings read as text, left-aligned
    sec.add_heading("Configuration")
    sec.add_table(["setting", "value"], rows)


def _learning_plot(sec: Section, rounds: list[dict[str, Any]]) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    x = [r["round"] for r in rounds]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("test accuracy", "loss"))
    fig.add_trace(go.Scatter(x=x, y=_series(rounds, "test_acc"), name="test accuracy",
                             mode="lines+markers", line={"color": PALETTE[0]},
                             connectgaps=True), row=1, col=1)
    for key, label, color in (("train_loss", "train loss", PALETTE[1]),
                              ("test_loss", "test loss", PALETTE[3])):
        fig.add_trace(go.Scatter(x=x, y=_series(rounds, key), name=label, mode="lines+markers",
                                 line={"color": color}, connectgaps=True), row=1, col=2)
    _round_axis(fig, x)
    fig.update_layout(height=340, hovermode="x unified", margin={"t": 40})
    sec.add_heading("Accuracy and loss")
    sec.add_figure(fig)


def _traffic_plot(sec: Section, rounds: list[dict[str, Any]],
                  eps: tuple[str, str, str] | None) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    x = [r["round"] for r in rounds]
    has_clients = any("selected" in r for r in rounds)
    panels = ["bytes per round (KB)"] + (["clients per round"] if has_clients else []) \
        + ([f"privacy spent (ε, {eps[2]})"] if eps else [])
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=panels)
    for key, label, color in (("bytes_up", "up", PALETTE[2]), ("bytes_down", "down",
                                                               PALETTE[3])):
        fig.add_trace(go.Bar(x=x, y=[v / 1e3 if v is not None else None
                                     for v in _series(rounds, key)], name=f"KB {label}",
                             marker_color=color), row=1, col=1)
    col = 2
    if has_clients:
        for key, label, color in (("clients", "aggregated", PALETTE[0]),
                                  ("failed", "dropped out", "#b3261e"),
                                  ("late", "late", PALETTE[6])):
            if any(_series(rounds, key)):
                fig.add_trace(go.Bar(x=x, y=_series(rounds, key), name=label,
                                     marker_color=color), row=1, col=col)
        col += 1
    if eps:
        fig.add_trace(go.Scatter(x=x, y=_series(rounds, eps[0]), name="ε spent",
                                 mode="lines+markers", line={"color": PALETTE[4]}),
                      row=1, col=col)
    _round_axis(fig, x)
    fig.update_layout(height=340, barmode="group", margin={"t": 40})
    sec.add_heading("Bytes, clients and privacy")
    sec.add_figure(fig)


def _round_axis(fig: Any, x: list[int]) -> None:
    """Rounds are whole numbers: no 1.5 ticks on a short run."""
    fig.update_xaxes(title_text="round", tickformat="d",
                     **({"dtick": 1} if len(x) <= 20 else {}))


def _round_table(sec: Section, rounds: list[dict[str, Any]],
                 eps: tuple[str, str, str] | None) -> None:
    cols = [("round", "round"), ("clients", "clients"), ("train loss", "train_loss"),
            ("test loss", "test_loss"), ("test acc", "test_acc")]
    cols += [(c, k) for c, k in (("dropped out", "failed"), ("late", "late"))
             if any(k in r for r in rounds)]
    cols += [("KB up", "bytes_up"), ("KB down", "bytes_down"), ("wall s", "wall_s")]
    if eps:
        cols.append(("ε", eps[0]))
    rows = [[(number(r.get(k)) or 0) / 1e3 if k.startswith("bytes") else r.get(k)
             for _, k in cols] for r in rounds]
    body = table([c for c, _ in cols], rows)
    sec.blocks.append(f"<details><summary>Every round ({len(rounds)})</summary>{body}</details>")


KIND = FederatedRunKind()
