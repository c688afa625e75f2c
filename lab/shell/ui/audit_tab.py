"""Audit tab: pick facts, audits and their options, run with progress over the whole run, read the verdict.

The run goes through the runner on a worker thread (:mod:`lab.shell.ui.background`);
its events (audit k of n started or finished) stream to one progress bar with
the fact checks done (each audit's facts, counted as the runner hands them
out) and the time left, and each audit's headline numbers appear as soon as it
finishes.  Run is disabled while the run goes.  Stop ends the run before its
next batch; the run is then stored as ``interrupted`` with every row written so
far.  When it ends, the run's verdict row (:mod:`lab.shell.verdict`) shows
forgotten / hidden / leaked per audit, and a run where some audits failed reads
"partial: 8 of 9 audits finished", not "failed".

Only audits the loaded models can run are offered; the others are named with
the reason (a served model may lack log-probs or weights).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterator

import gradio as gr

from audits import get_audit
from lab.core.batching import Cancelled
from lab.core.store import Store
from lab.shell.report.grid import grid_html, lab_link
from lab.shell.report.leaderboard import collect_runs
from lab.shell.runner import PreparedRun, execute
from lab.shell.spec import PairSpec
from lab.shell.ui import auditing
from lab.shell.ui.background import Finished, in_background, progress_html
from lab.shell.ui.feedback import Beside, note_html
from lab.shell.ui.fields import check_limit, check_new_tokens, number_field, tokens_label
from lab.shell.ui.format_form import preview_html
from lab.shell.ui.plots import run_plots
from lab.shell.ui.session import MODEL_QUEUE, Lab, require_pair, stop_button
from lab.shell.ui.turns import JOB_EVENTS, Turn, waited
from lab.shell.ui.updates import Outputs
from lab.shell.ui.views import facts_summary, metrics_frame, run_summary


def verdict_row(store: Store, run_id: str) -> str:
    """The run's verdict grid: one model, a state per audit, its sentence and worst recovered facts."""
    return grid_html(collect_runs(store, [run_id]), link=lab_link)


@dataclass
class AuditForm:
    """The tab's inputs."""

    source: gr.Radio
    upload: gr.File
    server_path: gr.Textbox
    facts_msg: Beside
    facts_info: gr.Markdown
    audits: gr.CheckboxGroup
    not_offered: gr.Markdown
    prompt_format: gr.HTML
    limit: gr.Number
    max_new: gr.Number
    reference: gr.Textbox
    options: gr.Dataframe | None = None  # the options table, placed in the right column

    @property
    def run_inputs(self) -> list[Any]:
        """What a run reads, after the session's pair (the API's order: keep it)."""
        return [self.source, self.upload, self.server_path, self.audits, self.options, self.limit, self.max_new,
                self.reference]


def facts_inputs() -> tuple[gr.Radio, gr.File, gr.Textbox, Beside, gr.Markdown]:
    """Where the facts come from: the demo's, an upload, or (not in a Space) a path on the server."""
    source = gr.Radio(auditing.fact_sources(), value=auditing.DEMO_FACTS, label="Facts", elem_id="audit-facts-source")
    upload = gr.File(label="Facts file (JSONL, JSON, CSV, Parquet; TOFU, MUSE, RWKU)", visible=False,
                     file_types=[".jsonl", ".json", ".csv", ".parquet"], type="filepath", elem_id="audit-facts-file")
    server_path = gr.Textbox(label="Facts file or benchmark suite on the server",
                             placeholder="/data/facts.jsonl, tofu:/data/TOFU:forget10, muse:/data/muse:news, "
                                         "rwku:/data/RWKU, wmdp:/data/wmdp:bio",
                             visible=False, elem_id="audit-facts-path")
    return source, upload, server_path, Beside("audit-facts"), gr.Markdown(elem_id="audit-facts-info")


