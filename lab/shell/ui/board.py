"""The leaderboard's place on a page: the verdict grid, the heatmap and the sortable table, built once here.

The Verdicts tab (a dashboard run) and the Results tab (a stored sweep) show
the same :class:`~lab.shell.report.leaderboard.Leaderboard` the same way, and
``python -m lab report --sweep`` writes it to a file
(:mod:`lab.shell.report.sweep_report`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from lab.shell.report.grid import grid_html, lab_link
from lab.shell.report.leaderboard import Leaderboard, heatmap, table_frame
from lab.shell.report.style import message_figure


@dataclass
class BoardView:
    """The components one leaderboard fills."""

    grid: gr.HTML
    heatmap: gr.Plot
    table: gr.Dataframe

    @property
    def outputs(self) -> list[Any]:
        return [self.grid, self.heatmap, self.table]


def board_view(prefix: str) -> BoardView:
    """Under the current layout: the grid, then the heatmap and the table (``<prefix>-grid`` etc.)."""
    grid_text, figure, frame = board_values(None)
    grid = gr.HTML(grid_text, elem_id=f"{prefix}-grid")
    with gr.Accordion("Heatmap and sortable table (click a column header to sort)", open=True,
                      elem_id=f"{prefix}-more"):
        plot = gr.Plot(figure, elem_id=f"{prefix}-heatmap", show_label=False)
        table = gr.Dataframe(frame, interactive=False, elem_id=f"{prefix}-table", elem_classes="scroll-table",
                             wrap=True)
    return BoardView(grid, plot, table)


def board_values(board: Leaderboard | None) -> tuple[str, Any, pd.DataFrame]:
    """What a :class:`BoardView` shows for ``board`` (or its empty state)."""
    if board is None or not board.entries:
        return ("<p class='vnone'>No models audited yet.</p>", message_figure("No runs to compare yet"),
                pd.DataFrame(columns=["model", "verdict", "gate"]))
    return grid_html(board, link=lab_link), heatmap(board), table_frame(board)
