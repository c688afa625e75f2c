"""Internals tab: inside both models for one fact, the logit-lens and the SAE entity views.

Logit lens (``audits.logit_lens``): where the answer token ranks at every
layer; an answer that ranks high in the middle layers of the unlearned model
and drops only at the end was hidden, not removed.  SAE view (``audits.sae``):
where the fact's entity sits on the known <-> unknown axis of SAE latents in
both models.  The SAE analysis (an SAE trained on the base model, cached on
disk, and the axis) is computed once per pair and fact set and reused for
every entity of this process.
"""

from __future__ import annotations

import gradio as gr

from audits.logit_lens import LogitLensOptions, logit_lens_for_fact
from audits.sae import SaeOptions, analyse, base_known_ids, sae_view_for_entity
from lab.errors import LabError
from lab.facts import Fact
from lab.ui import facts_picker
from lab.ui.feedback import user_errors
from lab.ui.session import MODEL_QUEUE, Lab, PairSpec, limits, require_pair


def lens_fact(question: str, answer: str) -> Fact:
    if not question.strip() or not answer.strip():
        raise LabError("the logit lens needs a question and its answer (pick a demo fact or type both)")
    return Fact(id="internals", question=question.strip(), answer=answer.strip())


def sae_options(source: str, layer: float | None) -> SaeOptions:
    """The SAE audit's defaults with the chosen SAE and layer (server folders only outside a Space)."""
    source = source.strip() or "train"
    if source not in ("train",) and not source.startswith("pretrained:") and not limits().server_paths:
        raise LabError("SAE folders on the server are disabled here: use train or pretrained:<release>:<sae_id>")
    return SaeOptions(sae=source, layer=None if layer in (None, "") or layer < 0 else int(layer))


def build(lab: Lab, state: gr.State) -> gr.Dropdown:
    """The tab's content; returns its fact picker (filled when the tab opens)."""
    gr.Markdown("Look inside both models for one fact: does the unlearned model still compute the answer "
                "in its middle layers, and does it still represent the person as known?", elem_classes="tab-intro")
    with gr.Row(equal_height=True):
        fact = gr.Dropdown(label="Demo fact", scale=3, elem_id="internals-fact")
        question = gr.Textbox(label="Question", scale=3, elem_id="internals-question")
        answer = gr.Textbox(label="Answer", scale=2, elem_id="internals-answer")
        entity = gr.Textbox(label="Entity", scale=2, elem_id="internals-entity")
    with gr.Row(equal_height=True):
        top_k = gr.Number(LogitLensOptions.k, label="Logit lens: top k", precision=0, minimum=1, scale=1,
                          elem_id="internals-k")
        lens = gr.Button("Logit lens", variant="primary", scale=1, elem_id="internals-lens")
        source = gr.Textbox("train", label="SAE (train, a folder, or pretrained:<release>:<sae_id>)", scale=3,
                            elem_id="internals-sae-source")
        layer = gr.Number(-1, label="SAE layer (-1: middle)", precision=0, scale=1, elem_id="internals-sae-layer")
        sae = gr.Button("SAE entity view", variant="primary", scale=1, elem_id="internals-sae")
    lens_plot = gr.Plot(label="Logit lens: the answer token at every layer", elem_id="internals-lens-plot")
    sae_plot = gr.Plot(label="SAE: the entity on the known ↔ unknown axis", elem_id="internals-sae-plot")

    @user_errors
    def on_fact(fact_id: str | None):
        return facts_picker.fill(fact_id, ("question", "answer", "entity"))

    @user_errors
    def on_lens(spec: PairSpec | None, question_: str, answer_: str, k: float):
        return logit_lens_for_fact(require_pair(lab, spec), lens_fact(question_, answer_), max(int(k or 1), 1))

    @user_errors
    def on_sae(spec: PairSpec | None, entity_: str, source_: str, layer_: float | None,
               progress=gr.Progress(track_tqdm=True)):
        pair = require_pair(lab, spec)
        facts = facts_picker.demo_facts()
        if not entity_.strip():
            raise LabError("pick a demo fact (or type an entity of the demo world) for the SAE view")
        if not facts:
            raise LabError("the SAE view needs the demo facts (entities known and unknown to the base model)")
        options = sae_options(source_, layer_)
        analysis = lab.remember(("sae", spec, repr(options)), lambda: analyse(
            pair, facts, base_known_ids(pair.base, facts), options))
        return sae_view_for_entity(pair, facts, entity_.strip(), options, analysis)

    queued = dict(concurrency_id=MODEL_QUEUE, concurrency_limit=1)
    fact.change(on_fact, fact, [question, answer, entity], queue=False, api_visibility="private")
    lens.click(on_lens, [state, question, answer, top_k], lens_plot, api_name="logit_lens", **queued)
    sae.click(on_sae, [state, entity, source, layer], sae_plot, api_name="sae_view", **queued)
    return fact
