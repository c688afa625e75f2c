"""A plot area that redraws every figure of the run named in a ``gr.State``."""

from __future__ import annotations

import gradio as gr

from lab.shell.ui.session import Lab
from lab.shell.ui.views import run_figures


def run_plots(lab: Lab, run_state: gr.State, elem_id: str) -> None:
    """Under the current layout: Plotly figures of the stored run, two per row."""

    @gr.render(inputs=run_state)
    def draw(run_id: str | None) -> None:
        if not run_id:
            return
        figures = run_figures(lab.store, run_id)
        if not figures:
            gr.Markdown("No figures for this run.", elem_id=f"{elem_id}-empty")
        for start in range(0, len(figures), 2):
            with gr.Row(elem_classes="plot-row"):
                for title, figure in figures[start:start + 2]:
                    gr.Plot(figure, label=title, elem_classes="run-plot")
