"""Results tab: every stored run, filtered and compared, down to each prompt and both outputs."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from lab.core.store import EXPORT_FORMATS
from lab.shell.ui import results
from lab.shell.ui.feedback import user_errors
from lab.shell.ui.plots import run_plots
from lab.shell.ui.session import Lab
from lab.shell.ui.views import ITEM_COLUMNS, ITEM_WIDTHS, compare_frame, item_detail, run_summary


def run_dropdown(frame: pd.DataFrame, current: str | None) -> gr.Dropdown:
    """A run picker over ``frame``'s runs, keeping ``current`` when it is still listed, else the newest."""
    choices = [(f"{r.run_id} · {r.status} · {r.unlearned_ref}", r.run_id) for r in frame.itertuples()]
    ids = [c[1] for c in choices]
    return gr.Dropdown(choices=choices, value=current if current in ids else (ids[0] if ids else None))


def build(lab: Lab, tab: gr.Tab) -> None:
    """The tab's content; its runs reload whenever the tab is opened."""
    gr.Markdown("Runs stored in DuckDB. Pick a run to see its numbers, plots and every item; "
                "pick several to compare.", elem_classes="tab-intro")
    run_id = gr.State(None)
    items_state = gr.State(None)
    with gr.Row(equal_height=False):
        text = gr.Textbox(label="Filter (run id, model or audit)", scale=4, elem_id="results-filter")
        status = gr.Dropdown(results.STATUSES, value=results.ALL, label="Status", scale=2, elem_id="results-status")
        refresh = gr.Button("Refresh", scale=1, elem_id="results-refresh")
    runs = gr.Dataframe(results.runs_frame(lab.store).head(0), label="Runs (newest first)", interactive=False,
                        max_height=260, elem_id="results-runs")
    with gr.Row(equal_height=True):
        run = gr.Dropdown(label="Run", scale=3, elem_id="results-run")
        compare = gr.Dropdown(label="Compare with", multiselect=True, scale=3, elem_id="results-compare")
        fmt = gr.Radio(list(EXPORT_FORMATS), value="parquet", label="Items file", scale=2, elem_id="results-format")
        with gr.Column(scale=1, min_width=150):
            export = gr.Button("Prepare download", elem_id="results-export")
            download = gr.DownloadButton("Download", visible=False, variant="primary", elem_id="results-download")
    summary = gr.Markdown(elem_id="results-summary")
    metrics = gr.Dataframe(compare_frame(lab.store, []), label="Metrics (one column per run)", interactive=False,
                           elem_id="results-metrics")
    with gr.Row(equal_height=True):
        audit = gr.Dropdown([results.ALL], value=results.ALL, label="Audit", elem_id="results-audit")
        split = gr.Dropdown([results.ALL, "forget", "retain", "holdout"], value=results.ALL, label="Split",
                            elem_id="results-split")
        recovered = gr.Checkbox(False, label="Recovered only", elem_id="results-recovered")
    items = gr.Dataframe(pd.DataFrame(columns=ITEM_COLUMNS), label="Items (select a row for the full record)",
                         interactive=False, wrap=True, max_height=420, column_widths=ITEM_WIDTHS,
                         elem_id="results-items")
    detail = gr.HTML(elem_id="results-item")
    with gr.Column(elem_id="results-plots"):
        run_plots(lab, run_id, "results-plots")

    @user_errors
    def on_refresh(text_: str, status_: str, current: str | None):
        frame = results.runs_frame(lab.store, text_, status_)
        picker = run_dropdown(frame, current)
        return frame, picker, gr.Dropdown(choices=picker.choices)

    @user_errors
    def on_run(run_id_: str | None, compare_: list[str] | None):
        if not run_id_:
            return None, "", None, gr.Dropdown(choices=[results.ALL], value=results.ALL)
        audits = [results.ALL] + list(lab.store.audits(run_id_)["audit"])
        chosen = [run_id_] + [r for r in compare_ or [] if r != run_id_]
        return (run_id_, run_summary(lab.store, run_id_), compare_frame(lab.store, chosen),
                gr.Dropdown(choices=audits, value=results.ALL))

    @user_errors
    def on_items(run_id_: str | None, audit_: str, split_: str, recovered_: bool):
        if not run_id_:
            return None, None, ""
        frame = results.run_items(lab.store, run_id_, audit_, split_, recovered_)
        return frame, results.shown(frame), ""

    @user_errors
    def on_select(frame: pd.DataFrame | None, event: gr.SelectData):
        if frame is None or not event.row_value:
            return ""
        return item_detail(frame.iloc[int(event.row_value[0])])

    @user_errors
    def on_export(run_id_: str | None, fmt_: str):
        if not run_id_:
            raise gr.Error("pick a run first", print_exception=False)
        path = results.export_file(lab.store, run_id_, fmt_)
        return gr.DownloadButton(f"Download .{fmt_}", value=path, visible=True)

    refresh_inputs, refresh_outputs = [text, status, run], [runs, run, compare]
    refresh.click(on_refresh, refresh_inputs, refresh_outputs, api_name="runs")
    gr.on([tab.select, text.submit, status.change], on_refresh, refresh_inputs, refresh_outputs,
          api_visibility="private")
    item_inputs, item_outputs = [run_id, audit, split, recovered], [items_state, items, detail]
    gr.on([run.change, compare.change], on_run, [run, compare], [run_id, summary, metrics, audit],
          api_visibility="private").then(on_items, item_inputs, item_outputs, api_visibility="private")
    gr.on([audit.change, split.change, recovered.change], on_items, item_inputs, item_outputs,
          api_visibility="private")
    items.select(on_select, items_state, detail, api_visibility="private")
    export.click(on_export, [run, fmt], download, api_name="export_items")
    gr.on([run.change, fmt.change], lambda: gr.DownloadButton(visible=False), None, download, queue=False,
          api_visibility="private")
