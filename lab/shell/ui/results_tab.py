"""Results tab: every stored run, filtered and compared, down to each prompt and both outputs; and the
leaderboard of a stored sweep.

Runs: pick one (and others to compare): the verdict grid puts them side by
side as models x audits, the metrics table beside it; the items below follow
the filters (audit, split, fact, recovered only), the download carries exactly
the filtered rows, and a selected item opens in full, diffed, with its links
(:mod:`lab.shell.ui.item_links`): "Replay in Probe", the Internals view that reads an item ("Logit lens in Internals")
and "Explain in Probe".  The address bar follows the run, every filter and the item's stored id
(:mod:`lab.shell.ui.links`), so a shared link reopens the same list and the same item.

Leaderboard: one sweep's checkpoints x audits (:mod:`lab.shell.report.leaderboard`),
with the release gate at the chosen threshold and the same report as
``python -m lab report --sweep``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from audits import get_audit
from lab.core.errors import LabError
from lab.core.store import EXPORT_FORMATS, Store
from lab.shell.report import FORMATS
from lab.shell.report.grid import grid_html, lab_link
from lab.shell.report.leaderboard import GATE, collect_runs, collect_sweep
from lab.shell.report.sweep_report import write_sweep_report
from lab.shell.ui import results
from lab.shell.ui.board import board_values, board_view
from lab.shell.ui.internals_tab import item_view
from lab.shell.ui.updates import Outputs
from lab.shell.ui.feedback import Beside
from lab.shell.ui.links import LEADERBOARD_TITLE, params_js
from lab.shell.ui.plots import run_plots
from lab.shell.ui.session import Lab
from lab.shell.ui.views import ITEM_COLUMNS, ITEM_WIDTHS, compare_frame, item_detail, run_summary


@dataclass
class ItemButtons:
    """The selected item's links to other tabs, and the message place under them."""

    replay: gr.Button
    lens: gr.Button
    explain: gr.Button
    message: Beside


@dataclass
class ResultsHooks:
    """What the app wires across tabs and to the URL."""

    run: gr.Dropdown
    filters: Outputs  # audit, split, recovered, fact: the item filters, by the URL's names
    item: gr.Number  # the selected item's stored id, or one the URL asked for (hidden)
    items: gr.State  # the filtered items (full rows)
    sweep: gr.Dropdown
    buttons: ItemButtons


def run_dropdown(frame: pd.DataFrame, current: str | None) -> gr.Dropdown:
    """A run picker over ``frame``'s runs, keeping ``current`` when it is still listed, else the newest."""
    choices = [(f"{r.run_id} · {r.status} · {r.unlearned_ref}", r.run_id) for r in frame.itertuples()]
    ids = [c[1] for c in choices]
    return gr.Dropdown(choices=choices, value=current if current in ids else (ids[0] if ids else None))


def build(lab: Lab, tab: gr.Tab) -> ResultsHooks:
    """The tab's content; its runs and sweeps reload whenever the tab is opened."""
    gr.Markdown("Runs stored in DuckDB. Pick a run to see its verdict, numbers, plots and every item; "
                "pick several to compare; open a sweep's leaderboard.", elem_classes="tab-intro")
    with gr.Tabs(elem_id="results-views"):
        with gr.Tab("Runs", id="runs", elem_id="results-runs-tab"):
            run, filters, item, items, buttons = _runs(lab, tab)
        with gr.Tab(LEADERBOARD_TITLE, id="leaderboard", elem_id="results-leaderboard-tab"):
            sweep = _leaderboard(lab, tab)
    return ResultsHooks(run, filters, item, items, sweep, buttons)


def item_buttons() -> tuple[gr.Row, ItemButtons]:
    """Under the current layout: the selected item's links (hidden until an item is picked)."""
    with gr.Row(visible=False, elem_id="results-links") as row:
        compact = dict(size="sm", scale=0, min_width=170)
        replay = gr.Button("Replay in Probe", elem_id="results-replay", **compact)
        viewed = item_view()
        lens = gr.Button(f"{get_audit(viewed).view_label if viewed else 'View'} in Internals", elem_id="results-lens",
                         visible=viewed is not None, **compact)
        explain = gr.Button("Explain in Probe", elem_id="results-explain", **compact)
    return row, ItemButtons(replay, lens, explain, Beside("results-links"))


