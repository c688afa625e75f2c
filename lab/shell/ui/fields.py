"""Numbers typed into a run form, each answered beside its own field.

Gradio's bounds on a number field (``minimum``, ``maximum``) refuse a bad value before any handler runs, and
the page then says nothing: "facts per split: -3" did nothing at all.  The lab's number fields carry no Gradio
bounds.  Each has a message place under it (:class:`~lab.shell.ui.feedback.Beside`) and a check, the same
function the run applies (:func:`check_limit`, :func:`check_new_tokens`), that answers as the value is typed;
the run refuses the same value with the same words beside its button.

"Max new tokens" is bounded by the model's context as well as by the run policy: at most half the context
(:func:`new_tokens_cap`), so a prompt keeps the other half; its label says the bound for the loaded model.
"""

from __future__ import annotations

from typing import Any, Callable

import gradio as gr

from lab.core.errors import LabError
from lab.core.policy import current as current_policy
from lab.shell.ui.feedback import Beside


def whole(value: float | None, what: str) -> int | None:
    """``value`` as a whole number (None stays None), or a one-line error naming the field."""
    if value is None:
        return None
    if value != int(value):
        raise LabError(f"{what} must be a whole number, got {value:g}")
    return int(value)


def check_limit(value: float | None) -> int | None:
    """Facts per split: 0 or nothing means all (None), else a positive whole number."""
    limit = whole(value, "facts per split")
    if limit is not None and limit < 0:
        raise LabError(f"facts per split must be 0 (all) or more, got {limit}")
    return limit or None


def new_tokens_cap(context: int | None) -> int:
    """The most new tokens a form accepts: the run policy's cap, and at most half the model's context when it
    is known (the prompt keeps the other half)."""
    cap = current_policy().max_new_tokens
    return min(cap, max(1, context // 2)) if context else cap


def tokens_label(context: int | None) -> str:
    """The "Max new tokens" label, with the bound for this model (a value above it says why, beside the field)."""
    return f"Max new tokens (1-{new_tokens_cap(context)})"


def check_new_tokens(value: float | None, context: int | None = None, model: str = "the model") -> int:
    """Max new tokens: a whole number from 1 to :func:`new_tokens_cap` (the reason named when it is above)."""
    tokens = whole(value, "max new tokens")
    if tokens is None or tokens < 1:
        raise LabError(f"max new tokens must be 1 or more, got {'nothing' if tokens is None else tokens}")
    cap = new_tokens_cap(context)
    if tokens > cap:
        policy = current_policy()
        why = (f"half of {model}'s {context}-token context: the prompt needs the rest" if cap < policy.max_new_tokens
               else f"the cap in {policy.name}")
        raise LabError(f"max new tokens must be at most {cap} ({why}), got {tokens}")
    return tokens


def number_field(value: float, label: str, elem_id: str, check: Callable[[float | None, Any], Any],
                 about: Any = None) -> tuple[gr.Number, Beside]:
    """A number field with its message place under it; ``check(value, about)`` (``about``: the value of another
    component the check needs, such as the model, or None) answers as it is typed, raising for a bad value.
    Place it in its own column so the message sits under the field."""
    field = gr.Number(value, label=label, precision=None, elem_id=elem_id)
    message = Beside(elem_id)

    @message
    def on_input(value_: float | None, about_: Any = None, request: gr.Request = None) -> None:
        check(value_, about_)

    inputs = [field] + ([about] if about is not None else [])
    message.watch(field.input(on_input, inputs, None, queue=False, api_visibility="private", **message.events))
    return field, message
