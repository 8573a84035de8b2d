"""Figures of a report, described once and drawn twice: Plotly for the HTML page, matplotlib for
PNG files (slides, papers).

A figure is a small typed *spec* (:class:`Lines`, :class:`Bars`, :class:`Areas`, :class:`Flows`,
:class:`Points`, :class:`Grid`) holding only data and labels; :func:`to_plotly` and
:func:`to_matplotlib` turn a spec into a figure of either library. The sections of a report
(:mod:`evorec.report.sections`) build specs and never touch a plotting library, so the HTML and
PNG versions of a figure always show the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evorec.utils.io import atomic_file

# One palette for both renderers (Plotly's "D3" + "Set2" colours): category i has the same colour
# in every figure of a report when the figures use the same category order.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#66c2a5", "#fc8d62", "#8da0cb", "#a6d854", "#ffd92f", "#e5c494", "#7f7f7f",
)
OTHER_COLOUR = "#c7c7c7"


def colour(i: int, name: str | None = None) -> str:
    return OTHER_COLOUR if name in ("other", "(other)", "inactive") else PALETTE[i % len(PALETTE)]


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


# -- specs --------------------------------------------------------------------------------------


@dataclass
class Series:
    """One line: ``y`` over ``x``, with an optional band ``lower``..``upper`` (same length)."""

    name: str
    x: Sequence[Any]
    y: Sequence[float]
    lower: Sequence[float] | None = None
    upper: Sequence[float] | None = None
    dashed: bool = False
    markers: bool = False
    colour: str | None = None


@dataclass
class Lines:
    series: list[Series]
    x_title: str = ""
    y_title: str = ""
    x_dates: bool = False  # x values are datetime64 / ISO strings
    log_x: bool = False
    log_y: bool = False
    vline: tuple[Any, str] | None = None  # (x, label), e.g. the forecast cutoff
    hlines: list[tuple[float, str]] = field(default_factory=list)  # reference values


@dataclass
class BarGroup:
    name: str
    values: Sequence[float]
    lower: Sequence[float] | None = None  # interval ends (absolute values, not offsets)
    upper: Sequence[float] | None = None
    colour: str | None = None
    hatched: bool = False  # reference values (e.g. published numbers) beside measured ones


@dataclass
class Bars:
    """Grouped bars over ``labels``, one bar per group; NaN values leave a gap."""

    labels: list[str]
    groups: list[BarGroup]
    x_title: str = ""
    y_title: str = ""
    horizontal: bool = False
    log_y: bool = False


@dataclass
class Areas:
    """Stacked areas of ``values[i]`` (one row per name) over ``x``. ``centered`` draws a stream
    graph (stack centred on zero). After ``cutoff`` an optional forecast continues the stack at
    ``forecast_x`` (``forecast[i]`` per name, with ``forecast_lower``/``forecast_upper`` bands of
    each layer) and ``realised`` values may be overlaid as dashed lines (top edge of each layer)."""

    x: Sequence[Any]
    names: list[str]
    values: np.ndarray  # (S, X)
    x_title: str = ""
    y_title: str = ""
    x_dates: bool = False
    centered: bool = False
    cutoff: Any | None = None
    forecast_x: Sequence[Any] | None = None
    forecast: np.ndarray | None = None  # (S, F)
    forecast_lower: np.ndarray | None = None  # (S, F)
    forecast_upper: np.ndarray | None = None  # (S, F)
    realised_x: Sequence[Any] | None = None
    realised: np.ndarray | None = None  # (S, R)


@dataclass
class Flows:
    """A Sankey diagram between consecutive ``stages``: ``links`` are (stage index of the source,
    source label, target label, count); nodes of one stage are ``nodes`` in that order."""

    stages: list[str]
    nodes: list[str]
    links: list[tuple[int, str, str, float]]


@dataclass
class Points:
    """A 2-D scatter coloured by ``group`` (one legend entry per group)."""

    x: Sequence[float]
    y: Sequence[float]
    group: Sequence[str]
    hover: Sequence[str] | None = None
    x_title: str = ""
    y_title: str = ""


@dataclass
class Grid:
    """A heat map: ``z[r, c]`` for row label ``rows[r]`` and column label ``cols[c]``."""

    rows: list[str]
    cols: list[str]
    z: np.ndarray
    x_title: str = ""
    y_title: str = ""
    text: np.ndarray | None = None  # shown in the cells (e.g. counts)


Chart = Lines | Bars | Areas | Flows | Points | Grid


@dataclass
class Figure:
    """A chart with its id (HTML element and PNG file name), title and caption."""

    id: str
    title: str
    chart: Chart
    caption: str = ""
    height: int = 420


# -- Plotly -------------------------------------------------------------------------------------


def to_plotly(fig: Figure):  # untyped: plotly.graph_objects.Figure
    import plotly.graph_objects as go

    c = fig.chart
    g = go.Figure()
    layout: dict[str, Any] = {
        "title": {"text": fig.title, "x": 0.01},
        "height": fig.height,
        "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
        "template": "plotly_white",
        "legend": {"orientation": "v"},
    }
    if isinstance(c, Lines):
        for i, s in enumerate(c.series):
            col = s.colour or colour(i, s.name)
            if s.lower is not None and s.upper is not None:
                g.add_trace(go.Scatter(x=list(s.x) + list(s.x)[::-1], y=list(s.upper) + list(s.lower)[::-1], fill="toself",
                                       fillcolor=_rgba(col, 0.18), line={"width": 0}, hoverinfo="skip", showlegend=False,
                                       legendgroup=s.name, name=f"{s.name} interval"))
            g.add_trace(go.Scatter(x=list(s.x), y=list(s.y), name=s.name, legendgroup=s.name,
                                   mode="lines+markers" if s.markers else "lines",
                                   line={"color": col, "dash": "dash" if s.dashed else "solid"}))
        for y, label in c.hlines:
            g.add_hline(y=y, line={"dash": "dot", "color": "#555"}, annotation_text=label, annotation_position="top left")
        if c.vline is not None:
            _vline(g, c.vline[0], c.vline[1], c.x_dates)
        layout.update(xaxis={"title": c.x_title, "type": "log" if c.log_x else ("date" if c.x_dates else "-")},
                      yaxis={"title": c.y_title, "type": "log" if c.log_y else "-"})
    elif isinstance(c, Bars):
        for i, grp in enumerate([*c.groups]):
            err = None
            if grp.lower is not None and grp.upper is not None:
                v = np.asarray(grp.values, dtype=float)
                err = {"type": "data", "symmetric": False, "array": list(np.asarray(grp.upper, dtype=float) - v),
                       "arrayminus": list(v - np.asarray(grp.lower, dtype=float)), "visible": True}
            kw = {"y": c.labels, "x": list(grp.values), "orientation": "h", "error_x": err} if c.horizontal else \
                 {"x": c.labels, "y": list(grp.values), "error_y": err}
            col = grp.colour or colour(i, grp.name)
            marker = {"color": _rgba(col, 0.35), "line": {"color": col, "width": 1.5}, "pattern": {"shape": "/", "fgcolor": col}} \
                if grp.hatched else {"color": col}
            g.add_trace(go.Bar(name=grp.name, marker=marker, **kw))
        layout.update(barmode="group", xaxis={"title": c.x_title}, yaxis={"title": c.y_title, "type": "log" if c.log_y else "-"})
    elif isinstance(c, Areas):
        _plotly_areas(g, c)
        layout.update(xaxis={"title": c.x_title, "type": "date" if c.x_dates else "-"}, yaxis={"title": c.y_title})
    elif isinstance(c, Flows):
        labels, index = _flow_nodes(c)
        node_colours = [colour(c.nodes.index(n), n) if n in c.nodes else OTHER_COLOUR for (_, n) in index]
        src, dst, val, lcol = [], [], [], []
        for stage, a, b, v in c.links:
            src.append(index.index((stage, a)))
            dst.append(index.index((stage + 1, b)))
            val.append(float(v))
            lcol.append(_rgba(colour(c.nodes.index(a), a) if a in c.nodes else OTHER_COLOUR, 0.35))
        g.add_trace(go.Sankey(node={"label": labels, "color": node_colours, "pad": 12, "thickness": 14},
                              link={"source": src, "target": dst, "value": val, "color": lcol}))
        for k, st in enumerate(c.stages):
            g.add_annotation(x=k / max(len(c.stages) - 1, 1), y=1.06, xref="paper", yref="paper", text=f"<b>{st}</b>", showarrow=False)
    elif isinstance(c, Points):
        groups = list(dict.fromkeys(c.group))
        gl = np.asarray(c.group, dtype=object)
        for i, name in enumerate(groups):
            m = gl == name
            hover = None if c.hover is None else list(np.asarray(c.hover, dtype=object)[m])
            trace = go.Scattergl if len(gl) > 5000 else go.Scatter  # WebGL only where SVG would be slow
            g.add_trace(trace(x=list(np.asarray(c.x)[m]), y=list(np.asarray(c.y)[m]), mode="markers", name=str(name),
                                     text=hover, hoverinfo="text" if hover else None,
                                     marker={"size": 6, "opacity": 0.7, "color": colour(i, name)}))
        layout.update(xaxis={"title": c.x_title}, yaxis={"title": c.y_title})
    elif isinstance(c, Grid):
        text = None if c.text is None else [[str(v) for v in row] for row in c.text]
        g.add_trace(go.Heatmap(z=np.asarray(c.z, dtype=float).tolist(), x=c.cols, y=c.rows, colorscale="Blues",
                               text=text, texttemplate="%{text}" if text else None, hoverongaps=False))
        layout.update(xaxis={"title": c.x_title, "type": "category"},
                      yaxis={"title": c.y_title, "autorange": "reversed", "type": "category"})
    else:  # pragma: no cover - the union is closed
        raise TypeError(f"unknown chart {type(c).__name__}")
    g.update_layout(**layout)
    return g


def _vline(g, x: Any, label: str, dates: bool) -> None:
    # add_vline's annotation arithmetic fails on date strings; a shape + annotation does not
    g.add_shape(type="line", x0=x, x1=x, y0=0, y1=1, xref="x", yref="paper", line={"dash": "dash", "color": "#444"})
    g.add_annotation(x=x, y=1.0, xref="x", yref="paper", text=label, showarrow=False, yanchor="bottom")


def _stack_base(values: np.ndarray, centered: bool) -> np.ndarray:
    return -values.sum(0) / 2.0 if centered else np.zeros(values.shape[1])


def _plotly_areas(g, c: Areas) -> None:
    import plotly.graph_objects as go

    vals = np.asarray(c.values, dtype=float)  # (S, X)
    x = list(c.x)
    base = _stack_base(vals, c.centered)
    g.add_trace(go.Scatter(x=x, y=base.tolist(), mode="lines", line={"width": 0}, showlegend=False, hoverinfo="skip"))
    top = base.copy()
    for i, name in enumerate(c.names):
        top = top + vals[i]
        g.add_trace(go.Scatter(x=x, y=top.tolist(), mode="lines", name=name, legendgroup=name, fill="tonexty",
                               line={"width": 0.5, "color": colour(i, name)}, fillcolor=_rgba(colour(i, name), 0.75),
                               customdata=vals[i].tolist(), hovertemplate=f"{name}: %{{customdata:.3g}}<extra></extra>"))
    if c.forecast is not None and c.forecast_x is not None:
        f = np.asarray(c.forecast, dtype=float)  # (S, F)
        fx = list(c.forecast_x)
        fbase = _stack_base(f, c.centered)
        g.add_trace(go.Scatter(x=fx, y=fbase.tolist(), mode="lines", line={"width": 0}, showlegend=False, hoverinfo="skip"))
        ftop = fbase.copy()
        bands = []
        for i, name in enumerate(c.names):  # the layers first: "tonexty" fills down to the trace added just before
            below = ftop.copy()
            ftop = ftop + f[i]
            g.add_trace(go.Scatter(x=fx, y=ftop.tolist(), mode="lines+markers", name=f"{name} (forecast)", legendgroup=name,
                                   showlegend=False, fill="tonexty", line={"width": 1, "dash": "dash", "color": colour(i, name)},
                                   fillcolor=_rgba(colour(i, name), 0.35), marker={"size": 4},
                                   customdata=f[i].tolist(), hovertemplate=f"{name} forecast: %{{customdata:.3g}}<extra></extra>"))
            if c.forecast_lower is not None and c.forecast_upper is not None:
                lo = below + np.asarray(c.forecast_lower[i], dtype=float)
                hi = below + np.asarray(c.forecast_upper[i], dtype=float)
                bands.append(go.Scatter(x=fx + fx[::-1], y=hi.tolist() + lo.tolist()[::-1], fill="toself", mode="lines",
                                        line={"width": 0}, fillcolor=_rgba(colour(i, name), 0.2), showlegend=False,
                                        hoverinfo="skip", legendgroup=name))
        for band in bands:  # then each layer's band around its top edge
            g.add_trace(band)
    if c.realised is not None and c.realised_x is not None:
        r = np.asarray(c.realised, dtype=float)
        rx = list(c.realised_x)
        rtop = _stack_base(r, c.centered)
        for i, name in enumerate(c.names):
            rtop = rtop + r[i]
            g.add_trace(go.Scatter(x=rx, y=rtop.tolist(), mode="lines", name="realised" if i == 0 else f"{name} (realised)",
                                   legendgroup="realised", showlegend=i == 0, line={"width": 1.5, "dash": "dot", "color": "#333"},
                                   customdata=r[i].tolist(), hovertemplate=f"{name} realised: %{{customdata:.3g}}<extra></extra>"))
    if c.cutoff is not None:
        _vline(g, c.cutoff, "cutoff", c.x_dates)


def _flow_nodes(c: Flows) -> tuple[list[str], list[tuple[int, str]]]:
    used: set[tuple[int, str]] = set()
    for stage, a, b, _ in c.links:
        used.add((stage, a))
        used.add((stage + 1, b))
    index = [(s, n) for s in range(len(c.stages)) for n in [*c.nodes, *sorted({n for (t, n) in used if t == s} - set(c.nodes))] if (s, n) in used]
    return [n for _, n in index], index


# -- matplotlib ---------------------------------------------------------------------------------


def to_matplotlib(fig: Figure):  # untyped: matplotlib.figure.Figure
    from matplotlib.figure import Figure as MplFigure

    c = fig.chart
    m = MplFigure(figsize=(10, max(fig.height / 100.0, 3.0)), dpi=110, layout="constrained")
    ax = m.add_subplot()
    ax.set_title(fig.title, loc="left", fontsize=11)
    if isinstance(c, Lines):
        for i, s in enumerate(c.series):
            col = s.colour or colour(i, s.name)
            x = _mpl_x(s.x, c.x_dates)
            if s.lower is not None and s.upper is not None:
                ax.fill_between(x, np.asarray(s.lower, float), np.asarray(s.upper, float), color=col, alpha=0.18, linewidth=0)
            ax.plot(x, np.asarray(s.y, float), label=s.name, color=col, linestyle="--" if s.dashed else "-",
                    marker="o" if s.markers else None, markersize=3)
        for y, label in c.hlines:
            ax.axhline(y, linestyle=":", color="#555")
            ax.annotate(label, (0.005, y), xycoords=("axes fraction", "data"), fontsize=8, va="bottom")
        if c.vline is not None:
            ax.axvline(_mpl_x([c.vline[0]], c.x_dates)[0], linestyle="--", color="#444")
        if c.log_x:
            ax.set_xscale("log")
        ax.legend(fontsize=8)
    elif isinstance(c, Bars):
        n = max(len(c.groups), 1)
        pos = np.arange(len(c.labels), dtype=float)
        width = 0.8 / n
        for i, grp in enumerate(c.groups):
            v = np.asarray(grp.values, dtype=float)
            err = None
            if grp.lower is not None and grp.upper is not None:
                err = np.vstack([v - np.asarray(grp.lower, float), np.asarray(grp.upper, float) - v])
            p = pos - 0.4 + width * (i + 0.5)
            col = grp.colour or colour(i, grp.name)
            style = {"facecolor": "none", "edgecolor": col, "hatch": "///"} if grp.hatched else {"color": col}
            if c.horizontal:
                ax.barh(p, v, height=width, xerr=err, label=grp.name, capsize=2, **style)
            else:
                ax.bar(p, v, width=width, yerr=err, label=grp.name, capsize=2, **style)
        if c.horizontal:
            ax.set_yticks(pos, c.labels, fontsize=8)
            ax.invert_yaxis()
        else:
            ax.set_xticks(pos, c.labels, rotation=30 if len(c.labels) > 6 else 0, ha="right" if len(c.labels) > 6 else "center", fontsize=8)
        ax.legend(fontsize=8)
    elif isinstance(c, Areas):
        _mpl_areas(ax, c)
    elif isinstance(c, Flows):
        _mpl_flows(ax, c)
    elif isinstance(c, Points):
        groups = list(dict.fromkeys(c.group))
        gl = np.asarray(c.group, dtype=object)
        for i, name in enumerate(groups):
            msk = gl == name
            ax.scatter(np.asarray(c.x, float)[msk], np.asarray(c.y, float)[msk], s=8, alpha=0.7, color=colour(i, name), label=str(name))
        ax.legend(fontsize=8, markerscale=2)
    elif isinstance(c, Grid):
        z = np.asarray(c.z, dtype=float)
        im = ax.imshow(z, cmap="Blues", aspect="auto")
        ax.set_xticks(range(len(c.cols)), c.cols, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(c.rows)), c.rows, fontsize=7)
        if c.text is not None and z.size <= 400:
            for r in range(z.shape[0]):
                for k in range(z.shape[1]):
                    ax.text(k, r, str(c.text[r][k]), ha="center", va="center", fontsize=6)
        m.colorbar(im, ax=ax)
    if isinstance(c, (Lines, Bars, Points, Grid)):  # Areas and Flows label their own axes
        ax.set_xlabel(c.x_title)
        ax.set_ylabel(c.y_title)
        if getattr(c, "log_y", False):
            ax.set_yscale("log")
    return m


def _mpl_x(x: Sequence[Any], dates: bool) -> np.ndarray:
    return np.asarray(x, dtype="datetime64[s]") if dates else np.asarray(x)


def _mpl_areas(ax, c: Areas) -> None:
    vals = np.asarray(c.values, dtype=float)
    x = _mpl_x(c.x, c.x_dates)
    base = _stack_base(vals, c.centered)
    ax.stackplot(x, vals, baseline="sym" if c.centered else "zero", labels=c.names,
                 colors=[colour(i, n) for i, n in enumerate(c.names)], alpha=0.8)
    if c.forecast is not None and c.forecast_x is not None:
        f = np.asarray(c.forecast, dtype=float)
        fx = _mpl_x(c.forecast_x, c.x_dates)
        bottom = _stack_base(f, c.centered)
        for i, name in enumerate(c.names):
            col = colour(i, name)
            ax.fill_between(fx, bottom, bottom + f[i], color=col, alpha=0.35, hatch="//", linewidth=0)
            if c.forecast_lower is not None and c.forecast_upper is not None:
                ax.fill_between(fx, bottom + np.asarray(c.forecast_lower[i], float), bottom + np.asarray(c.forecast_upper[i], float),
                                color=col, alpha=0.2, linewidth=0)
            bottom = bottom + f[i]
            ax.plot(fx, bottom, linestyle="--", color=col, linewidth=1)
    if c.realised is not None and c.realised_x is not None:
        r = np.asarray(c.realised, dtype=float)
        rx = _mpl_x(c.realised_x, c.x_dates)
        top = _stack_base(r, c.centered)
        for i in range(len(c.names)):
            top = top + r[i]
            ax.plot(rx, top, linestyle=":", color="#333", linewidth=1.2, label="realised" if i == 0 else None)
    if c.cutoff is not None:
        ax.axvline(_mpl_x([c.cutoff], c.x_dates)[0], linestyle="--", color="#444")
    del base
    ax.set_xlabel(c.x_title)
    ax.set_ylabel(c.y_title)
    ax.legend(fontsize=7, loc="upper left", ncol=2)


def _mpl_flows(ax, c: Flows) -> None:
    """An alluvial diagram: one column of stacked nodes per stage, links as bands."""
    from matplotlib.patches import PathPatch, Rectangle
    from matplotlib.path import Path as MplPath

    labels, index = _flow_nodes(c)
    S = len(c.stages)
    size: dict[tuple[int, str], float] = {}
    for stage, a, b, _v in c.links:
        size[(stage, a)] = max(size.get((stage, a), 0.0), 0.0)
        size[(stage + 1, b)] = size.get((stage + 1, b), 0.0)
    out_tot: dict[tuple[int, str], float] = {}
    in_tot: dict[tuple[int, str], float] = {}
    for stage, a, b, v in c.links:
        out_tot[(stage, a)] = out_tot.get((stage, a), 0.0) + v
        in_tot[(stage + 1, b)] = in_tot.get((stage + 1, b), 0.0) + v
    for key in size:
        size[key] = max(out_tot.get(key, 0.0), in_tot.get(key, 0.0))
    total = max(max((sum(v for (s, _), v in size.items() if s == k) for k in range(S)), default=1.0), 1e-9)
    gap = 0.02
    pos: dict[tuple[int, str], float] = {}  # bottom of each node, in [0, 1 + gaps]
    w = 0.04
    for s in range(S):
        y = 0.0
        for key in [k for k in index if k[0] == s]:
            pos[key] = y
            h = size[key] / total
            name = key[1]
            col = colour(c.nodes.index(name), name) if name in c.nodes else OTHER_COLOUR
            ax.add_patch(Rectangle((s - w / 2, y), w, h, color=col))
            if h > 0.03:
                ax.text(s + w, y + h / 2, name, fontsize=7, va="center")
            y += h + gap
    out_used: dict[tuple[int, str], float] = {}
    in_used: dict[tuple[int, str], float] = {}
    for stage, a, b, v in c.links:
        h = v / total
        y0 = pos[(stage, a)] + out_used.get((stage, a), 0.0)
        y1 = pos[(stage + 1, b)] + in_used.get((stage + 1, b), 0.0)
        out_used[(stage, a)] = out_used.get((stage, a), 0.0) + h
        in_used[(stage + 1, b)] = in_used.get((stage + 1, b), 0.0) + h
        x0, x1 = stage + w / 2, stage + 1 - w / 2
        xm = (x0 + x1) / 2
        verts = [(x0, y0), (xm, y0), (xm, y1), (x1, y1), (x1, y1 + h), (xm, y1 + h), (xm, y0 + h), (x0, y0 + h), (x0, y0)]
        codes = [MplPath.MOVETO, MplPath.CURVE4, MplPath.CURVE4, MplPath.CURVE4, MplPath.LINETO,
                 MplPath.CURVE4, MplPath.CURVE4, MplPath.CURVE4, MplPath.CLOSEPOLY]
        col = colour(c.nodes.index(a), a) if a in c.nodes else OTHER_COLOUR
        ax.add_patch(PathPatch(MplPath(verts, codes), facecolor=col, alpha=0.35, linewidth=0))
    ax.set_xlim(-0.2, S - 0.5)
    top = max((pos[k] + size[k] / total for k in pos), default=1.0)
    ax.set_ylim(0, top + 0.02)
    ax.set_xticks(range(S), c.stages)
    ax.set_yticks([])
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    del labels


def save_png(fig: Figure, directory: str | Path) -> Path:
    """Draw ``fig`` with matplotlib into ``directory/<id>.png`` (atomically)."""
    path = Path(directory) / f"{fig.id}.png"
    m = to_matplotlib(fig)
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        m.savefig(f, format="png")
    return path
