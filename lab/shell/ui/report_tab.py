"""Report tab: the audit report of a stored run, previewed here and downloaded as HTML, Markdown or JSON.

The same :mod:`lab.shell.report.collect` functions as ``python -m lab report``; the preview is
the Markdown rendering, which carries the same content as the other formats
(the HTML report adds the interactive figures).
"""

from __future__ import annotations

import gradio as gr

from lab.core.errors import LabError
from lab.core.store import Store
from lab.shell.report import FORMATS, render_report, write_report
from lab.shell.ui.feedback import Beside
from lab.shell.ui.results import runs_frame, scratch_path
from lab.shell.ui.results_tab import run_dropdown
from lab.shell.ui.session import Lab


def export(store: Store, run_id: str, fmt: str) -> str:
    """Write the report of ``run_id`` in ``fmt`` to a fresh temporary file; return its path."""
    return str(write_report(store, run_id, fmt, scratch_path(f"report-{run_id}.{fmt}")))


def build(lab: Lab, tab: gr.Tab) -> None:
    """The tab's content; its run list reloads whenever the tab is opened."""
    gr.Markdown("The audit report of a run: executive summary, the per-fact kill chain, figures, models, "
                "configuration and how to repeat it.", elem_classes="tab-intro")
    with gr.Row(equal_height=True, elem_classes="stack-on-phone"):
        run = gr.Dropdown(label="Run", scale=4, elem_id="report-run")
        fmt = gr.Radio(list(FORMATS), value="html", label="Format", scale=2, elem_id="report-format")
        with gr.Column(scale=1, min_width=160):
            make = gr.Button("Export report", variant="primary", elem_id="report-export")
            download = gr.DownloadButton("Download", visible=False, elem_id="report-download")
    run_msg, export_msg = Beside("report-run"), Beside("report-export")
    preview = gr.Markdown(elem_id="report-preview", elem_classes="report-preview")

    @run_msg
    def on_open(current: str | None, request: gr.Request):
        return run_dropdown(runs_frame(lab.view(request)), current)

    @run_msg
    def on_run(run_id: str | None, request: gr.Request):
        return render_report(lab.view(request), run_id, "md") if run_id else ""

    @export_msg
    def on_export(run_id: str | None, fmt_: str, request: gr.Request):
        if not run_id:
            raise LabError("pick a run first")
        return gr.DownloadButton(f"Download .{fmt_}", value=export(lab.view(request), run_id, fmt_), visible=True)

    run_msg.watch(tab.select(on_open, run, run, api_visibility="private", **run_msg.events))
    run_msg.watch(run.change(on_run, run, preview, api_visibility="private", **run_msg.events))
    gr.on([run.change, fmt.change], lambda: gr.DownloadButton(visible=False), None, download, queue=False,
          api_visibility="private")
    export_msg.watch(make.click(on_export, [run, fmt], download, api_name="report", **export_msg.events))
