"""Verdicts tab: one base against several unlearned models in one action, a verdict per model.

One click runs the chosen audits on every chosen model (a sweep, see
:mod:`lab.shell.ui.dashboard`) with one progress bar over the whole job
(audit k of n, fact checks done, time left); the grid fills as each audit finishes: a row per
model, a state per audit (judged on the 95% interval by :mod:`lab.shell.verdict`,
against the control when one is given), the release gate by the same
judgement, one sentence per model and its worst recovered facts one click
away.  The same leaderboard reopens later in Results → Leaderboard and as
``python -m lab report --sweep ID``.

The control is the reference, never also an audited model: the demo's default
control is ``demo:retrain`` (trained without the forget set), which is then not
ticked as an unlearned model; ticked anyway, it is left out and the page says
so beside the control field.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

import gradio as gr

from audits import get_audit
from lab.core import settings
from lab.core.batching import Cancelled
from lab.core.policy import current as current_policy
from lab.core.store import Store
from lab.demo.build import read_manifest
from lab.shell.report.leaderboard import GATE, collect_runs, collect_sweep
from lab.shell.ui import auditing
from lab.shell.ui.auditing import default_new_tokens
from lab.shell.ui.background import Finished, in_background, progress_html
from lab.shell.ui.board import board_values, board_view
from lab.shell.sweep import SweepSpec
from lab.shell.ui.dashboard import Tally, control_note, dashboard_spec, parse_models, run_dashboard
from lab.shell.ui.feedback import Beside, warning_html
from lab.shell.ui.fields import check_limit, check_new_tokens, number_field, tokens_label
from lab.shell.ui.format_form import format_fields, format_form
from lab.shell.ui.updates import Outputs
from lab.shell.ui.session import DEMO_UNLEARNED, Lab, stop_button
from lab.shell.ui.turns import JOB_EVENTS, Turn, waited

DEFAULT_MODELS = ["npo", "graddiff", "ga"]  # the demo's three unlearners
DEFAULT_CONTROL = "demo:retrain"  # the demo's model trained without the forget set: the reference
DASHBOARD_LIMIT = 30  # facts per split by default: a verdict in about a minute on a laptop CPU


def demo_models() -> list[str]:
    """The unlearned models the built demo has (all the lab knows of before it is built)."""
    manifest = read_manifest(settings.demo_dir()) or {}
    built = [m for m in manifest.get("accuracy", {}) if m != "base"]
    return [m for m in DEMO_UNLEARNED if m in built] or list(DEMO_UNLEARNED)


def build(lab: Lab, tab: gr.Tab) -> gr.Button:
    """The tab's content; returns its Run button."""
    lim = current_policy()
    names = auditing.available_audits()
    gr.Markdown("Audit one base model against several unlearned models at once and get a verdict per model: "
                "**leaked** (it still answers directly), **hidden** (an attack brings answers back beyond the "
                "control), **no recovery shown** (nothing came back, but that is not proof) or **forgotten** "
                "(nothing came back under audits with demonstrated power).", elem_classes="tab-intro")
    with gr.Row(equal_height=False, elem_classes="stack-on-phone"):
        with gr.Column(scale=4, min_width=280):
            base = gr.Textbox("demo:base", label="Base model", elem_id="verdicts-base")
            models = gr.CheckboxGroup(DEMO_UNLEARNED, value=DEFAULT_MODELS, label="Unlearned demo models",
                                      elem_id="verdicts-models")
            typed = gr.Textbox(label="More unlearned models (Hugging Face ids or folders, one per line)", lines=2,
                               elem_id="verdicts-more")
            audits = gr.CheckboxGroup(names, value=[a for a in names if get_audit(a).default_on], label="Audits",
                                      elem_id="verdicts-audits")
            with gr.Row(equal_height=True):
                with gr.Column(min_width=140):
                    limit, _ = number_field(lim.default_limit or DASHBOARD_LIMIT, "Facts per split (0: all)",
                                            "verdicts-limit", lambda value, _: check_limit(value))
                with gr.Column(min_width=140):
                    max_new, _ = number_field(default_new_tokens(), tokens_label(lab.context(base.value)),
                                              "verdicts-max-tokens",
                                              lambda value, ref: check_new_tokens(value, lab.context(ref), ref),
                                              about=base)
            reference = gr.Textbox(DEFAULT_CONTROL, label="Control model (optional; the reference, not audited "
                                   "itself): cells are judged on the rate beyond the control's",
                                   elem_id="verdicts-reference")
            control_msg = gr.HTML("", elem_id="verdicts-reference-note", elem_classes="lab-msg", min_height=0)
            form = format_form("verdicts")
            with gr.Row():
                run = gr.Button("Audit every model", variant="primary", elem_id="verdicts-run")
                stop = gr.Button("Stop", variant="stop", elem_id="verdicts-stop")
            run_msg = Beside("verdicts-run")
        with gr.Column(scale=7, min_width=280):
            out = Outputs(progress=gr.HTML(elem_id="verdicts-progress"), status=gr.Markdown(elem_id="verdicts-status"),
                          run=run) + board_view("verdicts")

    @run_msg
    def on_run(base_, models_, typed_, audits_, limit_, max_new_, reference_, template_, chat_, system_, vars_,
               split_, request: gr.Request):
        fields = {"base": base_, **auditing.run_fields(audits_, None, limit_, max_new_, reference_, base_,
                                                       lab.context(base_)),
                  **format_fields(template_, chat_, system_, vars_, split_)}
        spec = dashboard_spec(fields, parse_models(models_, typed_, reference_))
        store = lab.view(request)  # in a Space the sweep and its runs are this visitor's
        stop_event = lab.stop_event(request.session_hash)
        with lab.turns.line_up("sweep") as turn:
            if not (yield from waited(turn, stop_event, out)):
                return
            for update in dashboard_updates(store, spec, stop_event, turn):
                yield out(**update)

    inputs = [base, models, typed, audits, limit, max_new, reference, *form.inputs]
    started = run_msg.watch(run.click(on_run, inputs, out.list, api_name="verdicts", **JOB_EVENTS, **run_msg.events))
    started.then(lambda: gr.Button(interactive=True), None, run, queue=False, api_visibility="private")
    stop_button(lab, stop)
    gr.on([models.change, typed.change, reference.change],
          lambda *picked: warning_html(control_note(*picked)), [models, typed, reference], control_msg, queue=False,
          api_visibility="private")
    sized = Outputs(models=models, max_new=max_new)
    gr.on([tab.select, base.blur],
          lambda ref: sized(models=gr.CheckboxGroup(choices=demo_models()),
                            max_new=gr.Number(label=tokens_label(lab.context(ref)))),
          base, sized.list, queue=False, api_visibility="private")
    return run


