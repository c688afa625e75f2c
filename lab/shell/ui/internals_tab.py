"""Internals tab: inside both models for one fact, a view per audit that offers one.

Every audit with a per-fact view (``Audit.has_fact_view``) gets a row here:
its options, its button and its figure (``Audit.fact_view``), fed from the
fact fields it reads (``view_reads``).  The logit lens, for one, shows where
the answer token ranks at every layer (an answer that ranks high in the
middle layers of the unlearned model and drops only at the end was hidden,
not removed); the SAE view where the fact's entity sits on the known <->
unknown axis of SAE latents in both models.  Expensive shared work (an SAE,
an axis) is kept across requests (``Lab.remember``).

A view that reads a question can take it as a whole prompt sent as typed (a
stored item's prompt, from the Results tab's link): the audit's own view, with
the prompt template left out (:func:`lab.shell.ui.probe.as_typed`).

A view can be long work (the SAE view trains an SAE the first time: minutes on
a CPU), so it runs as a job (:mod:`lab.shell.ui.turns`): it waits its turn with
its place in line shown, then runs on a worker thread whose steps (each batched
model call, each training step: :func:`lab.core.batching.reporting`) move a
progress bar with the time left, and its Stop ends it before the next step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterator

import gradio as gr

from audits import available, get_audit
from lab.core.batching import Cancelled, cancellable, reporting
from lab.core.facts import Fact
from lab.core.options import build_options, option_specs
from lab.core.policy import current as current_policy
from lab.shell.ui import facts_picker
from lab.shell.report.style import styled
from lab.shell.ui.background import Finished, clock, in_background, phase_html, waiting_html
from lab.shell.ui.feedback import Beside, note_html
from lab.shell.ui.probe import as_typed
from lab.shell.ui.probe_tab import QUESTION, RAW
from lab.shell.spec import PairSpec
from lab.shell.ui.session import Lab, require_pair, stop_button
from lab.shell.ui.turns import JOB_EVENTS
from lab.shell.ui.updates import Outputs


def fact_views() -> list[str]:
    """The audits with a per-fact view (``has_fact_view``), in registry order."""
    return [name for name in available() if get_audit(name).has_fact_view]


def item_view() -> str | None:
    """The view a stored item opens (its prompt and answer): the first that reads a question and an answer."""
    return next((n for n in fact_views() if {"question", "answer"} <= set(get_audit(n).view_reads)), None)


@dataclass
class InternalsInputs:
    """What other tabs fill to open a view here (an item's prompt and answer)."""

    fact: gr.Dropdown
    question: gr.Textbox
    answer: gr.Textbox
    mode: gr.Radio
    view_after: Callable[[str, Any], Any]  # chains an audit's view after another event's success


def view(lab: Lab, audit: str, pair_spec: PairSpec | None, fact: Fact, values: dict[str, str], raw: bool = False):
    """One audit's per-fact view (its ``fact_view`` hook), with options checked like a run's; ``raw``: the
    question is a whole prompt, sent as typed."""
    pair = require_pair(lab, pair_spec)
    pair = as_typed(pair) if raw else pair
    cls = get_audit(audit)
    options = build_options(cls.Options, audit, values)
    current_policy().check_options(audit, options)
    return styled(cls().fact_view(pair, fact, facts_picker.demo_facts(), options, lab.remember))


def view_updates(lab: Lab, audit: str, job: Callable[[], Any], stop: Any) -> Iterator[dict[str, Any]]:
    """One view as a job, by output name (``progress``, ``plot``): its turn waited for with its place shown,
    then ``job()`` on a worker thread, each reported step moving the bar, until its figure."""
    started = time.monotonic()
    phase = {"what": "", "since": started}
    sent = {"what": "", "at": 0.0}

    def heard(emit: Callable[[Any], None], what: str, done: int, total: int) -> None:
        """A step reported: passed on when it starts something new, ends it, or 0.3 s after the last one (an SAE
        trains thousands of steps; the page needs a few updates a second)."""
        now = time.monotonic()
        if what != sent["what"] or done >= total or now - sent["at"] >= 0.3:
            sent.update(what=what, at=now)
            emit((what, done, total))

    def work(emit: Callable[[Any], None]) -> Any:
        with cancellable(stop), reporting(partial(heard, emit)):
            return job()

    with lab.turns.line_up(get_audit(audit).view_label) as turn:
        for note in turn.wait(stop):
            yield dict(progress=waiting_html(note))
        try:
            for event in in_background(work, f"lab-{audit}-view"):
                if isinstance(event, Finished):
                    yield dict(progress="", plot=event.value)
                    return
                what, done, total = event
                if what != phase["what"]:
                    phase.update(what=what, since=time.monotonic())
                turn.progress(done / total if total else 0.0, what)
                yield dict(progress=phase_html(what, done, total, started, phase["since"]))
        except Cancelled:
            yield dict(progress=note_html(f"Stopped after {clock(time.monotonic() - started)}: nothing was kept."))


def view_controls(audit: str) -> tuple[list[gr.Textbox], gr.Button, gr.Button, Beside, Outputs]:
    """One view's row: its options (as text, each with its default), its button and Stop, message place, progress
    and plot (the outputs, by name)."""
    cls = get_audit(audit)
    specs = {s.name: s for s in option_specs(cls.Options)}
    with gr.Row(equal_height=True, elem_classes="stack-on-phone"):
        boxes = [gr.Textbox(specs[name].default_text, label=f"{cls.view_label}: {name}", info=specs[name].help,
                            scale=2, elem_id=f"internals-{cls.view_id}-{name}") for name in cls.view_options]
        with gr.Column(scale=1, min_width=160):
            button = gr.Button(cls.view_label, variant="primary", elem_id=f"internals-{cls.view_id}")
            stop = gr.Button("Stop", variant="stop", size="sm", elem_id=f"internals-{cls.view_id}-stop")
    message = Beside(f"internals-{cls.view_id}")
    progress = gr.HTML("", elem_id=f"internals-{cls.view_id}-progress", elem_classes=["lab-msg", "view-progress"],
                       min_height=0)
    plot = gr.Plot(label=f"{cls.view_label}: {cls.title}", elem_id=f"internals-{cls.view_id}-plot")
    return boxes, button, stop, message, Outputs(progress=progress, plot=plot)


def build(lab: Lab, state: gr.State) -> InternalsInputs:
    """The tab's content, a view per audit that has one; returns the inputs other tabs fill (the fact picker
    is filled when the tab opens)."""
    gr.Markdown("Look inside both models for one fact: does the unlearned model still compute the answer "
                "in its middle layers, and does it still represent the person as known?", elem_classes="tab-intro")
    with gr.Row(equal_height=True, elem_classes="stack-on-phone"):
        fact = gr.Dropdown(label="Demo fact", scale=3, elem_id="internals-fact")
        question = gr.Textbox(label="Question or prompt", scale=3, elem_id="internals-question")
        answer = gr.Textbox(label="Answer", scale=2, elem_id="internals-answer")
        entity = gr.Textbox(label="Entity", scale=2, elem_id="internals-entity")
    mode = gr.Radio([QUESTION, RAW], value=QUESTION, label="Send the question as", elem_id="internals-mode")
    fields = {"question": question, "answer": answer, "entity": entity}
    filled = Outputs(**fields, mode=mode)
    fact.change(lambda fact_id: filled(**facts_picker.fill(fact_id, tuple(fields)), mode=QUESTION) if fact_id
                else filled(), fact, filled.list, queue=False, api_visibility="private")
    wired: dict[str, tuple[Callable[..., Any], set[Any], Outputs, Beside]] = {}
    for audit in fact_views():
        boxes, button, stop, message, out = view_controls(audit)
        read = {name: fields[name] for name in get_audit(audit).view_reads}
        handler = message(view_handler(lab, audit, state, mode, read, boxes, out))
        inputs = {state, mode, *read.values(), *boxes}
        message.watch(button.click(handler, inputs, out.list, api_name=f"{audit}_view", **message.events,
                                   **JOB_EVENTS))
        stop_button(lab, stop)
        wired[audit] = (handler, inputs, out, message)

    def view_after(audit: str, trigger: Any) -> Any:
        """``audit``'s view once ``trigger`` succeeded (an item's link fills the prompt and answer first)."""
        handler, inputs, out, message = wired[audit]
        return message.watch(trigger.success(handler, inputs, out.list, api_visibility="private", **message.events,
                                             **JOB_EVENTS))

    return InternalsInputs(fact, question, answer, mode, view_after)


def view_handler(lab: Lab, audit: str, state: gr.State, mode: gr.Radio, read: dict[str, gr.Textbox],
                 boxes: list[gr.Textbox], out: Outputs) -> Callable[..., Any]:
    """The click handler of ``audit``'s view (its inputs come as one mapping of component to value): the fact
    from the fields it reads, its options from its boxes; the view runs as a job (:func:`view_updates`)."""
    cls = get_audit(audit)

    def on_view(values: dict[Any, Any], request: gr.Request):
        text = {name: str(values[box] or "").strip() for name, box in read.items()}
        options = {name: str(values[box] or "").strip() for name, box in zip(cls.view_options, boxes)}
        fact_ = Fact(id="internals", question=text.get("question", ""), answer=text.get("answer", ""),
                     entity=text.get("entity", ""))
        raw = values[mode] == RAW and "question" in read
        require_pair(lab, values[state])  # before waiting: a missing pair is said at once
        job = partial(view, lab, audit, values[state], fact_, options, raw=raw)
        for update in view_updates(lab, audit, job, lab.stop_event(request.session_hash)):
            yield out(**update)

    return on_view
