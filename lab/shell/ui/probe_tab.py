"""Probe tab: one prompt, both models answering side by side as they generate.

A demo fact can fill the question and its gold answer.  With a gold answer the
tab also shows whether each output hits it (the project's one scorer) and the
answer's mean token log-prob under each model: a suppressed answer often keeps
a high probability while the greedy output changes.
"""

from __future__ import annotations

from functools import partial

import gradio as gr
import pandas as pd

from audits import get_audit
from audits.base import Rewritten
from lab.core.attribution import METHOD_TITLES, METHODS, attribution_figure
from lab.core.facts import Fact
from lab.core.policy import current as current_policy
from lab.shell.ui import facts_picker
from lab.shell.ui.feedback import user_errors
from lab.shell.ui.probe import SCORE_COLUMNS, build_prompt, explain, gold_scores, rewrites, stream_both
from lab.shell.ui.session import MODEL_QUEUE, Lab, PairSpec, require_pair

QUESTION, RAW = "Question (prompt template applied)", "Raw prompt (sent as typed)"


# The Probe's transforms: which audit's rewrite hook, and the stable element id prefix of its buttons.
TRANSFORM_GROUPS = {"reasoning": ("probe-steps", "Step by step"), "keywords": ("probe-emphasis", "Keywords")}


def probe_fact(fact_id: str | None, original: str, gold: str) -> tuple[Fact, list[Fact]]:
    """The fact a transform starts from: the picked demo fact (with its entity's other facts) when the
    original question is its question, else the typed question with the gold answer."""
    if fact_id:
        picked = facts_picker.find(fact_id)
        if picked.question == original.strip():
            related = [f for f in facts_picker.demo_facts() if f.entity == picked.entity and f.id != picked.id]
            return picked, related if picked.entity else []
    return Fact(id="probe", question=original.strip(), answer=gold.strip()), []


def next_variant(variants: list[Rewritten], active: tuple | None, key: tuple) -> tuple[Rewritten, int]:
    """The variant to show: the first, or the next one when the same transform is pressed again."""
    index = (active[2] + 1) % len(variants) if active and tuple(active[:2]) == key else 0
    return variants[index], index