def dashboard_updates(store: Store, spec: SweepSpec, stop_event: Any, turn: Turn) -> Iterator[dict[str, Any]]:
    """The dashboard's sweep on a worker thread in its ``turn``, as named updates: one progress bar over every
    audit of every model (also told to the turn, for those waiting), the grid filled as runs end, then the
    sweep's own leaderboard."""
    tally, started, runs, sweep_id = Tally(len(spec.pairs), len(spec.audits)), time.monotonic(), [], None

    def bar(done: int, doing: str) -> str:
        return progress_html(done, tally.total, started, doing, checks=tally.checks)

    yield dict(progress=bar(0, tally.doing), status="Starting…", run=gr.Button(interactive=False),
               **board_values(None))
    try:
        for event in in_background(lambda emit: run_dashboard(store, spec, stop_event, emit), "lab-sweep"):
            if isinstance(event, Finished):
                break
            tally.add(event)
            turn.progress(tally.done / tally.total)
            sweep_id = event.run_id if event.kind == "sweep" else sweep_id
            runs += [event.run_id] if event.kind == "run" else []
            update = dict(progress=bar(tally.done, tally.doing),
                          status=f"Sweep `{sweep_id}`: {tally.done} of {tally.total} audits finished")
            if event.kind in ("done", "pair") and runs:
                update.update(board_values(collect_runs(store, runs, GATE, "Verdicts so far")))
            yield update
    except Cancelled:
        yield dict(progress=bar(tally.done, "stopped"),
                   status=f"Stopped: sweep `{sweep_id}` is interrupted; every finished audit is kept.",
                   **board_values(collect_runs(store, runs, GATE) if runs else None))
        return
    board = collect_sweep(store, sweep_id)
    yield dict(progress=bar(tally.total, "finished"),
               status=f"Sweep `{sweep_id}`: {board.sweep['status'] if board.sweep else 'done'} · reopen it in "
                      f"Results → Leaderboard or with `python -m lab report --sweep {sweep_id}`",
               **board_values(board))