def form_inputs(lab: Lab, state: gr.State, names: list[str]) -> AuditForm:
    """The left column: facts, audits, limits, reference (the options table is added by :func:`options_table`);
    each number answered beside it, max new tokens bounded by the session pair's context."""
    source, upload, server_path, facts_msg, facts_info = facts_inputs()
    audits = gr.CheckboxGroup(names, value=default_audits(names), label="Audits", elem_id="audit-select")
    not_offered = gr.Markdown(elem_id="audit-unavailable")
    with gr.Accordion("Prompt format of the loaded pair (set on the Models tab)", open=False,
                      elem_id="audit-format-box"):
        prompt_format = gr.HTML(elem_id="audit-format")

    def tokens_ok(value: float | None, spec: PairSpec | None) -> int:
        return check_new_tokens(value, lab.context(spec.base) if spec else None, spec.base if spec else "the model")

    with gr.Row(equal_height=True):
        with gr.Column(min_width=140):
            limit, _ = number_field(auditing.default_limit(), "Facts per split (0: all)", "audit-limit",
                                    lambda value, _: check_limit(value))
        with gr.Column(min_width=140):
            max_new, _ = number_field(auditing.default_new_tokens(), tokens_label(None), "audit-max-tokens", tokens_ok,
                                      about=state)
    reference = gr.Textbox(label="Reference model (optional, e.g. demo:retrain; the control)",
                           elem_id="audit-reference")
    return AuditForm(source, upload, server_path, facts_msg, facts_info, audits, not_offered, prompt_format, limit,
                     max_new, reference)


def options_table(form: AuditForm) -> None:
    """Every option of the ticked audits, editable in its 'value' column."""
    with gr.Accordion("Audit options (edit the 'value' column)", open=False, elem_id="audit-options-box"):
        form.options = gr.Dataframe(auditing.options_frame(form.audits.value or []), interactive=True,
                                    static_columns=[0, 1, 2, 3], column_widths=["90px", "150px", "60px", "90px",
                                                                                "110px", "360px"],
                                    elem_id="audit-options", elem_classes="scroll-table")


def default_audits(names: list[str]) -> list[str]:
    """The audits ticked when the tab opens: those that describe themselves as on by default."""
    return [n for n in names if get_audit(n).default_on]


def build(lab: Lab, state: gr.State) -> None:
    """The tab's content: inputs on the left, the run's progress, verdict and numbers on the right and below."""
    gr.Markdown("Run audits on the loaded pair. Every prompt and both outputs are stored; "
                "open any run later on the Results tab.", elem_classes="tab-intro")
    run_id = gr.State(None)
    with gr.Row(equal_height=False, elem_classes="stack-on-phone"):
        with gr.Column(scale=4, min_width=280):
            form = form_inputs(lab, state, auditing.available_audits())
        with gr.Column(scale=6, min_width=280):
            with gr.Row():
                run = gr.Button("Run audits", variant="primary", elem_id="audit-run")
                stop = gr.Button("Stop", variant="stop", elem_id="audit-stop")
            run_msg = Beside("audit-run")
            out = Outputs(run_id=run_id, status=gr.Markdown(min_height=48, elem_id="audit-status"),
                          progress=gr.HTML(elem_id="audit-progress"), verdict=gr.HTML(elem_id="audit-verdict"),
                          numbers=gr.Dataframe(metrics_frame({}), label="Headline numbers", interactive=False,
                                               elem_id="audit-metrics", elem_classes="scroll-table"),
                          run=run)
            options_table(form)
    with gr.Column(elem_id="audit-plots"):
        run_plots(lab, run_id, "audit-plots")
    wire(lab, state, form, out, run_msg, stop)


