"""One visual language for every figure the lab shows: in the web lab, in the run report and the leaderboard.

Audits draw their own Plotly figures (``Audit.figures``) and each picks its own
colours; left alone, base and unlearned swap colours from one chart to the
next.  :func:`styled` is applied to every figure before it is shown, so:

- base, unlearned and the reference (control) model have one colour each
  (:data:`ROLE_COLORS`), found from the trace's name (``base``,
  ``base: worst token``, ``targets: unlearned``; ``unlearned - base`` names no
  single model); several traces of one model get shades of its colour;
  traces that name no model take a neutral palette that avoids those colours;
- backgrounds are transparent, so a figure sits on the page's own card colour,
  and the web lab's dark mode repaints axes, grid and text from the theme's
  variables (``static/style.css``, "dark plot template");
- rates are drawn as percentages, axes that count layers carry whole numbers
  only, and a chart whose values are all 0 (or that has no data) says so
  instead of looking empty;
- long titles wrap, so a figure still reads at phone width.
"""

from __future__ import annotations

import math
import re
import textwrap
from typing import Any, Iterable

import plotly.graph_objects as go

ROLE_COLORS = {"base": "#4f46e5", "unlearned": "#e11d48", "reference": "#0d9488"}
ROLE_ALIASES = {"retrain": "reference", "control": "reference", "reference": "reference", "base": "base",
                "unlearned": "unlearned"}
NEUTRAL = ["#f59e0b", "#64748b", "#0ea5e9", "#84cc16", "#f97316", "#a16207", "#94a3b8", "#eab308"]  # no indigo,
# rose or teal: those are the models'
FONT = "Inter, ui-sans-serif, system-ui, sans-serif"
GRID = "rgba(148, 163, 184, 0.28)"
PERCENT_WORDS = ("rate", "share", "accuracy", "retention", "recovered", "hit")
TITLE_WIDTH = 64  # characters per title line
LEGEND_ROOM = 96  # bottom margin (pixels): tick labels, the axis title, then the legend
TEMPLATE = go.layout.Template(layout=dict(
    paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)", colorway=NEUTRAL,
    font=dict(family=FONT, size=12, color="#334155"),
    title=dict(font=dict(size=14), x=0.01, xanchor="left"),
    xaxis=dict(gridcolor=GRID, zerolinecolor=GRID, linecolor=GRID, automargin=True),
    yaxis=dict(gridcolor=GRID, zerolinecolor=GRID, linecolor=GRID, automargin=True),
    # The legend sits at the figure's bottom edge, under the axis titles (never over them).
    legend=dict(bgcolor="rgba(0,0,0,0)", orientation="h", yref="container", yanchor="bottom", y=0, x=0,
                font=dict(size=11)),
    margin=dict(l=56, r=16, t=64, b=LEGEND_ROOM), hoverlabel=dict(font=dict(family=FONT)),
))
_SPLIT = re.compile(r"[:/()·,]")


def role_of(name: str | None) -> str | None:
    """The model a trace stands for, from its name: a part of it (split at ``:``, ``/``, parentheses)
    that is exactly a role.  ``unlearned - base`` (a difference) names none."""
    if not name:
        return None
    roles = {ROLE_ALIASES[p] for p in (part.strip().lower() for part in _SPLIT.split(str(name))) if p in ROLE_ALIASES}
    return roles.pop() if len(roles) == 1 else None


def _group(name: str, role: str) -> str:
    """What tells several traces of one model apart (``targets`` in ``targets: unlearned``)."""
    parts = [p.strip().lower() for p in _SPLIT.split(name) if p.strip()]
    return " ".join(p for p in parts if ROLE_ALIASES.get(p) != role)


