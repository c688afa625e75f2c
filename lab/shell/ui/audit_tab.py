"""Audit tab: pick facts, audits and their options, run with progress, read the numbers.

The progress bar follows the lab's tqdm bars (every batched model call has
one).  Stop ends the run before its next batch; the run is then stored as
``interrupted`` with every row written so far.
"""

from __future__ import annotations

import gradio as gr

from lab.core.batching import Cancelled
from lab.core.policy import current as current_policy
from lab.shell.runner import execute
from lab.shell.ui import auditing
from lab.shell.ui.feedback import user_errors
from lab.shell.ui.plots import run_plots
from lab.shell.ui.session import MODEL_QUEUE, Lab, PairSpec, require_pair
from lab.shell.ui.views import facts_summary, metrics_frame, run_summary


def build(lab: Lab, state: gr.State) -> None:
    """The tab's content: inputs on the left, the run's status, numbers and plots on the right and below."""
    lim = current_policy()
    names = auditing.available_audits()
    gr.Markdown("Run audits on the loaded pair. Every prompt and both outputs are stored; "
                "open any run later on the Results tab.", elem_classes="tab-intro")
    run_id = gr.State(None)
    with gr.Row(equal_height=False):
        with gr.Column(scale=4):
            source = gr.Radio(auditing.fact_sources(), value=auditing.DEMO_FACTS, label="Facts",
                              elem_id="audit-facts-source")
            upload = gr.File(label="Facts file (JSONL, JSON, CSV, Parquet; TOFU, MUSE, RWKU)", visible=False,
                             file_types=[".jsonl", ".json", ".csv", ".parquet"], type="filepath",
                             elem_id="audit-facts-file")
            server_path = gr.Textbox(label="Facts file or benchmark suite on the server",
                                     placeholder="/data/facts.jsonl, tofu:/data/TOFU:forget10, muse:/data/muse:news, "
                                                 "rwku:/data/RWKU, wmdp:/data/wmdp:bio",
                                     visible=False, elem_id="audit-facts-path")
            facts_info = gr.Markdown(elem_id="audit-facts-info")
            audits = gr.CheckboxGroup(names, value=["direct"] if "direct" in names else [], label="Audits",
                                      elem_id="audit-select")
            with gr.Row():
                limit = gr.Number(auditing.default_limit(), label="Facts per split (0: all)", precision=0,
                                  minimum=0, elem_id="audit-limit")
                max_new = gr.Number(min(24, lim.max_new_tokens), label="Max new tokens", precision=0, minimum=1,
                                    maximum=lim.max_new_tokens, elem_id="audit-max-tokens")
            reference = gr.Textbox(label="Reference model (optional, e.g. demo:retrain; for PrivLeak)",
                                   elem_id="audit-reference")
        with gr.Column(scale=6):
            options = gr.Dataframe(auditing.options_frame(audits.value or []), label="Audit options (edit 'value')",
                                   interactive=True, static_columns=[0, 1, 2, 3], elem_id="audit-options")
            with gr.Row():
                run = gr.Button("Run audits", variant="primary", elem_id="audit-run")
                stop = gr.Button("Stop", variant="stop", elem_id="audit-stop")
            status = gr.Markdown(min_height=64, elem_id="audit-status")
            metrics = gr.Dataframe(metrics_frame({}), label="Headline numbers", interactive=False,
                                   elem_id="audit-metrics")
    with gr.Column(elem_id="audit-plots"):
        run_plots(lab, run_id, "audit-plots")

    def on_source(choice: str):
        return gr.File(visible=choice == auditing.UPLOAD), gr.Textbox(visible=choice == auditing.SERVER_PATH)

    @user_errors
    def on_facts(source_: str, upload_: str | None, path_: str):
        if source_ != auditing.DEMO_FACTS and not (upload_ or (path_ or "").strip()):
            return ""
        return facts_summary(auditing.load_source(source_, upload_, path_))

    @user_errors
    def on_run(spec: PairSpec | None, source_, upload_, path_, names_, options_, limit_, max_new_, reference_,
               request: gr.Request, progress=gr.Progress(track_tqdm=True)):
        require_pair(lab, spec)
        run = auditing.run_spec(spec, source_, upload_, path_, names_, options_, limit_, max_new_, reference_)
        progress(0, desc="starting")
        prepared = auditing.prepared_run(lab, spec, run)
        try:
            outcome = execute(prepared, lab.store, lab.stop_event(request.session_hash))
        except Cancelled:
            return (prepared.run_id, run_summary(lab.store, prepared.run_id) +
                    "\n\nStopped: the rows written so far are kept.", metrics_frame(lab.store.metrics_dict(prepared.run_id)))
        return (outcome.run_id, run_summary(lab.store, outcome.run_id),
                metrics_frame(lab.store.metrics_dict(outcome.run_id)))

    source.change(on_source, source, [upload, server_path], queue=False, api_visibility="private")
    gr.on([source.change, upload.change, server_path.submit], on_facts, [source, upload, server_path], facts_info,
          api_visibility="private")
    audits.change(auditing.options_frame, [audits, options], options, queue=False, api_visibility="private")
    run.click(on_run, [state, source, upload, server_path, audits, options, limit, max_new, reference],
              [run_id, status, metrics], api_name="run_audit", concurrency_id=MODEL_QUEUE, concurrency_limit=1,
              show_progress_on=[status])

    def on_stop(request: gr.Request) -> None:
        lab.stop(request.session_hash)

    stop.click(on_stop, None, None, queue=False, api_name="stop_audit")
