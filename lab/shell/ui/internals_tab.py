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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr

from audits import available, get_audit
from lab.core.facts import Fact
from lab.core.options import build_options, option_specs
from lab.core.policy import current as current_policy
from lab.shell.ui import facts_picker
from lab.shell.report.style import styled
from lab.shell.ui.feedback import Beside
from lab.shell.ui.probe import as_typed
from lab.shell.ui.probe_tab import QUESTION, RAW
from lab.shell.spec import PairSpec
from lab.shell.ui.session import MODEL_QUEUE, Lab, require_pair
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


def view_controls(audit: str) -> tuple[list[gr.Textbox], gr.Button, Beside, gr.Plot]:
    """One view's row: its options (as text, each with its default), its button, message place and plot."""
    cls = get_audit(audit)
    specs = {s.name: s for s in option_specs(cls.Options)}
    with gr.Row(equal_height=True, elem_classes="stack-on-phone"):
        boxes = [gr.Textbox(specs[name].default_text, label=f"{cls.view_label}: {name}", info=specs[name].help,
                            scale=2, elem_id=f"internals-{cls.view_id}-{name}") for name in cls.view_options]
        button = gr.Button(cls.view_label, variant="primary", scale=1, elem_id=f"internals-{cls.view_id}")
    message = Beside(f"internals-{cls.view_id}")
    plot = gr.Plot(label=f"{cls.view_label}: {cls.title}", elem_id=f"internals-{cls.view_id}-plot")
    return boxes, button, message, plot


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
    fact.change(lambda fact_id: filled(**facts_picker.fill(fact_id, tuple(fields)), mode=QUESTION) if fact_id else filled(),
                fact, filled.list, queue=False, api_visibility="private")
    queued = dict(concurrency_id=MODEL_QUEUE, concurrency_limit=1)
    wired: dict[str, tuple[Callable[..., Any], set[Any], gr.Plot, Beside]] = {}
    for audit in fact_views():
        boxes, button, message, plot = view_controls(audit)
        read = {name: fields[name] for name in get_audit(audit).view_reads}
        handler = message(view_handler(lab, audit, state, mode, read, boxes))
        inputs = {state, mode, *read.values(), *boxes}
        message.watch(button.click(handler, inputs, plot, api_name=f"{audit}_view", **message.events, **queued))
        wired[audit] = (handler, inputs, plot, message)

    def view_after(audit: str, trigger: Any) -> Any:
        """``audit``'s view once ``trigger`` succeeded (an item's link fills the prompt and answer first)."""
        handler, inputs, plot, message = wired[audit]
        return message.watch(trigger.success(handler, inputs, plot, api_visibility="private", **message.events,
                                             **queued))

    return InternalsInputs(fact, question, answer, mode, view_after)


def view_handler(lab: Lab, audit: str, state: gr.State, mode: gr.Radio, read: dict[str, gr.Textbox],
                 boxes: list[gr.Textbox]) -> Callable[..., Any]:
    """The click handler of ``audit``'s view (its inputs come as one mapping of component to value): the fact
    from the fields it reads, its options from its boxes."""
    cls = get_audit(audit)

    def on_view(values: dict[Any, Any], request: gr.Request, progress=gr.Progress(track_tqdm=True)):
        text = {name: str(values[box] or "").strip() for name, box in read.items()}
        options = {name: str(values[box] or "").strip() for name, box in zip(cls.view_options, boxes)}
        fact_ = Fact(id="internals", question=text.get("question", ""), answer=text.get("answer", ""),
                     entity=text.get("entity", ""))
        raw = values[mode] == RAW and "question" in read
        return view(lab, audit, values[state], fact_, options, raw=raw)

    return on_view