def shade(color: str, index: int, count: int) -> str:
    """The ``index``-th of ``count`` shades of ``color``: the colour itself first, then lighter ones."""
    if count <= 1 or index == 0:
        return color
    mix = 0.55 * index / (count - 1)
    rgb = [int(color[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(c + (255 - c) * mix):02x}" for c in rgb)


def _paint(trace: Any, color: str) -> None:
    """Set a trace's colour wherever its type draws one (bars, lines, markers)."""
    kind = trace.type
    if kind in ("bar", "histogram", "box", "violin", "funnel"):
        trace.marker.color = color
        if kind in ("box", "violin"):
            trace.line.color = color
    elif kind in ("scatter", "scattergl"):
        trace.line.color = color
        trace.marker.color = color


def _numbers(values: Any) -> list[float]:
    """The finite numbers of a trace's data array (categories and None dropped)."""
    out = []
    for v in values if values is not None else ():
        if isinstance(v, bool) or v is None:
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            return []  # a categorical axis
        if math.isfinite(f):
            out.append(f)
    return out


def _value_axis(trace: Any) -> str:
    """Which of x or y carries a trace's values (y, but x for horizontal bars and x-only histograms)."""
    if trace.type == "bar" and trace.orientation == "h":
        return "x"
    if trace.type == "histogram":
        return "y" if trace.y is not None and trace.x is None else "x"
    return "y"


def data_values(fig: go.Figure) -> list[float]:
    """Every finite value the figure's traces draw on their value axis (heatmaps: every cell)."""
    out: list[float] = []
    for trace in fig.data:
        if trace.type == "heatmap":
            for row in trace.z if trace.z is not None else ():
                out += _numbers(row)
        elif trace.type == "histogram":
            out += [1.0] * len(_numbers(trace.x if trace.x is not None else trace.y))  # counts
        elif trace.type in ("bar", "scatter", "scattergl", "box", "violin", "funnel"):
            out += _numbers(getattr(trace, _value_axis(trace)))
    return out


def _axis_name(trace: Any, letter: str) -> str:
    """The layout key of a trace's axis: ``xaxis``, ``yaxis2``, ..."""
    ref = getattr(trace, f"{letter}axis", None) or letter
    return f"{letter}axis{ref[1:]}"


def _by_axis(fig: go.Figure, letter: str) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {}
    for trace in fig.data:
        if trace.type in ("bar", "scatter", "scattergl", "box"):
            values.setdefault(_axis_name(trace, letter), []).extend(_numbers(getattr(trace, letter)))
    return values


def _title(axis: Any) -> str:
    return str(axis.title.text or "").lower() if axis is not None and axis.title is not None else ""


def _percent_axes(fig: go.Figure) -> None:
    """Rate axes (a title that names a rate or share, every value in [0, 1]) tick in percent."""
    for letter in ("x", "y"):
        for name, values in _by_axis(fig, letter).items():
            axis = fig.layout[name] if name in fig.layout else None
            title = _title(axis)
            if values and any(w in title for w in PERCENT_WORDS) and all(0 <= v <= 1 for v in values) \
                    and not (axis and axis.tickformat) and "log" not in title:
                fig.layout[name].tickformat = ".0%"


def _integer_axes(fig: go.Figure) -> None:
    """Axes of layers (by title) or of small whole numbers get whole-number ticks only (no layer 0.5)."""
    counted = _by_axis(fig, "x")
    for name in [k for k in fig.layout.to_plotly_json() if re.fullmatch(r"xaxis\d*", k)] + list(counted):
        axis = fig.layout[name]
        values = counted.get(name, [])
        layered = "layer" in _title(axis)
        whole = values and all(float(v).is_integer() for v in values) and max(values) - min(values) <= 60
        if (layered or whole) and axis.type not in ("log", "category") and axis.dtick is None:
            spread = (max(values) - min(values)) if values else 0
            step = next((s for s in (1, 2, 5, 10, 20, 50, 100) if s >= spread / 12), 100)
            axis.update(tick0=0, dtick=step, tickformat="d")


def _note(fig: go.Figure, text: str) -> None:
    fig.add_annotation(text=text, xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False,
                       font=dict(size=13, color="#64748b"), bgcolor="rgba(148,163,184,0.12)", borderpad=6,
                       name="lab-state")


def empty_state(fig: go.Figure) -> str | None:
    """What to say about a figure that draws nothing visible: no data, or every value 0."""
    values = data_values(fig)
    if not fig.data or not values:
        return "No data to draw"
    if all(v == 0 for v in values) and not any(t.type == "histogram" for t in fig.data):
        return "Every value is 0 (nothing to show above the axis)"
    return None


def _wrap_title(fig: go.Figure) -> None:
    text = fig.layout.title.text if fig.layout.title else None
    if text and "<br>" not in text and len(text) > TITLE_WIDTH:
        fig.layout.title.text = "<br>".join(textwrap.wrap(text, TITLE_WIDTH))


def _colour_of(trace: Any) -> Any:
    marker = getattr(trace, "marker", None)
    line = getattr(trace, "line", None)
    return (getattr(marker, "color", None) if marker is not None else None) or \
        (getattr(line, "color", None) if line is not None else None)


def _vivid(colour: Any) -> bool:
    """A saturated hex colour (one an audit chose, that could be mistaken for a model's); greys stay."""
    if not isinstance(colour, str) or not re.fullmatch(r"#[0-9a-fA-F]{6}", colour):
        return False
    r, g, b = (int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5))
    return max(r, g, b) - min(r, g, b) > 0.25


def _recolour(traces: Iterable[Any]) -> None:
    """Role colours (shaded per group); traces that name no model keep greys and get the neutral palette
    instead of any vivid colour of their own (which could read as base or unlearned)."""
    traces = list(traces)
    neutral = iter(NEUTRAL * 4)
    for trace in traces:
        if not (role_of(trace.name) or role_of(trace.legendgroup)) and _vivid(_colour_of(trace)):
            _paint(trace, next(neutral))
    groups: dict[str, list[str]] = {}
    for trace in traces:
        role = role_of(trace.name) or role_of(trace.legendgroup)
        if role:
            group = _group(str(trace.name or role), role)
            if group not in groups.setdefault(role, []):
                groups[role].append(group)
    for trace in traces:
        role = role_of(trace.name) or role_of(trace.legendgroup)
        if role:
            group = _group(str(trace.name or role), role)
            _paint(trace, shade(ROLE_COLORS[role], groups[role].index(group), len(groups[role])))


def styled(fig: go.Figure | None, height: int | None = None) -> go.Figure | None:
    """``fig`` restyled in place in the lab's visual language (see the module docstring) and returned;
    None stays None.  Audits build a fresh figure per call, so nothing shared is changed."""
    if fig is None:
        return None
    fig.update_layout(template=TEMPLATE)
    _recolour(fig.data)
    _percent_axes(fig)
    _integer_axes(fig)
    _wrap_title(fig)
    lines = str(fig.layout.title.text or "").count("<br>") if fig.layout.title else 0
    fig.update_layout(margin=dict(t=64 + 18 * lines))
    if height and not fig.layout.height:
        fig.update_layout(height=height)
    state = empty_state(fig)
    if state and not any(a.name == "lab-state" for a in fig.layout.annotations):
        _note(fig, state)
    return fig


def message_figure(message: str, title: str = "", height: int = 260) -> go.Figure:
    """A figure that only says something (no data yet, nothing to draw), in the same style."""
    fig = go.Figure(layout=dict(title=title, height=height, xaxis=dict(visible=False), yaxis=dict(visible=False)))
    fig.update_layout(template=TEMPLATE)
    _note(fig, message)
    return fig
