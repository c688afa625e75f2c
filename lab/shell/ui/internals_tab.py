"""Internals tab: inside both models for one fact, the logit-lens and the SAE entity views.

Logit lens (``audits.logit_lens``): where the answer token ranks at every
layer; an answer that ranks high in the middle layers of the unlearned model
and drops only at the end was hidden, not removed.  SAE view (``audits.sae.audit``):
where the fact's entity sits on the known <-> unknown axis of SAE latents in
both models.  The SAE analysis (an SAE trained on the base model, cached on
disk, and the axis) is computed once per pair and fact set and reused for
every entity of this process.

The logit lens also reads a prompt sent as typed (a stored item's prompt, from
the Results tab's "Logit lens" link): the audit's own view, with the prompt
template left out (:func:`lab.shell.ui.probe.as_typed`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr

from audits import get_audit
from lab.core.facts import Fact
from lab.core.options import build_options, option_specs
from lab.core.policy import current as current_policy
from lab.shell.ui import facts_picker
from lab.shell.report.style import styled
from lab.shell.ui.feedback import Beside
from lab.shell.ui.probe import as_typed
from lab.shell.ui.probe_tab import QUESTION, RAW
from lab.shell.ui.session import MODEL_QUEUE, Lab, PairSpec, require_pair

LENS_K = next(s.default for s in option_specs(get_audit("logit_lens").Options) if s.name == "k")


@dataclass
class InternalsInputs:
    """What other tabs fill to open the logit lens here (an item's prompt and answer)."""

    fact: gr.Dropdown
    question: gr.Textbox
    answer: gr.Textbox
    mode: gr.Radio
    lens_after: Callable[[Any], Any]  # chains the logit lens after another event's success


def view(lab: Lab, audit: str, pair_spec: PairSpec | None, fact: Fact, values: dict[str, str], raw: bool = False):
    """One audit's per-fact view (its ``fact_view`` hook), with options checked like a run's; ``raw``: the
    question is a whole prompt, sent as typed."""
    pair = require_pair(lab, pair_spec)
    pair = as_typed(pair) if raw else pair
    cls = get_audit(audit)
    options = build_options(cls.Options, audit, values)
    current_policy().check_options(audit, options)
    return styled(cls().fact_view(pair, fact, facts_picker.demo_facts(), options, lab.remember))


def build(lab: Lab, state: gr.State) -> InternalsInputs:
    """The tab's content; returns the inputs other tabs fill (the fact picker is filled when the tab opens)."""
    gr.Markdown("Look inside both models for one fact: does the unlearned model still compute the answer "
                "in its middle layers, and does it still represent the person as known?", elem_classes="tab-intro")
    with gr.Row(equal_height=True, elem_classes="stack-on-phone"):
        fact = gr.Dropdown(label="Demo fact", scale=3, elem_id="internals-fact")
        question = gr.Textbox(label="Question or prompt", scale=3, elem_id="internals-question")
        answer = gr.Textbox(label="Answer", scale=2, elem_id="internals-answer")
        entity = gr.Textbox(label="Entity", scale=2, elem_id="internals-entity")
    with gr.Row(equal_height=True, elem_classes="stack-on-phone"):
        mode = gr.Radio([QUESTION, RAW], value=QUESTION, label="Logit lens: send as", scale=3,
                        elem_id="internals-mode")
        top_k = gr.Number(LENS_K, label="Logit lens: top k", precision=0, minimum=1, scale=1,
                          elem_id="internals-k")
        lens = gr.Button("Logit lens", variant="primary", scale=1, elem_id="internals-lens")
    with gr.Row(equal_height=True, elem_classes="stack-on-phone"):
        source = gr.Textbox("train", label="SAE (train, a folder, or pretrained:<release>:<sae_id>)", scale=3,
                            elem_id="internals-sae-source")
        layer = gr.Number(-1, label="SAE layer (-1: middle)", precision=0, scale=1, elem_id="internals-sae-layer")
        sae = gr.Button("SAE entity view", variant="primary", scale=1, elem_id="internals-sae")
    lens_msg, sae_msg = Beside("internals-lens"), Beside("internals-sae")
    lens_plot = gr.Plot(label="Logit lens: the answer token at every layer", elem_id="internals-lens-plot")
    sae_plot = gr.Plot(label="SAE: the entity on the known ↔ unknown axis", elem_id="internals-sae-plot")

    def on_fact(fact_id: str | None):
        return facts_picker.fill(fact_id, ("question", "answer", "entity"), (QUESTION,))

    @lens_msg
    def on_lens(spec: PairSpec | None, question_: str, answer_: str, k: float, mode_: str, request: gr.Request):
        fact_ = Fact(id="internals", question=question_.strip(), answer=answer_.strip())
        return view(lab, "logit_lens", spec, fact_, {"k": str(max(int(k or 1), 1))}, raw=mode_ == RAW)

    @sae_msg
    def on_sae(spec: PairSpec | None, entity_: str, source_: str, layer_: float | None, request: gr.Request,
               progress=gr.Progress(track_tqdm=True)):
        fact_ = Fact(id="internals", question="", answer="", entity=entity_.strip())
        layer_text = "none" if layer_ in (None, "") or layer_ < 0 else str(int(layer_))
        return view(lab, "sae", spec, fact_, {"sae": source_.strip() or "train", "layer": layer_text})

    queued = dict(concurrency_id=MODEL_QUEUE, concurrency_limit=1)
    fact.change(on_fact, fact, [question, answer, entity, mode], queue=False, api_visibility="private")
    lens_inputs = [state, question, answer, top_k, mode]  # mode last: API callers of /logit_lens keep their order
    lens_msg.watch(lens.click(on_lens, lens_inputs, lens_plot, api_name="logit_lens", **lens_msg.events, **queued))

    def lens_after(trigger: Any) -> Any:
        """The logit lens once ``trigger`` succeeded (an item's "Logit lens" link fills the prompt first)."""
        return lens_msg.watch(trigger.success(on_lens, lens_inputs, lens_plot, api_visibility="private",
                                              **lens_msg.events, **queued))

    sae_msg.watch(sae.click(on_sae, [state, entity, source, layer], sae_plot, api_name="sae_view",
                            **sae_msg.events, **queued))
    return InternalsInputs(fact, question, answer, mode, lens_after)