def audit_picker(store: Store, run_id: str | None, current: str | None) -> gr.Dropdown:
    """The audit filter over the run's audits, keeping ``current`` when the run has it (a link's, or the one
    picked before the run changed), else all."""
    audits = [results.ALL] + (list(store.audits(run_id)["audit"]) if run_id else [])
    return gr.Dropdown(choices=audits, value=current if current in audits else results.ALL)


def _runs(lab: Lab, tab: gr.Tab) -> tuple[gr.Dropdown, Outputs, gr.Number, gr.State, ItemButtons]:
    run_id = gr.State(None)
    items_state = gr.State(None)
    # The selected item's stored id: a hidden field, not a State, so the browser can put it into the URL.
    item_state = gr.Number(None, precision=0, visible="hidden", elem_id="results-item-index")
    with gr.Row(equal_height=False, elem_classes="stack-on-phone"):
        text = gr.Textbox(label="Filter (run id, model or audit)", scale=4, elem_id="results-filter")
        status = gr.Dropdown(results.STATUSES, value=results.ALL, label="Status", scale=2, elem_id="results-status")
        refresh = gr.Button("Refresh", scale=1, elem_id="results-refresh")
    runs = gr.Dataframe(results.runs_frame(lab.store).head(0), label="Runs (newest first)", interactive=False,
                        max_height=260, elem_id="results-runs", elem_classes="scroll-table")
    with gr.Row(equal_height=True, elem_classes="stack-on-phone"):
        run = gr.Dropdown(label="Run", scale=3, elem_id="results-run")
        compare = gr.Dropdown(label="Compare with", multiselect=True, scale=3, elem_id="results-compare")
    run_msg = Beside("results-run")
    summary = gr.Markdown(elem_id="results-summary")
    verdict = gr.HTML(elem_id="results-verdict")
    with gr.Accordion("Every metric (one column per run)", open=False, elem_id="results-metrics-box"):
        metrics = gr.Dataframe(compare_frame(lab.store, []), interactive=False, elem_id="results-metrics",
                               elem_classes="scroll-table")
    with gr.Row(equal_height=True, elem_classes="stack-on-phone"):
        audit = gr.Dropdown([results.ALL], value=results.ALL, label="Audit", elem_id="results-audit")
        split = gr.Dropdown(results.SPLITS, value=results.ALL, label="Split",
                            elem_id="results-split")
        fact = gr.Textbox(label="Fact id contains", elem_id="results-fact")
        recovered = gr.Checkbox(False, label="Recovered only", elem_id="results-recovered")
    items_msg = Beside("results-items")
    count = gr.Markdown(elem_id="results-count")
    items = gr.Dataframe(pd.DataFrame(columns=ITEM_COLUMNS), label="Items (select a row for the full record)",
                         interactive=False, wrap=True, max_height=420, column_widths=ITEM_WIDTHS,
                         pinned_columns=1, elem_id="results-items", elem_classes="scroll-table")
    detail = gr.HTML(elem_id="results-item")
    links, buttons = item_buttons()
    with gr.Row(equal_height=True, elem_classes="stack-on-phone"):
        fmt = gr.Radio(list(EXPORT_FORMATS), value="parquet", label="Download the filtered items as", scale=3,
                       elem_id="results-format")
        with gr.Column(scale=1, min_width=150):
            export = gr.Button("Prepare download", elem_id="results-export")
            download = gr.DownloadButton("Download", visible=False, variant="primary", elem_id="results-download")
    export_msg = Beside("results-export")
    with gr.Column(elem_id="results-plots"):
        run_plots(lab, run_id, "results-plots")

    refreshed = Outputs(runs=runs, run=run, compare=compare)
    chosen_run = Outputs(run_id=run_id, summary=summary, verdict=verdict, metrics=metrics, audit=audit)
    listed = Outputs(frame=items_state, items=items, count=count, detail=detail, links=links)

    @run_msg
    def on_refresh(text_: str, status_: str, current: str | None, request: gr.Request):
        frame = results.runs_frame(lab.view(request), text_, status_)
        picker = run_dropdown(frame, current)
        return refreshed(runs=frame, run=picker, compare=gr.Dropdown(choices=picker.choices))

    @run_msg
    def on_run(run_id_: str | None, compare_: list[str] | None, audit_: str | None, request: gr.Request):
        store = lab.view(request)
        if not run_id_:
            return chosen_run(run_id=None, summary="", verdict="", metrics=None, audit=audit_picker(store, None, None))
        chosen = [run_id_] + [r for r in compare_ or [] if r != run_id_]
        board = collect_runs(store, chosen)
        return chosen_run(run_id=run_id_, summary=run_summary(store, run_id_), verdict=grid_html(board, link=lab_link),
                          metrics=compare_frame(store, chosen), audit=audit_picker(store, run_id_, audit_))

    def item_view(frame: pd.DataFrame | None, item_: float | None) -> dict[str, Any]:
        """The selected item in full and its links; nothing when no item is picked, a note when the picked one
        is not among the filtered items (a link edited by hand)."""
        row = results.find_item(frame, item_)
        if row is not None:
            return dict(detail=item_detail(row), links=gr.Row(visible=True))
        missing = frame is not None and item_ is not None and not pd.isna(item_)
        note = f"<p class='vnone'>Item {int(item_)} is not among the items these filters show.</p>" if missing else ""
        return dict(detail=note, links=gr.Row(visible=False))

    @items_msg
    def on_items(run_id_: str | None, audit_: str, split_: str, recovered_: bool, fact_: str, item_: float | None,
                 request: gr.Request):
        if not run_id_:
            return listed(frame=None, items=None, count="", detail="", links=gr.Row(visible=False))
        frame = results.run_items(lab.view(request), run_id_, audit_, split_, recovered_, fact_)
        shown = f"{len(frame)} items match" + (f" (the first {results.MAX_SHOWN_ITEMS} shown; the download has "
                                               "all)" if len(frame) > results.MAX_SHOWN_ITEMS else "")
        return listed(frame=frame, items=results.shown(frame), count=shown, **item_view(frame, item_))

    def on_select(event: gr.SelectData):
        return int(event.row_value[0]) if event.row_value else None

    @export_msg
    def on_export(run_id_: str | None, frame: pd.DataFrame | None, fmt_: str, request: gr.Request):
        if not run_id_:
            raise LabError("pick a run first")
        path = results.export_file(lab.view(request), run_id_, fmt_, frame)
        rows = "all items" if frame is None else f"{len(frame)} items"
        return gr.DownloadButton(f"Download .{fmt_} ({rows})", value=path, visible=True)

    refresh_inputs, refresh_outputs = [text, status, run], refreshed.list
    run_msg.watch(refresh.click(on_refresh, refresh_inputs, refresh_outputs, api_name="runs", **run_msg.events))
    run_msg.watch(gr.on([tab.select, text.submit, status.change], on_refresh, refresh_inputs, refresh_outputs,
                        api_visibility="private", **run_msg.events))
    filters = Outputs(audit=audit, split=split, recovered=recovered, fact=fact)
    item_inputs = [run_id, *filters.list, item_state]
    item_outputs = listed.list
    # The address bar: the run, every filter as applied, and the item (see lab.shell.ui.links).
    placed = params_js(["run", *filters.components, "item"], {"tab": "results"})
    # A run picked by hand starts with no item (an id names an item of one run only).
    run.input(lambda: None, None, item_state, queue=False, api_visibility="private")
    listed_run = run_msg.watch(gr.on([run.change, compare.change], on_run, [run, compare, audit], chosen_run.list,
                                     api_visibility="private", **run_msg.events)).then(
        on_items, item_inputs, item_outputs, api_visibility="private", **items_msg.events)
    listed_run.then(None, [run, *filters.list, item_state], None, js=placed)
    filtered = items_msg.watch(gr.on([audit.input, split.input, recovered.input, fact.submit],
                                     lambda: None, None, item_state, queue=False, api_visibility="private").then(
        on_items, item_inputs, item_outputs, api_visibility="private", **items_msg.events))
    filtered.then(None, [run, *filters.list, item_state], None, js=placed)
    items.select(on_select, None, item_state, api_visibility="private").then(
        None, [run, *filters.list, item_state], None, js=placed)
    # The item shows whichever way it was picked (a row, or the URL while the items were still loading).
    shown_item = Outputs(detail=detail, links=links)
    item_state.change(lambda frame, item_: shown_item(**item_view(frame, item_)), [items_state, item_state],
                      shown_item.list, api_visibility="private")
    export_msg.watch(export.click(on_export, [run_id, items_state, fmt], download, api_name="export_items",
                                  **export_msg.events))
    gr.on([run.change, fmt.change, audit.change, split.change, recovered.change, fact.submit],
          lambda: gr.DownloadButton(visible=False), None, download, queue=False, api_visibility="private")
    return run, filters, item_state, items_state, buttons


