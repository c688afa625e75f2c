"""The leaderboard report of a stored sweep: ``python -m lab report --sweep ID`` and the Results tab's download.

HTML (self-contained, opens offline: style sheets and plotly.js inlined), Markdown or JSON, from one
:class:`~lab.shell.report.leaderboard.Leaderboard`: the verdict grid (a state per checkpoint and audit,
one sentence per checkpoint, its worst recovered facts), the heatmap, the sortable table of headline
numbers with their intervals, and the release gate per checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import plotly.io as pio
from plotly.offline import get_plotlyjs

from lab.core import settings
from lab.core.errors import LabError
from lab.core.files import write_text
from lab.core.store import Store
from lab.core.store import to_json as store_json
from lab.shell.report.collect import FORMATS
from lab.shell.report.grid import grid_html, grid_markdown
from lab.shell.report.render import md_table, md_text, template
from lab.shell.report.leaderboard import GATE, Leaderboard, as_data, collect_sweep, heatmap, table_frame

STATIC = settings.static_dir()


def _sweep_lines(board: Leaderboard) -> list[str]:
    sweep = board.sweep or {}
    return [f"Base: {board.base}", f"Control: {board.control or 'none'}",
            f"Status: {sweep.get('status', 'n/a')} ({sweep.get('completed', 0)} of {sweep.get('pairs', 0)} pairs "
            f"complete)", f"Started {sweep.get('created_at') or '–'}, finished {sweep.get('finished_at') or '–'}"]


def to_markdown(board: Leaderboard) -> str:
    """The leaderboard as Markdown: the sweep, the grid with intervals, each checkpoint's sentence, the gate."""
    lines = [f"# Leaderboard: {md_text(board.title)}", ""] + [f"- {md_text(line)}" for line in _sweep_lines(board)]
    lines += [""]
    lines += grid_markdown(board)
    table = table_frame(board).drop(columns=[f"{a} state" for a in board.audits])
    rows = [["–" if pd.isna(v) else (f"{v:.1f}" if isinstance(v, float) else v) for v in row]
            for row in table.itertuples(index=False)]
    lines += ["", "## Headline numbers (percent)", ""] + md_table(list(table.columns), rows)
    return "\n".join(lines) + "\n"


def table_html(frame: pd.DataFrame) -> str:
    """The sortable table (a click on a header sorts by it; see the page's script)."""
    return frame.to_html(index=False, na_rep="–", classes="sortable", border=0, float_format=lambda v: f"{v:.1f}")


def to_html(board: Leaderboard) -> str:
    """One self-contained page."""
    figure = pio.to_html(heatmap(board), full_html=False, include_plotlyjs=False, div_id="leaderboard-heatmap",
                         config={"displaylogo": False, "responsive": True})
    css = "\n".join((STATIC / name).read_text(encoding="utf-8") for name in ("report.css", "verdict.css"))
    return template("leaderboard.html").render(board=board, lines=_sweep_lines(board), grid=grid_html(board), figure=figure,
                              table=table_html(table_frame(board)), css=css, plotly_js=get_plotlyjs())


def render_sweep_report(store: Store, sweep_id: str, fmt: str = "html", threshold: float = GATE) -> str:
    """The leaderboard report of a stored sweep as text in ``fmt`` (html, md or json)."""
    if fmt not in FORMATS:
        raise LabError(f"unknown report format '{fmt}' (use {', '.join(FORMATS)})")
    board = collect_sweep(store, sweep_id, threshold)
    if fmt == "json":
        return json.dumps(json.loads(store_json(as_data(board))), indent=2)
    return to_html(board) if fmt == "html" else to_markdown(board)


def write_sweep_report(store: Store, sweep_id: str, fmt: str, out: str | Path, threshold: float = GATE) -> Path:
    """Render the leaderboard report and write it to ``out`` (never over the store; whole or not at all)."""
    return write_text(out, render_sweep_report(store, sweep_id, fmt, threshold), protected=[store.path])
