"""Models tab: the demo pair ready on start, or any two models, loaded with progress.

On first launch the demo world is built here (``$LAB_DEMO_PROFILE``, default
``full``, about 3-4 minutes on a laptop CPU) with its progress bar in the page;
later launches reuse it.  A user can instead name two Hugging Face ids (or, when
not in a Space, local directories).  The page shows both models' size, device,
dtype and the tokenizer check that every token-level audit depends on.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from lab.core import settings
from lab.core.models import DTYPES
from lab.core.policy import current as current_policy
from lab.demo.build import build_demo, read_manifest
from lab.shell.ui.feedback import Beside
from lab.shell.spec import PairSpec, build_spec, replaced
from lab.shell.ui.format_form import format_fields, format_form, preview_html
from lab.shell.ui.session import DEMO_UNLEARNED, MODEL_QUEUE, Lab, demo_pair
from lab.shell.ui.updates import Outputs
from lab.shell.ui.views import MODEL_COLUMNS, manifest_frame, models_frame, tokenizer_check

DEMO, CUSTOM = "Demo pair", "Your models"
DEVICES = ["auto", "cpu", "cuda", "mps"]


def ensure_demo() -> dict | None:
    """Build the demo world if none exists yet (progress goes through tqdm); return its manifest."""
    if read_manifest(settings.demo_dir()) is None:
        build_demo(settings.demo_profile())
    return read_manifest(settings.demo_dir())


def load(lab: Lab, spec: PairSpec, progress: gr.Progress) -> dict[str, Any]:
    """Load ``spec`` (building the demo first if it is a demo pair) and describe it: the values of the
    tab's :data:`PAIR_OUTPUTS`, by name."""
    manifest = None
    if spec.is_demo:
        progress(0.0, desc="preparing the demo world")
        manifest = ensure_demo()
    progress(0.5, desc=f"loading {spec.label}")
    pair = lab.pair(spec)
    status = f"**Loaded** {spec.label} on `{pair.base.info.device}` ({pair.base.info.dtype})"
    return dict(state=spec, status=status, table=models_frame(pair), check=tokenizer_check(pair),
                manifest=manifest_frame(manifest), preview=preview_html(pair.base))


def spec_from_inputs(source: str, demo_name: str, base: str, unlearned: str, device: str, dtype: str,
                     trust: bool, device_map: str = "none", *prompt_format: Any) -> PairSpec:
    """The pair the form asks for, through the run-spec builder (its fields named in errors)."""
    fields = {"device": device, "dtype": dtype, "trust_remote_code": bool(trust),
              "device_map": None if device_map in (None, "", "none") else device_map,
              **(format_fields(*prompt_format) if prompt_format else {})}
    if source == DEMO:
        return demo_pair(demo_name, **fields)
    return build_spec(PairSpec, {**fields, "base": base, "unlearned": unlearned}, "the Models tab")