def _leaderboard(lab: Lab, tab: gr.Tab) -> gr.Dropdown:
    gr.Markdown("A sweep audits one base against many unlearned checkpoints (`python -m lab sweep SPEC`, or the "
                "Verdicts tab). Each row is a checkpoint; the release gate judges it as its verdict does: it fails "
                "a checkpoint that leaked, one an attack recovers beyond the threshold, or one that cannot be "
                "judged.", elem_classes="tab-intro")
    with gr.Row(equal_height=True, elem_classes="stack-on-phone"):
        sweep = gr.Dropdown(label="Sweep", scale=4, elem_id="results-sweep")
        gate = gr.Slider(0, 100, value=round(100 * GATE), step=1, label="Release gate: fail a hidden cell above (%)",
                         scale=2, elem_id="results-gate")
    sweep_msg = Beside("results-sweep")
    view = board_view("results-board")
    with gr.Row(equal_height=True, elem_classes="stack-on-phone"):
        fmt = gr.Radio(list(FORMATS), value="html", label="Leaderboard report", scale=3, elem_id="results-board-format")
        with gr.Column(scale=1, min_width=150):
            export = gr.Button("Export leaderboard", elem_id="results-board-export")
            download = gr.DownloadButton("Download", visible=False, variant="primary",
                                         elem_id="results-board-download")

    @sweep_msg
    def on_open(current: str | None, request: gr.Request):
        choices = results.sweep_choices(lab.view(request))
        ids = [c[1] for c in choices]
        return gr.Dropdown(choices=choices, value=current if current in ids else (ids[0] if ids else None))

    @sweep_msg
    def on_sweep(sweep_id: str | None, gate_: float, request: gr.Request):
        return view(**board_values(collect_sweep(lab.view(request), sweep_id, gate_ / 100) if sweep_id else None))

    @sweep_msg
    def on_export(sweep_id: str | None, gate_: float, fmt_: str, request: gr.Request):
        if not sweep_id:
            raise LabError("pick a sweep first")
        path = write_sweep_report(lab.view(request), sweep_id, fmt_,
                                  results.scratch_path(f"leaderboard-{sweep_id}.{fmt_}"), gate_ / 100)
        return gr.DownloadButton(f"Download .{fmt_}", value=str(path), visible=True)

    sweep_msg.watch(tab.select(on_open, sweep, sweep, api_visibility="private", **sweep_msg.events))
    sweep_msg.watch(gr.on([sweep.change, gate.release], on_sweep, [sweep, gate], view.list, api_name="leaderboard",
                          **sweep_msg.events))
    sweep.input(None, sweep, None, js=params_js(["sweep"], {"tab": "results"}))
    sweep_msg.watch(export.click(on_export, [sweep, gate, fmt], download, api_visibility="private",
                                 **sweep_msg.events))
    gr.on([sweep.change, fmt.change, gate.release], lambda: gr.DownloadButton(visible=False), None, download,
          queue=False, api_visibility="private")
    return sweep
