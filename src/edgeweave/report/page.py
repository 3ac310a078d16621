"""The report page: a title, what was run, the problems met reading it, then one section per
result (key numbers first, then tables and plots), as one self-contained HTML file.

Self-contained means it opens from disk with no network: the style sheet is inline and
plotly.js is inlined once in the head (only when the page has a plot), never fetched from a CDN.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from edgeweave.report.markup import Raw, esc, slug, table
from edgeweave.report.section import Problem, Section

CSS = """
:root { --ink:#1d2433; --muted:#5b6475; --line:#e3e6ec; --accent:#1b6ec2; --bad:#b3261e; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
       color:var(--ink); background:#f6f7f9; }
main { max-width:1180px; margin:0 auto; padding:24px 28px 64px; }
header h1 { margin:0 0 4px; font-size:28px; }
header p { margin:0; color:var(--muted); }
section { background:#fff; border:1px solid var(--line); border-radius:10px;
          padding:18px 22px; margin:18px 0; }
section h2 { margin:0 0 2px; font-size:21px; }
section h3 { margin:20px 0 6px; font-size:16px; }
.kind { display:inline-block; font-size:12px; text-transform:uppercase; letter-spacing:.05em;
        color:#fff; background:var(--accent); border-radius:4px; padding:1px 7px;
        margin-right:8px; vertical-align:middle; }
.source { color:var(--muted); font-size:13px; margin:0 0 10px; }
.summary { margin:4px 0 10px; }
.key-numbers { display:flex; flex-wrap:wrap; gap:10px; margin:10px 0 6px; }
.kn { border:1px solid var(--line); border-radius:8px; padding:8px 14px; min-width:120px;
      background:#fbfcfd; }
.kn-value { font-size:20px; font-weight:600; }
.kn-label { font-size:12px; color:var(--muted); }
.table-wrap { overflow-x:auto; }
table { border-collapse:collapse; margin:6px 0 10px; font-size:13.5px; }
caption { text-align:left; font-weight:600; padding:4px 0; }
th, td { padding:4px 10px; border-bottom:1px solid var(--line); text-align:left; }
th { background:#f0f2f5; font-weight:600; }
td.num { text-align:right; font-variant-numeric:tabular-nums; }
tr.marked td { background:#e8f1fb; font-weight:600; }
.note { color:var(--muted); font-size:13px; }
figure.plot { margin:8px 0 14px; }
figcaption { color:var(--muted); font-size:13px; }
.problems { border-color:#f0b8b3; background:#fff6f5; }
.problems h2 { color:var(--bad); }
details summary { cursor:pointer; color:var(--accent); margin:6px 0; }
code { font-size:12.5px; background:#f0f2f5; padding:1px 4px; border-radius:3px; }
"""


def render(sections: Sequence[Section], problems: Sequence[Problem], skipped: Sequence[Path],
           title: str, version: str) -> str:
    """The whole page. Gives every section a unique anchor (its `id`)."""
    _assign_anchors(sections)
    plots = any(s.plots for s in sections)
    head = [f"<meta charset=\"utf-8\"><title>{esc(title)}</title>",
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<style>{CSS}</style>"]
    if plots:
        from plotly.offline import get_plotlyjs

        head.append(f'<script type="text/javascript">{get_plotlyjs()}</script>')
    when = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    body = [f"<header><h1>{esc(title)}</h1><p>{len(sections)} result(s), written by "
            f"EdgeWeave {esc(version)} on {esc(when)}</p></header>"]
    if problems:
        body.append(_problems(problems, bool(sections)))
    if sections:
        body.append(_contents(sections))
    body.extend(_section(s) for s in sections)
    if skipped:
        names = ", ".join(str(p) for p in skipped[:20]) + (" ..." if len(skipped) > 20 else "")
        body.append(f'<p class="note">Not results, so not shown: {esc(names)}</p>')
    return (f"<!DOCTYPE html><html lang=\"en\"><head>{''.join(head)}</head>"
            f"<body><main>{''.join(body)}</main></body></html>\n")


def _assign_anchors(sections: Sequence[Section]) -> None:
    used: set[str] = {"problems", "contents"}
    for s in sections:
        base = slug(f"{s.kind} {s.title.split(':', 1)[-1]}")
        anchor, n = base, 2
        while anchor in used:
            anchor, n = f"{base}-{n}", n + 1
        used.add(anchor)
        s.anchor = anchor


def _problems(problems: Sequence[Problem], partial: bool) -> str:
    items = "".join(f"<li><code>{esc(p.path)}</code>: {esc(p.message)}</li>" for p in problems)
    after = ("The sections below show what could be read." if partial
             else "Nothing could be read.")
    return (f'<section id="problems" class="problems"><h2>Problems reading the input</h2>'
            f"<ul>{items}</ul><p>{after}</p></section>")


def _contents(sections: Sequence[Section]) -> str:
    rows = [[Raw(f'<a href="#{esc(s.anchor)}">{esc(s.title)}</a>'), s.kind, s.summary,
             Raw(f"<code>{esc(s.source)}</code>")] for s in sections]
    return (f'<section id="contents"><h2>What was run</h2>'
            f"{table(['result', 'kind', 'key result', 'from'], rows)}</section>")


def _section(s: Section) -> str:
    from edgeweave.report.markup import key_numbers

    parts = [f'<section id="{esc(s.anchor)}" class="result" data-kind="{esc(s.kind)}">',
             f'<h2><span class="kind">{esc(s.kind)}</span>{esc(s.title)}</h2>',
             f'<p class="source">from <code>{esc(s.source)}</code></p>']
    if s.summary:
        parts.append(f'<p class="summary">{esc(s.summary)}</p>')
    if s.numbers:
        parts.append(key_numbers(s.numbers))
    parts.extend(s.html_blocks())
    parts.append("</section>")
    return "".join(parts)