def build(lab: Lab, state: gr.State) -> gr.Dropdown:
    """The tab's content; returns its fact picker (filled when the tab opens)."""
    lim = current_policy()
    gr.Markdown("Ask both models the same thing and compare. Apply an attack's prompt transform to see "
                "whether the unlearned model still knows.", elem_classes="tab-intro")
    with gr.Row(equal_height=False):
        with gr.Column(scale=4):
            fact = gr.Dropdown(label="Demo fact (fills the question and the gold answer)", elem_id="probe-fact")
            prompt = gr.Textbox(label="Question or prompt", lines=3, max_length=lim.max_prompt_chars,
                                elem_id="probe-prompt")
            mode = gr.Radio([QUESTION, RAW], value=QUESTION, label="Send as", elem_id="probe-mode")
            gold = gr.Textbox(label="Gold answer (optional: scores both models on it)", elem_id="probe-gold")
            tokens = gr.Slider(1, lim.max_new_tokens, value=min(32, lim.max_new_tokens), step=1,
                               label="Max new tokens", elem_id="probe-tokens")
            with gr.Row():
                run = gr.Button("Ask both models", variant="primary", elem_id="probe-run")
                stop = gr.Button("Stop", variant="stop", elem_id="probe-stop")
            gr.Markdown("**Attack transforms** rewrite the original question with an audit's own method; "
                        "ask again to compare.")
            buttons = {}
            for audit, (prefix, label) in TRANSFORM_GROUPS.items():
                with gr.Row(elem_classes="transforms"):
                    for name in get_audit(audit).rewrites:
                        buttons[(audit, name)] = gr.Button(f"{label}: {name}", size="sm", elem_id=f"{prefix}-{name}")
            active_note = gr.Markdown(elem_id="probe-active")
        with gr.Column(scale=6):
            sent = gr.Textbox(label="Prompt sent", lines=2, interactive=False, elem_id="probe-sent")
            with gr.Row():
                out_base = gr.Textbox(label="Base model", lines=6, interactive=False, elem_id="probe-base",
                                      elem_classes="out-base")
                out_unl = gr.Textbox(label="Unlearned model", lines=6, interactive=False, elem_id="probe-unlearned",
                                     elem_classes="out-unlearned")
            scores = gr.Dataframe(pd.DataFrame(columns=SCORE_COLUMNS), label="Scores on the gold answer",
                                  interactive=False, elem_id="probe-scores")
            with gr.Row(equal_height=False):
                methods = gr.CheckboxGroup([(METHOD_TITLES[m], m) for m in METHODS], value=[METHODS[0]],
                                           label="Attribution methods", scale=3, elem_id="probe-methods")
                attribute = gr.Button("Explain the answer", scale=1, elem_id="probe-attribute")
    attribution = gr.Plot(label="Which prompt tokens carry the answer, base vs unlearned", elem_id="probe-attribution")

    original = gr.State("")  # the question every transform starts from
    active = gr.State(None)  # (audit, transform, variant index) of the transform shown, None when none

    @user_errors
    def on_fact(fact_id: str | None):
        if not fact_id:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        picked = facts_picker.find(fact_id)
        return picked.question, picked.answer, QUESTION, picked.question, None, ""

    def on_typed(text: str):
        """A prompt the user types by hand is the new original question; no transform is active."""
        return text, None, ""

    @user_errors
    def on_run(spec: PairSpec | None, text: str, mode_: str, gold_: str, max_new: float):
        pair = require_pair(lab, spec)
        full = build_prompt(pair, text, mode_ == RAW, lim.max_prompt_chars)
        outputs, empty = ("", ""), pd.DataFrame(columns=SCORE_COLUMNS)
        yield full, "", "", empty
        for outputs in stream_both(pair, full, int(min(max_new, lim.max_new_tokens))):
            yield full, outputs[0], outputs[1], gr.skip()
        yield full, outputs[0], outputs[1], gold_scores(pair, full, outputs, gold_.strip()) if gold_.strip() else empty

    @user_errors
    def on_transform(audit: str, transform: str, spec: PairSpec | None, fact_id: str | None, original_: str,
                     text: str, gold_: str, active_: tuple | None):
        start = original_ or text
        fact_, related = probe_fact(fact_id, start, gold_)
        variants = rewrites(audit, require_pair(lab, spec), fact_, related, transform)
        chosen, index = next_variant(variants, active_, (audit, transform))
        note = f"Active transform: **{audit} · {transform}** (variant {index + 1} of {len(variants)}), " \
               f"from the original question: _{start.strip()}_"
        return chosen.text, RAW if chosen.raw else QUESTION, start, (audit, transform, index), note

    @user_errors
    def on_attribute(spec: PairSpec | None, sent_: str, gold_: str, base_output: str, methods_: list[str]):
        attr = explain(require_pair(lab, spec), sent_, gold_.strip() or base_output.strip(), methods_)
        return attribution_figure(attr)

    queued = dict(concurrency_id=MODEL_QUEUE, concurrency_limit=1)
    fact.change(on_fact, fact, [prompt, gold, mode, original, active, active_note], queue=False,
                api_visibility="private")
    prompt.input(on_typed, prompt, [original, active, active_note], queue=False, api_visibility="private")
    for (audit, name), button in buttons.items():
        button.click(partial(on_transform, audit, name), [state, fact, original, prompt, gold, active],
                     [prompt, mode, original, active, active_note], api_visibility="private", **queued)
    attribute.click(on_attribute, [state, sent, gold, out_base, methods], attribution, api_name="attribute",
                    **queued)
    event = run.click(on_run, [state, prompt, mode, gold, tokens], [sent, out_base, out_unl, scores],
                      api_name="probe", **queued)
    stop.click(None, cancels=[event], queue=False)
    return fact
