"""The report page: one self-contained HTML file (Plotly's JavaScript, the styles and every
figure's data embedded), so it opens offline and can be mailed as one file."""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from importlib import resources
from typing import Any

from evorec.errors import require_extra
from evorec.report.figures import Figure, to_plotly
from evorec.report.sections import Section, Table, UserPage


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _script_json(text: str) -> str:
    """JSON safe inside a <script> element (no ``</script>`` or HTML comment can end it early)."""
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _table(t: Table, cls: str = "") -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in t.columns)
    body = "".join("<tr>" + "".join(f"<td>{_esc(v)}</td>" for v in row) + "</tr>" for row in t.rows)
    return f'<table class="{cls}"><caption>{_esc(t.title)}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _figure(f: Figure, png: bool) -> str:
    link = f' <a href="png/{_esc(f.id)}.png">PNG</a>' if png else ""
    return (f'<figure><div class="plot" id="{_esc(f.id)}" style="height:{int(f.height)}px"></div>'
            f"<figcaption>{_esc(f.caption)}{link}</figcaption></figure>")


def _section(s: Section, png: bool) -> str:
    parts = [f'<section id="{_esc(s.id)}"><h2>{_esc(s.title)}</h2>']
    if s.intro:
        parts.append(f'<p class="intro">{_esc(s.intro)}</p>')
    parts += [f'<p class="note">{_esc(n)}</p>' for n in s.notes]
    parts += [_table(t) for t in s.tables if t.rows]
    parts += [_figure(f, png) for f in s.figures]
    parts.append("</section>")
    return "".join(parts)


def _user(u: UserPage, png: bool) -> str:
    parts = [f'<article class="user-page" data-user="{_esc(u.user_id)}" hidden><h3>User {_esc(u.user_id)} ({_esc(u.dataset)})</h3>',
             _table(Table("Facts", ["", ""], u.facts), "facts")]
    parts += [f'<p class="note">{_esc(n)}</p>' for n in u.notes]
    figs = list(u.figures)
    if figs:
        parts.append(_figure(figs.pop(0), png))  # the timeline first
    parts += [_table(t) for t in u.tables]
    parts += [_figure(f, png) for f in figs]
    parts.append("</article>")
    return "".join(parts)


def render_page(title: str, subtitle: str, sections: list[Section], users: list[UserPage], *, png: bool) -> str:
    pio = require_extra("plotly.io", "the HTML report", "report")
    from plotly.offline import get_plotlyjs

    figs: list[Figure] = [f for s in sections for f in s.figures] + [f for u in users for f in u.figures]
    blob = "{" + ",".join(f"{json.dumps(f.id)}:{pio.to_json(to_plotly(f), validate=False)}" for f in figs) + "}"
    css = resources.files("evorec.report").joinpath("templates/report.css").read_text()
    js = resources.files("evorec.report").joinpath("templates/report.js").read_text()
    nav = "".join(f'<a href="#{_esc(s.id)}">{_esc(s.title)}</a>' for s in sections)
    body = "".join(_section(s, png) for s in sections)
    if users:
        nav += '<a href="#users">Users</a>'
        opts = "".join(f'<option value="{_esc(u.user_id)}">{_esc(u.user_id)} ({_esc(u.dataset)})</option>' for u in users)
        body += (
            '<section id="users"><h2>Users</h2>'
            '<p class="intro">A sample of users (and any asked for with --user): their interest timeline with the forecast, '
            "and the recommendations with what drove them. Pick one, or type an id.</p>"
            f'<form id="user-form" class="lookup"><label>User <select id="user-select">{opts}</select></label>'
            '<label>or id <input id="user-input" name="user" autocomplete="off" placeholder="user id"></label>'
            '<button type="submit">Look up</button><span id="user-message" role="status"></span></form>'
            + "".join(_user(u, png) for u in users)
            + "</section>"
        )
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{css}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f"<header><h1>{_esc(title)}</h1><p>{_esc(subtitle)} &middot; generated {stamp} by evorec</p></header>"
        f"<nav>{nav}</nav><main>{body}</main>"
        f'<script type="application/json" id="evorec-figures">{_script_json(blob)}</script>'
        f"<script>{js}</script></body></html>\n"
    )
