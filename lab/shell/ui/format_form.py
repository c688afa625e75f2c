"""The prompt format as a form: the run spec's prompt fields, and a preview of the exact prompt a model sees.

Most unlearned checkpoints people audit are chat models, and a chat model
asked in the plain ``Question: ... Answer:`` format is not audited as it is
used.  The Models tab (the session's pair) and the Verdicts tab (a sweep) both
take the format here, as run-spec fields (:mod:`lab.shell.spec`), so the web
lab sends the prompts the command line would for the same fields.  The preview
shows the prompt as text and as the tokenizer's tokens, special tokens marked,
so a missing BOS or an unexpected system turn is visible before a run.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import gradio as gr

from lab.core.backend import Backend
from lab.core.policy import current as current_policy
from lab.core.prompts import DEFAULT_TEMPLATE, TOKEN_SPLITS

SAMPLE_QUESTION = "Where was the person in question born?"


@dataclass
class FormatForm:
    """The prompt-format inputs of one tab, in run-spec field order."""

    template: gr.Textbox
    chat: gr.Checkbox
    system: gr.Textbox
    variables: gr.Textbox
    split: gr.Radio

    @property
    def inputs(self) -> list[gr.components.Component]:
        return [self.template, self.chat, self.system, self.variables, self.split]


def format_form(prefix: str, open_: bool = False) -> FormatForm:
    """The inputs, in an accordion (element ids ``<prefix>-template``, ``-chat``, ``-system``, ``-vars``)."""
    cap = current_policy().max_prompt_chars
    with gr.Accordion("Prompt format (chat and instruct models: use the chat template)", open=open_,
                      elem_id=f"{prefix}-format"):
        chat = gr.Checkbox(False, label="Use the tokenizer's chat template", elem_id=f"{prefix}-chat")
        template = gr.Textbox(DEFAULT_TEMPLATE, label="Prompt template (plain models; {question} is filled)",
                              lines=2, max_length=cap, elem_id=f"{prefix}-template")
        system = gr.Textbox("", label="System prompt (chat template)", lines=2, max_length=cap,
                            elem_id=f"{prefix}-system")
        variables = gr.Textbox("", label="Chat template variables, NAME=VALUE per line (e.g. date_string=26 Jul "
                               "2024)", lines=2, max_length=cap, elem_id=f"{prefix}-vars")
        split = gr.Radio(list(TOKEN_SPLITS), value=TOKEN_SPLITS[0], label="Token split of a plain prompt and its "
                         "answer (open-unlearning: its published plain-template numbers)", elem_id=f"{prefix}-split")
    return FormatForm(template, chat, system, variables, split)


def format_fields(template: str, chat: bool, system: str, variables: str, split: str | None = None) -> dict[str, Any]:
    """The form's values as run-spec fields (checked by the one builder)."""
    return {"prompt_template": template or DEFAULT_TEMPLATE, "chat_template": bool(chat),
            "system_prompt": system or "", "chat_vars": variables or "", "token_split": split or None}


def preview_html(model: Backend, question: str = SAMPLE_QUESTION) -> str:
    """The exact prompt ``model`` is sent for ``question``: its text, then its tokens with the special ones
    marked, and how many there are."""
    text, tokens = model.preview(question)
    specials = set(model.tokenizer.all_special_tokens)
    chips = "".join(f"<span class='tok{' special' if t in specials else ''}'>{html.escape(t)}</span>"
                    for t in tokens)
    return (f"<div class='prompt-preview card'><div class='lab-caption'>The prompt {html.escape(model.info.ref)} "
            f"sees for “{html.escape(question)}” ({len(tokens)} tokens; special tokens marked)</div>"
            f"<pre>{html.escape(text)}</pre><div class='tokens'>{chips}</div></div>")
