"""Report tab: the audit report of a stored run, previewed here and downloaded as HTML, Markdown or JSON.

The same :mod:`lab.shell.report.collect` functions as ``python -m lab report``; the preview is
the Markdown rendering, which carries the same content as the other formats
(the HTML report adds the interactive figures).
"""

from __future__ import annotations

import gradio as gr

from lab.shell.report import FORMATS, render_report, write_report
from lab.shell.ui.feedback import user_errors
from lab.shell.ui.results import runs_frame, scratch_path
from lab.shell.ui.results_tab import run_dropdown
from lab.shell.ui.session import Lab


def export(lab: Lab, run_id: str, fmt: str) -> str:
    """Write the report of ``run_id`` in ``fmt`` to a fresh temporary file; return its path."""
    return str(write_report(lab.store, run_id, fmt, scratch_path(f"report-{run_id}.{fmt}")))


def build(lab: Lab, tab: gr.Tab) -> None:
    """The tab's content; its run list reloads whenever the tab is opened."""
    gr.Markdown("The audit report of a run: executive summary, the per-fact kill chain, figures, models, "
                "configuration and how to repeat it.", elem_classes="tab-intro")
    with gr.Row(equal_height=True):
        run = gr.Dropdown(label="Run", scale=4, elem_id="report-run")
        fmt = gr.Radio(list(FORMATS), value="html", label="Format", scale=2, elem_id="report-format")
        with gr.Column(scale=1, min_width=160):
            make = gr.Button("Export report", variant="primary", elem_id="report-export")
            download = gr.DownloadButton("Download", visible=False, elem_id="report-download")
    preview = gr.Markdown(elem_id="report-preview", elem_classes="report-preview")

    @user_errors
    def on_open(current: str | None):
        return run_dropdown(runs_frame(lab.store), current)

    @user_errors
    def on_run(run_id: str | None):
        return render_report(lab.store, run_id, "md") if run_id else ""

    @user_errors
    def on_export(run_id: str | None, fmt_: str):
        if not run_id:
            raise gr.Error("pick a run first", print_exception=False)
        return gr.DownloadButton(f"Download .{fmt_}", value=export(lab, run_id, fmt_), visible=True)

    tab.select(on_open, run, run, api_visibility="private")
    run.change(on_run, run, preview, api_visibility="private")
    gr.on([run.change, fmt.change], lambda: gr.DownloadButton(visible=False), None, download, queue=False,
          api_visibility="private")
    make.click(on_export, [run, fmt], download, api_name="report")
