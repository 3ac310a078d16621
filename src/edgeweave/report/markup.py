"""HTML building blocks of the report: escaped text, numbers, tables, key figures, plots.

Plain string building with every value escaped (result files are data, and a layer or run name
may hold `<`), and nothing fetched: the page must open from a file with no network.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

PLOT_CONFIG = {"displaylogo": False, "responsive": True,
               "modeBarButtonsToRemove": ["select2d", "lasso2d"]}
#: Tier colours shared by every plot (the Neurosurgeon figure's, edgeweave.plan.figure).
TIER_COLORS = {"device": "#d95f02", "edge": "#1b9e77", "cloud": "#7570b3"}
PALETTE = ["#1f77b4", "#d95f02", "#1b9e77", "#7570b3", "#e7298a", "#66a61e", "#e6ab02"]


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def number(value: Any) -> float | None:
    """A finite float from a JSON value, or None (missing, null, NaN, text, bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def fmt(value: Any, unit: str = "") -> str:
    """A value as a person reads it: 277.1, 0.931, 12,345, yes, -; `unit` appended."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        text = f"{value:,}"
    elif isinstance(value, float):
        a = abs(value)
        if a >= 1000:
            text = f"{value:,.0f}"
        elif a >= 100:
            text = f"{value:.1f}"
        elif a >= 1:
            text = f"{value:.2f}"
        elif a == 0:
            text = "0"
        else:
            text = f"{value:.3g}"
    elif isinstance(value, list | tuple):
        text = ", ".join(fmt(v) for v in value)
    elif isinstance(value, dict):
        text = ", ".join(f"{k}: {fmt(v)}" for k, v in value.items())
    else:
        text = str(value)
    return f"{text} {unit}" if unit and text != "–" else text


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, caption: str = "",
          highlight: set[int] | None = None, cls: str = "") -> str:
    """A table; cells are formatted with `fmt` unless already HTML (`Raw`); rows whose index is
    in `highlight` are marked (the chosen plan, a total)."""
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for i, row in enumerate(rows):
        mark = ' class="marked"' if highlight and i in highlight else ""
        cells = "".join(_cell(v) for v in row)
        body.append(f"<tr{mark}>{cells}</tr>")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    klass = f' class="{esc(cls)}"' if cls else ""
    return (f'<div class="table-wrap"><table{klass}>{cap}<thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


class Raw(str):
    """Text that is already HTML (built here from escaped parts)."""


#: Text that reads as a number (benchmarks' printed cells): right-aligned like one.
_NUMERIC = re.compile(r"^[-+]?[\d,]*\.?\d+(e[-+]?\d+)?\s*(%|x|ms|s|MB|KB|KiB|MiB)?$")


def _cell(value: Any) -> str:
    if isinstance(value, Raw):
        return f"<td>{value}</td>"
    num = ((isinstance(value, int | float) and not isinstance(value, bool))
           or (isinstance(value, str) and bool(_NUMERIC.match(value.strip()))))
    return f'<td class="num">{esc(fmt(value))}</td>' if num else f"<td>{esc(fmt(value))}</td>"


def key_numbers(items: Sequence[tuple[str, str]]) -> str:
    """The figures a reader wants first, as large labelled numbers."""
    cards = "".join(f'<div class="kn"><div class="kn-value">{esc(v)}</div>'
                    f'<div class="kn-label">{esc(k)}</div></div>' for k, v in items)
    return f'<div class="key-numbers">{cards}</div>'


def figure(fig: Any, div_id: str, caption: str = "") -> str:
    """A plotly figure as a div plus the script that draws it; plotly.js itself is inlined
    once per page by the page, not here."""
    import plotly.io as pio

    margin = {"l": 60, "r": 20, "t": 50, "b": 50, **(fig.layout.margin.to_plotly_json())}
    fig.update_layout(template="plotly_white", margin=margin,
                      font={"family": "system-ui, sans-serif", "size": 12})
    div = pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id,
                      config=PLOT_CONFIG)
    cap = f'<figcaption>{esc(caption)}</figcaption>' if caption else ""
    return f'<figure class="plot">{div}{cap}</figure>'