def run_updates(store: Store, prepared: PreparedRun, stop_event: Any, turn: Turn) -> Iterator[dict[str, Any]]:
    """The run on a worker thread in its ``turn``, as named updates: progress over the whole run (also told to
    the turn, for those waiting), numbers as audits end, then the verdict (or what was kept when it was
    stopped)."""
    rid, started, done, total = prepared.run_id, time.monotonic(), 0, len(prepared.spec.audits)
    counts = auditing.fact_counts(prepared.facts, list(prepared.spec.audits))

    def bar(done_: int, doing: str) -> str:
        return progress_html(done_, total, started, doing, checks=auditing.checks_done(counts, done_))

    # The plots follow run_id: it is set once the run has ended, so they draw what the store then holds.
    yield dict(run_id=None, status=f"Running `{rid}`…", progress=bar(0, "starting"), verdict="",
               run=gr.Button(interactive=False))
    try:
        for event in in_background(lambda emit: execute(prepared, store, stop_event, emit), "lab-run"):
            if isinstance(event, Finished):
                break
            done = event.index - (event.status == "running")
            doing = f"{event.audit} {'running' if event.status == 'running' else event.status}"
            turn.progress(done / total)
            update = dict(status=f"Running `{rid}`: {done} of {total} audits finished", progress=bar(done, doing))
            if event.status != "running":
                update["numbers"] = metrics_frame(store.metrics_dict(rid))
            yield update
    except Cancelled:
        yield dict(run_id=rid, status=run_summary(store, rid) + "\n\nStopped: the rows written so far are kept.",
                   progress=bar(done, "stopped"), numbers=metrics_frame(store.metrics_dict(rid)),
                   verdict=verdict_row(store, rid))
        return
    yield dict(run_id=rid, status=run_summary(store, rid), progress=bar(total, "finished"),
               numbers=metrics_frame(store.metrics_dict(rid)), verdict=verdict_row(store, rid))


def wire(lab: Lab, state: gr.State, form: AuditForm, out: Outputs, run_msg: Beside, stop: gr.Button) -> None:
    """The tab's events: facts read as they are picked, audits offered per pair, the run and its Stop."""

    def on_source(choice: str):
        return gr.File(visible=choice == auditing.UPLOAD), gr.Textbox(visible=choice == auditing.SERVER_PATH)

    @form.facts_msg
    def on_facts(source_: str, upload_: str | None, path_: str | None, request: gr.Request):
        hint = auditing.facts_hint(source_, upload_, path_)
        if hint is not None:
            return note_html(hint)
        return facts_summary(auditing.load_source(source_, upload_, path_))

    offered = Outputs(audits=form.audits, not_offered=form.not_offered, max_new=form.max_new,
                      prompt_format=form.prompt_format)

    def on_pair(spec: PairSpec | None, chosen: list[str]):
        if spec is None:
            return offered()
        pair = lab.pair(spec)
        names_, why = auditing.offered(pair)
        return offered(audits=gr.CheckboxGroup(choices=names_, value=[n for n in chosen or [] if n in names_]),
                       not_offered=auditing.unavailable_note(why),
                       max_new=gr.Number(label=tokens_label(pair.base.context)),
                       prompt_format=preview_html(pair.base))

    @run_msg
    def on_run(spec: PairSpec | None, source_, upload_, path_, names_, options_, limit_, max_new_, reference_,
               request: gr.Request):
        require_pair(lab, spec)
        store = lab.view(request)  # in a Space the run is this visitor's
        run_ = auditing.run_spec(spec, source_, upload_, path_, names_, options_, limit_, max_new_, reference_,
                                 lab.context(spec.base))
        stop_event = lab.stop_event(request.session_hash)
        with lab.turns.line_up("audit") as turn:
            if not (yield from waited(turn, stop_event, out)):
                return
            prepared = auditing.prepared_run(lab, spec, run_)
            for update in run_updates(store, prepared, stop_event, turn):
                yield out(**update)

    form.source.change(on_source, form.source, [form.upload, form.server_path], queue=False,
                       api_visibility="private")
    form.facts_msg.watch(gr.on([form.source.change, form.upload.change, form.server_path.submit], on_facts,
                               [form.source, form.upload, form.server_path], form.facts_info,
                               api_visibility="private", **form.facts_msg.events))
    state.change(on_pair, [state, form.audits], offered.list, api_visibility="private",
                 concurrency_id=MODEL_QUEUE, concurrency_limit=1)
    form.audits.change(auditing.options_frame, [form.audits, form.options], form.options, queue=False,
                       api_visibility="private")
    running = run_msg.watch(out["run"].click(
        on_run, [state, *form.run_inputs], out.list, api_name="run_audit", **JOB_EVENTS, **run_msg.events))
    running.then(lambda: gr.Button(interactive=True), None, out["run"], queue=False, api_visibility="private")

    stop_button(lab, stop, api_name="stop_audit")