def build(lab: Lab, state: gr.State, app: gr.Blocks) -> Outputs:
    """The tab's content; the app's load event prepares the demo pair for each new session.  Returns what
    :func:`load` fills (the session's pair and its description), for other tabs that load a pair."""
    lim = current_policy()
    gr.Markdown("Load the **base** model and its **unlearned** version. The demo pair is ready on start; "
                "pick which unlearning method to audit, or name your own pair.", elem_classes="tab-intro")
    with gr.Row(equal_height=False, elem_classes="stack-on-phone"):
        with gr.Column(scale=3, min_width=280):
            source = gr.Radio([DEMO, CUSTOM], value=DEMO, label="Models", elem_id="models-source")
            demo_name = gr.Dropdown(list(DEMO_UNLEARNED), value=DEMO_UNLEARNED[0], label="Unlearned demo model",
                                    info="npo, graddiff, ga: unlearning methods; retrain: trained without the "
                                         "forget set (the gold standard)", elem_id="models-demo")
            with gr.Group(visible=False) as custom:
                hint = "Hugging Face id" if not lim.server_paths else "Hugging Face id or local directory"
                base = gr.Textbox(label="Base model", placeholder=f"{hint}, e.g. meta-llama/Llama-2-7b-chat-hf",
                                  elem_id="models-base")
                unlearned = gr.Textbox(label="Unlearned model",
                                       placeholder=f"{hint}, e.g. microsoft/Llama2-7b-WhoIsHarryPotter",
                                       elem_id="models-unlearned")
            with gr.Row():
                device = gr.Dropdown(DEVICES, value="auto", label="Device", elem_id="models-device")
                dtype = gr.Dropdown(["auto", *DTYPES], value="auto", label="Dtype", elem_id="models-dtype")
                device_map = gr.Dropdown(["none", "auto"], value="none", label="Device map",
                                         info="auto: spread each model over the GPUs (accelerate)",
                                         elem_id="models-device-map")
            trust = gr.Checkbox(False, label="Trust remote code (runs model code from the hub)",
                                visible=lim.remote_code, elem_id="models-trust")
            form = format_form("models")
            load_btn = gr.Button("Load models", variant="primary", elem_id="models-load")
            message = Beside("models-load")
        with gr.Column(scale=5, min_width=280):
            status = gr.Markdown("Preparing the demo pair… (the first launch trains the demo world: a few minutes)",
                                 min_height=64, elem_id="models-status")
            table = gr.Dataframe(pd.DataFrame(columns=MODEL_COLUMNS), label="Loaded models", interactive=False,
                                 elem_id="models-table", elem_classes="scroll-table")
            check = gr.Markdown(elem_id="models-tokenizer")
            preview = gr.HTML(elem_id="models-preview")
            format_msg = Beside("models-format")
            manifest = gr.Dataframe(manifest_frame(None), label="Demo build: greedy accuracy per model and split",
                                    interactive=False, elem_id="models-manifest", elem_classes="scroll-table")

    source.change(lambda s: (gr.Group(visible=s == CUSTOM), gr.Dropdown(visible=s == DEMO)), source,
                  [custom, demo_name], queue=False, api_visibility="private")
    out = Outputs(state=state, status=status, table=table, check=check, manifest=manifest, preview=preview)

    @message
    def on_load(source_, demo_, base_, unlearned_, device_, dtype_, trust_, device_map_, template_, chat_, system_,
                vars_, split_, request: gr.Request, progress=gr.Progress(track_tqdm=True)):
        spec = spec_from_inputs(source_, demo_, base_, unlearned_, device_, dtype_, trust_, device_map_, template_,
                                chat_, system_, vars_, split_)
        return out(**load(lab, spec, progress))

    @message
    def on_start(spec: PairSpec | None, request: gr.Request, progress=gr.Progress(track_tqdm=True)):
        return out(**load(lab, spec or demo_pair(), progress))

    @format_msg
    def on_format(spec: PairSpec | None, template_, chat_, system_, vars_, split_, request: gr.Request):
        """A new prompt format applies to the loaded pair at once (a view on the same weights) and the
        preview shows what the models now see."""
        if spec is None:
            return out()
        spec = replaced(spec, **format_fields(template_, chat_, system_, vars_, split_))
        return out(state=spec, preview=preview_html(lab.pair(spec).base))

    # Progress and errors show beside the button; the loaded pair's description stays as it was.
    queued = dict(concurrency_id=MODEL_QUEUE, concurrency_limit=1, **message.events)
    inputs = [source, demo_name, base, unlearned, device, dtype, trust, device_map, *form.inputs]
    message.watch(load_btn.click(on_load, inputs, out.list, api_name="load_models", **queued))
    message.watch(app.load(on_start, state, out.list, api_visibility="private", **queued))
    format_msg.watch(gr.on([c.change for c in form.inputs], on_format, [state, *form.inputs], out.list,
                           trigger_mode="always_last", api_visibility="private", **format_msg.events))
    return out
