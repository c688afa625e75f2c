"""Internals tab: inside both models for one fact, the logit-lens and the SAE entity views.

Logit lens (``audits.logit_lens``): where the answer token ranks at every
layer; an answer that ranks high in the middle layers of the unlearned model
and drops only at the end was hidden, not removed.  SAE view (``audits.sae.audit``):
where the fact's entity sits on the known <-> unknown axis of SAE latents in
both models.  The SAE analysis (an SAE trained on the base model, cached on
disk, and the axis) is computed once per pair and fact set and reused for
every entity of this process.
"""

from __future__ import annotations

import gradio as gr

from audits import get_audit
from lab.core.facts import Fact
from lab.core.options import build_options, option_specs
from lab.core.policy import current as current_policy
from lab.shell.ui import facts_picker
from lab.shell.report.style import styled
from lab.shell.ui.feedback import Beside
from lab.shell.ui.session import MODEL_QUEUE, Lab, PairSpec, require_pair

LENS_K = next(s.default for s in option_specs(get_audit("logit_lens").Options) if s.name == "k")


def view(lab: Lab, audit: str, pair_spec: PairSpec | None, fact: Fact, values: dict[str, str]):
    """One audit's per-fact view (its ``fact_view`` hook), with options checked like a run's."""
    pair = require_pair(lab, pair_spec)
    cls = get_audit(audit)
    options = build_options(cls.Options, audit, values)
    current_policy().check_options(audit, options)
    return styled(cls().fact_view(pair, fact, facts_picker.demo_facts(), options, lab.remember))


def build(lab: Lab, state: gr.State) -> gr.Dropdown:
    """The tab's content; returns its fact picker (filled when the tab opens)."""
    gr.Markdown("Look inside both models for one fact: does the unlearned model still compute the answer "
                "in its middle layers, and does it still represent the person as known?", elem_classes="tab-intro")
    with gr.Row(equal_height=True, elem_classes="stack-on-phone"):
        fact = gr.Dropdown(label="Demo fact", scale=3, elem_id="internals-fact")
        question = gr.Textbox(label="Question", scale=3, elem_id="internals-question")
        answer = gr.Textbox(label="Answer", scale=2, elem_id="internals-answer")
        entity = gr.Textbox(label="Entity", scale=2, elem_id="internals-entity")
    with gr.Row(equal_height=True, elem_classes="stack-on-phone"):
        top_k = gr.Number(LENS_K, label="Logit lens: top k", precision=0, minimum=1, scale=1,
                          elem_id="internals-k")
        lens = gr.Button("Logit lens", variant="primary", scale=1, elem_id="internals-lens")
        source = gr.Textbox("train", label="SAE (train, a folder, or pretrained:<release>:<sae_id>)", scale=3,
                            elem_id="internals-sae-source")
        layer = gr.Number(-1, label="SAE layer (-1: middle)", precision=0, scale=1, elem_id="internals-sae-layer")
        sae = gr.Button("SAE entity view", variant="primary", scale=1, elem_id="internals-sae")
    lens_msg, sae_msg = Beside("internals-lens"), Beside("internals-sae")
    lens_plot = gr.Plot(label="Logit lens: the answer token at every layer", elem_id="internals-lens-plot")
    sae_plot = gr.Plot(label="SAE: the entity on the known ↔ unknown axis", elem_id="internals-sae-plot")

    def on_fact(fact_id: str | None):
        return facts_picker.fill(fact_id, ("question", "answer", "entity"))

    @lens_msg
    def on_lens(spec: PairSpec | None, question_: str, answer_: str, k: float, request: gr.Request):
        fact_ = Fact(id="internals", question=question_.strip(), answer=answer_.strip())
        return view(lab, "logit_lens", spec, fact_, {"k": str(max(int(k or 1), 1))})

    @sae_msg
    def on_sae(spec: PairSpec | None, entity_: str, source_: str, layer_: float | None, request: gr.Request,
               progress=gr.Progress(track_tqdm=True)):
        fact_ = Fact(id="internals", question="", answer="", entity=entity_.strip())
        layer_text = "none" if layer_ in (None, "") or layer_ < 0 else str(int(layer_))
        return view(lab, "sae", spec, fact_, {"sae": source_.strip() or "train", "layer": layer_text})

    queued = dict(concurrency_id=MODEL_QUEUE, concurrency_limit=1)
    fact.change(on_fact, fact, [question, answer, entity], queue=False, api_visibility="private")
    lens_msg.watch(lens.click(on_lens, [state, question, answer, top_k], lens_plot, api_name="logit_lens",
                              **lens_msg.events, **queued))
    sae_msg.watch(sae.click(on_sae, [state, entity, source, layer], sae_plot, api_name="sae_view",
                            **sae_msg.events, **queued))
    return fact
