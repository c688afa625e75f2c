"""The leaderboard's place on a page: the verdict grid, the heatmap and the sortable table, built once here.

The Verdicts tab (a dashboard run) and the Results tab (a stored sweep) show
the same :class:`~lab.shell.report.leaderboard.Leaderboard` the same way, and
``python -m lab report --sweep`` writes it to a file
(:mod:`lab.shell.report.sweep_report`).

On the page the heatmap's title is a caption above the figure, not inside it:
on a phone (390 px) Plotly turns the audits' labels on top of the cells, and a
title in the figure's top margin overlapped them, and was cut at its right
edge; page text wraps to any width (:func:`captioned`).
"""

from __future__ import annotations

import html
from typing import Any

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from lab.shell.report.grid import grid_html, lab_link
from lab.shell.report.leaderboard import Leaderboard, heatmap, table_frame
from lab.shell.report.style import message_figure
from lab.shell.ui.updates import Outputs


def board_view(prefix: str) -> Outputs:
    """Under the current layout: the grid, then the heatmap (under its caption) and the table
    (``<prefix>-grid`` etc.); named ``grid``, ``caption``, ``heatmap``, ``table`` as :func:`board_values` fills."""
    empty = board_values(None)
    grid = gr.HTML(empty["grid"], elem_id=f"{prefix}-grid")
    with gr.Accordion("Heatmap and sortable table (click a column header to sort)", open=True,
                      elem_id=f"{prefix}-more"):
        caption = gr.HTML(empty["caption"], elem_id=f"{prefix}-caption", elem_classes="plot-caption")
        plot = gr.Plot(empty["heatmap"], elem_id=f"{prefix}-heatmap", show_label=False)
        table = gr.Dataframe(empty["table"], interactive=False, elem_id=f"{prefix}-table", elem_classes="scroll-table",
                             wrap=True)
    return Outputs(grid=grid, caption=caption, heatmap=plot, table=table)


def board_values(board: Leaderboard | None) -> dict[str, Any]:
    """What a board view shows for ``board`` (or its empty state), by name."""
    if board is None or not board.entries:
        return dict(grid="<p class='vnone'>No models audited yet.</p>", caption="",
                    heatmap=message_figure("No runs to compare yet"),
                    table=pd.DataFrame(columns=["model", "verdict", "gate"]))
    caption, figure = captioned(heatmap(board))
    return dict(grid=grid_html(board, link=lab_link), caption=caption, heatmap=figure, table=table_frame(board))


def captioned(fig: go.Figure) -> tuple[str, go.Figure]:
    """The figure's title as a caption for above it, and the figure without the title (and without the legend
    room below: a heatmap has none), so the audits' labels on top never meet the title at any width."""
    text = (fig.layout.title.text or "").replace("<br>", " ")
    fig.update_layout(title=None, margin=dict(t=16, b=16))
    return f"<div class='plot-caption-text'>{html.escape(text)}</div>", fig
