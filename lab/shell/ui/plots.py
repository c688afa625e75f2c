"""A plot area that redraws every figure of the run named in a ``gr.State``, grouped per audit.

Twenty ungrouped plots make a page thousands of pixels long; one accordion per
audit (the first open) keeps each audit's figures together and the page short.
Figures arrive styled (:func:`lab.shell.ui.views.run_figures`), so colours,
percentages, integer layer axes and empty states are the same as in the report.
"""

from __future__ import annotations

import gradio as gr

from lab.shell.ui.session import Lab
from lab.shell.ui.views import run_figures


def run_plots(lab: Lab, run_state: gr.State, elem_id: str) -> None:
    """Under the current layout: the stored run's Plotly figures, an accordion per audit, two per row."""

    @gr.render(inputs=run_state)
    def draw(run_id: str | None, request: gr.Request) -> None:
        if not run_id:
            return
        groups = run_figures(lab.view(request), run_id)
        if not groups:
            gr.Markdown("This run has no figures (no audit finished with data to draw).", elem_id=f"{elem_id}-empty")
        for index, (audit, figures) in enumerate(groups.items()):
            count = f"{len(figures)} figure{'s' if len(figures) > 1 else ''}"
            with gr.Accordion(f"{audit} · {count}", open=index == 0, elem_classes="plot-group",
                              elem_id=f"{elem_id}-{audit}"):
                for start in range(0, len(figures), 2):
                    with gr.Row(elem_classes="plot-row"):
                        for title, figure in figures[start:start + 2]:
                            gr.Plot(figure, label=f"{audit} · {title}", elem_classes="run-plot")
