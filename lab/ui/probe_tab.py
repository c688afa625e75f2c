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

from lab.attribution import METHOD_TITLES, METHODS, attribution_figure
from lab.facts import Fact
from lab.prompt_attacks import CATEGORIES, TRANSFORMS
from lab.ui import facts_picker
from lab.ui.feedback import user_errors
from lab.ui.probe import SCORE_COLUMNS, build_prompt, emphasized_question, explain, gold_scores, reasoning_prompt, \
    stream_both
from lab.ui.session import MODEL_QUEUE, Lab, PairSpec, limits, require_pair

QUESTION, RAW = "Question (prompt template applied)", "Raw prompt (sent as typed)"


def probe_fact(fact_id: str | None, text: str, mode: str, gold: str) -> tuple[Fact, dict[str, list[Fact]]]:
    """The picked demo fact (with its entity's facts), unless another question was typed; else the typed one.

    A raw prompt is taken as derived from the picked fact (a transform wrote it), so transforms can cycle.
    """
    if fact_id:
        picked = facts_picker.find(fact_id)
        if mode == RAW or picked.question == text.strip():
            return picked, {picked.entity: [f for f in facts_picker.demo_facts() if f.entity == picked.entity]}
    return Fact(id="probe", question=text.strip(), answer=gold.strip()), {}


def build(lab: Lab, state: gr.State) -> gr.Dropdown:
    """The tab's content; returns its fact picker (filled when the tab opens)."""
    lim = limits()
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
            gr.Markdown("**Attack transforms** rewrite the prompt above; ask again to compare.")
            with gr.Row(elem_classes="transforms"):
                steps = {c: gr.Button(f"Step by step: {c}", size="sm", elem_id=f"probe-steps-{c}") for c in CATEGORIES}
            with gr.Row(elem_classes="transforms"):
                emphasis = {t: gr.Button(f"Keywords: {t}", size="sm", elem_id=f"probe-emphasis-{t}")
                            for t in TRANSFORMS}
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

    @user_errors
    def on_fact(fact_id: str | None):
        return facts_picker.fill(fact_id, ("question", "answer"), (QUESTION,))

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
    def on_steps(category: str, spec: PairSpec | None, fact_id: str | None, text: str, mode_: str, gold_: str):
        fact_, by_entity = probe_fact(fact_id, text, mode_, gold_)
        return reasoning_prompt(require_pair(lab, spec), fact_, by_entity, category, text.strip()), RAW

    @user_errors
    def on_emphasis(transform: str, spec: PairSpec | None, text: str, mode_: str, gold_: str):
        if mode_ == RAW:
            raise gr.Error("keyword emphasis rewrites a question: set 'Send as' to Question", print_exception=False)
        return emphasized_question(require_pair(lab, spec), text, gold_, transform), QUESTION

    @user_errors
    def on_attribute(spec: PairSpec | None, sent_: str, gold_: str, base_output: str, methods_: list[str]):
        attr = explain(require_pair(lab, spec), sent_, gold_.strip() or base_output.strip(), methods_)
        return attribution_figure(attr)

    queued = dict(concurrency_id=MODEL_QUEUE, concurrency_limit=1)
    fact.change(on_fact, fact, [prompt, gold, mode], queue=False, api_visibility="private")
    for category, button in steps.items():
        button.click(partial(on_steps, category), [state, fact, prompt, mode, gold], [prompt, mode],
                     api_visibility="private", **queued)
    for transform, button in emphasis.items():
        button.click(partial(on_emphasis, transform), [state, prompt, mode, gold], [prompt, mode],
                     api_visibility="private", **queued)
    attribute.click(on_attribute, [state, sent, gold, out_base, methods], attribution, api_name="attribute",
                    **queued)
    event = run.click(on_run, [state, prompt, mode, gold, tokens], [sent, out_base, out_unl, scores],
                      api_name="probe", **queued)
    stop.click(None, cancels=[event], queue=False)
    return fact
