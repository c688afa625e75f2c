"""Probe tab: one prompt, both models answering side by side as they generate, the difference first.

A demo fact can fill the question and its gold answer.  The outputs show as a
word-level diff (:mod:`lab.shell.ui.diff`): words only one model wrote are
tinted in its colour, the gold answer is marked, hit or miss is a badge and
each model's probability of the gold answer is always visible (a suppressed
answer often keeps a high probability while the greedy output changes).  The
plain texts stay one click away for copying.

Attack transforms always start from the original question (the picked fact's,
or what the user last typed), never from an already rewritten prompt, and the
active one is named under the buttons.

A prompt longer than the models' context (template applied, room left for the
new tokens) is flagged under the prompt box as it is typed and cut from the
left when sent, by the engine's rule (:func:`lab.shell.ui.probe.fit_both`).
Before Explain is pressed, the attribution panel says what it will show.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr
import pandas as pd

from audits import available, get_audit
from audits.base import Rewritten
from lab.core.attribution import METHOD_TITLES, METHODS, attribution_figure
from lab.core.errors import LabError
from lab.core.facts import Fact
from lab.core.policy import current as current_policy
from lab.shell.report.style import message_figure, styled
from lab.shell.ui import facts_picker
from lab.shell.ui.diff import compare_outputs
from lab.shell.ui.feedback import Beside, warning_html
from lab.shell.ui.fields import new_tokens_cap, tokens_label
from lab.shell.ui.probe import (SAMPLE_COLUMNS, build_prompt, explain, fit_both, gold_scores, prompt_warning,
                                rewrites, sampled_answers, stream_both)
from lab.shell.ui.saliency import saliency_html, saliency_placeholder
from lab.shell.spec import PairSpec
from lab.shell.ui.session import MODEL_QUEUE, Lab, require_pair
from lab.shell.ui.updates import Outputs

QUESTION, RAW = "Question (prompt template applied)", "Raw prompt (sent as typed)"
NO_TRANSFORM = "No transform active: the prompt is the original question."
NOT_EXPLAINED = "Press “Explain the answer” to draw the attributions"


def transform_groups() -> dict[str, tuple[str, str]]:
    """The Probe's transforms: every audit that offers prompt rewrites, with its buttons' id prefix and label."""
    return {name: get_audit(name).probe_group for name in available()
            if get_audit(name).rewrites and get_audit(name).probe_group}


@dataclass
class ProbeInputs:
    """What other tabs fill to replay or explain something here (an item's prompt, a fact)."""

    fact: gr.Dropdown
    prompt: gr.Textbox
    mode: gr.Radio
    gold: gr.Textbox
    original: gr.State
    active: gr.State
    active_note: gr.Markdown
    sent: gr.Textbox
    compare: gr.HTML
    out_base: gr.Textbox
    out_unlearned: gr.Textbox
    explain_after: Callable[[Any], Any]  # chains Explain after another event's success


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


def active_text(audit: str, transform: str, index: int, count: int, original: str) -> str:
    """The note under the buttons: which transform is applied, and to which original question."""
    return (f"Active transform: **{audit} · {transform}** (variant {index + 1} of {count}), "
            f"applied to the original question: _{original.strip()}_")


def build(lab: Lab, state: gr.State) -> ProbeInputs:
    """The tab's content; returns the inputs other tabs fill (the fact picker is filled when the tab opens)."""
    lim = current_policy()
    gr.Markdown("Ask both models the same thing and compare. Apply an attack's prompt transform to see "
                "whether the unlearned model still knows.", elem_classes="tab-intro")
    # On a phone the answers come right under Ask, before the transforms (static/style.css: #probe-ask).
    with gr.Row(equal_height=False, elem_classes="stack-on-phone", elem_id="probe-main"):
        with gr.Column(scale=4, min_width=280, elem_id="probe-ask"):
            fact = gr.Dropdown(label="Demo fact (fills the question and the gold answer)", elem_id="probe-fact")
            prompt = gr.Textbox(label="Question or prompt", lines=3, max_length=lim.max_prompt_chars,
                                elem_id="probe-prompt")
            fit = gr.HTML("", elem_id="probe-fit", elem_classes="lab-msg", min_height=0)
            mode = gr.Radio([QUESTION, RAW], value=QUESTION, label="Send as", elem_id="probe-mode")
            gold = gr.Textbox(label="Gold answer (optional: scores both models on it)", elem_id="probe-gold")
            tokens = gr.Slider(1, lim.max_new_tokens, value=min(32, lim.max_new_tokens), step=1,
                               label="Max new tokens", elem_id="probe-tokens")
            with gr.Row():
                run = gr.Button("Ask both models", variant="primary", elem_id="probe-run")
                stop = gr.Button("Stop", variant="stop", elem_id="probe-stop")
            run_msg = Beside("probe-run")
            with gr.Column(elem_id="probe-transforms"):
                gr.Markdown("**Attack transforms** rewrite the original question with an audit's own method; "
                            "ask again to compare.")
                buttons = {}
                for audit, (prefix, label) in transform_groups().items():
                    with gr.Row(elem_classes="transforms"):
                        for name in get_audit(audit).rewrites:
                            buttons[(audit, name)] = gr.Button(f"{label}: {name}", size="sm",
                                                               elem_id=f"{prefix}-{name}")
                reset = gr.Button("Back to the original question", size="sm", elem_id="probe-reset")
                active_note = gr.Markdown(NO_TRANSFORM, elem_id="probe-active")
                transform_msg = Beside("probe-transform")
        with gr.Column(scale=6, min_width=280, elem_id="probe-answers"):
            sent = gr.Textbox(label="Prompt sent", lines=2, interactive=False, elem_id="probe-sent")
            compare = gr.HTML(compare_outputs("", ""), elem_id="probe-compare")
            with gr.Accordion("Plain outputs (to copy)", open=False, elem_id="probe-plain"):
                with gr.Row(elem_classes="stack-on-phone"):
                    out_base = gr.Textbox(label="Base model", lines=4, interactive=False, elem_id="probe-base",
                                          elem_classes="out-base")
                    out_unl = gr.Textbox(label="Unlearned model", lines=4, interactive=False,
                                         elem_id="probe-unlearned", elem_classes="out-unlearned")
            with gr.Row(equal_height=False):
                samples = gr.Number(16, label="Samples per model (temperature 1, seed 0)", precision=0, minimum=1,
                                    maximum=min(64, lim.size_cap or 64), scale=3, elem_id="probe-samples")
                sample = gr.Button("Sample N answers", scale=1, elem_id="probe-sample")
            sample_msg = Beside("probe-sample")
            sampled = gr.Dataframe(pd.DataFrame(columns=SAMPLE_COLUMNS), label="Distinct sampled answers, with their "
                                   "counts: greedy may hide an answer that sampling still gives", interactive=False,
                                   visible=False, elem_id="probe-sampled", elem_classes="scroll-table")
            with gr.Row(equal_height=False):
                methods = gr.CheckboxGroup([(METHOD_TITLES[m], m) for m in METHODS], value=[METHODS[0]],
                                           label="Attribution methods", scale=3, elem_id="probe-methods")
                attribute = gr.Button("Explain the answer", scale=1, elem_id="probe-attribute")
            attribute_msg = Beside("probe-attribute")
    with gr.Row(equal_height=False, elem_classes="stack-on-phone"):
        saliency = gr.HTML(saliency_placeholder(), elem_id="probe-saliency", elem_classes="card")
        attribution = gr.Plot(message_figure(NOT_EXPLAINED), label="Which prompt tokens carry the answer, base vs "
                              "unlearned", elem_id="probe-attribution")

    original = gr.State("")  # the question every transform starts from
    active = gr.State(None)  # (audit, transform, variant index) of the transform shown, None when none

    filled = Outputs(prompt=prompt, gold=gold, mode=mode, original=original, active=active, note=active_note)

    def on_fact(fact_id: str | None):
        if not fact_id:
            return filled()
        picked = facts_picker.find(fact_id)
        return filled(prompt=picked.question, gold=picked.answer, mode=QUESTION, original=picked.question,
                      active=None, note=NO_TRANSFORM)

    def on_typed(text: str):
        """A prompt the user types by hand is the new original question; no transform is active."""
        return text, None, NO_TRANSFORM

    answered = Outputs(sent=sent, base=out_base, unlearned=out_unl, compare=compare)

    @run_msg
    def on_run(spec: PairSpec | None, text: str, mode_: str, gold_: str, max_new: float, request: gr.Request):
        pair = require_pair(lab, spec)
        new_tokens = int(min(max_new, lim.max_new_tokens))
        full = fit_both(pair, build_prompt(pair, text, mode_ == RAW, lim.max_prompt_chars), new_tokens)
        gold_ = gold_.strip()
        outputs = ("", "")
        yield answered(sent=full, base="", unlearned="", compare=compare_outputs("", "", gold_))
        for outputs in stream_both(pair, full, new_tokens):
            yield answered(base=outputs[0], unlearned=outputs[1], compare=compare_outputs(*outputs, gold_))
        scores = gold_scores(pair, full, outputs, gold_) if gold_ else None
        yield answered(sent=full, base=outputs[0], unlearned=outputs[1],
                       compare=compare_outputs(*outputs, gold_, scores))

    def transform(audit: str, name: str):
        """The handler of one transform button (Gradio passes the request only to a plain signature)."""

        @transform_msg
        def on_transform(spec: PairSpec | None, fact_id: str | None, original_: str, text: str, gold_: str,
                         active_: tuple | None, request: gr.Request):
            start = original_ or text
            fact_, related = probe_fact(fact_id, start, gold_)
            variants = rewrites(audit, require_pair(lab, spec), fact_, related, name)
            chosen, index = next_variant(variants, active_, (audit, name))
            note = active_text(audit, name, index, len(variants), start)
            return chosen.text, RAW if chosen.raw else QUESTION, start, (audit, name, index), note

        return on_transform

    def on_fit(spec: PairSpec | None, text: str, mode_: str, max_new: float) -> str:
        """The over-long prompt warning as the prompt, its mode or the answer length change (a hint: only
        the tokenizer runs, not the model)."""
        if spec is None or not (text or "").strip():
            return ""
        try:
            pair = lab.pair(spec)
        except LabError:  # the Run button says what is wrong with the pair
            return ""
        return warning_html(prompt_warning(pair, text, mode_ == RAW, int(min(max_new, lim.max_new_tokens)),
                                           lim.max_prompt_chars))

    def on_model(spec: PairSpec | None, max_new: float):
        """The answer length bounded by the loaded model's context (:func:`lab.shell.ui.fields.new_tokens_cap`)."""
        if spec is None:
            return gr.skip()
        context = lab.pair(spec).base.context
        cap = new_tokens_cap(context)
        return gr.Slider(maximum=cap, value=min(max_new, cap), label=tokens_label(context))

    def on_reset(original_: str, text: str):
        return original_ or text, QUESTION, None, NO_TRANSFORM

    @attribute_msg
    def on_attribute(spec: PairSpec | None, sent_: str, gold_: str, base_output: str, methods_: list[str],
                     request: gr.Request):
        attr = explain(require_pair(lab, spec), sent_, gold_.strip() or base_output.strip(), methods_)
        return saliency_html(attr), styled(attribution_figure(attr))

    @sample_msg
    def on_sample(spec: PairSpec | None, text: str, mode_: str, gold_: str, max_new: float, count: float,
                  request: gr.Request):
        pair = require_pair(lab, spec)
        new_tokens = int(min(max_new, lim.max_new_tokens))
        count = int(count or 1)
        if not 1 <= count <= 64 or (lim.size_cap and count > lim.size_cap):
            raise LabError(f"samples must be between 1 and {min(64, lim.size_cap or 64)}, got {count}")
        full = fit_both(pair, build_prompt(pair, text, mode_ == RAW, lim.max_prompt_chars), new_tokens)
        return gr.Dataframe(sampled_answers(pair, full, count, new_tokens, gold_.strip()), visible=True)

    queued = dict(concurrency_id=MODEL_QUEUE, concurrency_limit=1)
    sample_msg.watch(sample.click(on_sample, [state, prompt, mode, gold, tokens, samples], sampled, api_name="sample",
                                  **sample_msg.events, **queued))
    fact.change(on_fact, fact, filled.list, queue=False,
                api_visibility="private")
    prompt.input(on_typed, prompt, [original, active, active_note], queue=False, api_visibility="private")
    for (audit, name), button in buttons.items():
        transform_msg.watch(button.click(
            transform(audit, name), [state, fact, original, prompt, gold, active],
            [prompt, mode, original, active, active_note], api_visibility="private", **transform_msg.events,
            **queued))
    reset.click(on_reset, [original, prompt], [prompt, mode, active, active_note], queue=False,
                api_visibility="private")
    attribute_inputs, attribute_outputs = [state, sent, gold, out_base, methods], [saliency, attribution]
    attribute_msg.watch(attribute.click(on_attribute, attribute_inputs, attribute_outputs, api_name="attribute",
                                        **attribute_msg.events, **queued))

    def explain_after(trigger: Any) -> Any:
        """Explain once ``trigger`` succeeded (an item's "Explain" link fills the prompt and answer first)."""
        return attribute_msg.watch(trigger.success(on_attribute, attribute_inputs, attribute_outputs,
                                                   api_visibility="private", **attribute_msg.events, **queued))

    state.change(on_model, [state, tokens], tokens, api_visibility="private", **queued)
    gr.on([prompt.change, mode.change, tokens.change, state.change], on_fit, [state, prompt, mode, tokens], fit,
          trigger_mode="always_last", show_progress="hidden", api_visibility="private")
    event = run_msg.watch(run.click(on_run, [state, prompt, mode, gold, tokens], answered.list,
                                    api_name="probe", **run_msg.events, **queued))
    stop.click(None, cancels=[event], queue=False)
    return ProbeInputs(fact, prompt, mode, gold, original, active, active_note, sent, compare, out_base, out_unl,
                       explain_after)
