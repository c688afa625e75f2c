"""Prompt tokens coloured by their attribution, as LIT's salience maps show them, beside the bar charts.

A bar per token is exact but hard to read along a sentence; the same numbers
as a tint over the prompt's own text show at a glance which words carry the
answer in the base model and which the unlearned model stopped relying on.
One row per model and method, and their difference; one colour scale per
method (shared by both models, so the rows compare), positive contributions in
the row's colour, negative ones in grey-orange.  Hovering a token gives its value.
"""

from __future__ import annotations

import html

from lab.core.attribution import METHOD_TITLES, PromptAttribution
from lab.shell.report.style import ROLE_COLORS

NEGATIVE = "#f97316"
DIFFERENCE = "#64748b"


def _rgba(color: str, alpha: float) -> str:
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r}, {g}, {b}, {alpha:.2f})"


def _row(label: str, css: str, tokens: list[str], values: list[float], scale: float, color: str,
         marked: set[int]) -> str:
    chips = []
    for index, (token, value) in enumerate(zip(tokens, values)):
        alpha = min(abs(value) / scale, 1.0) * 0.85 if scale > 0 else 0.0
        tint = _rgba(color if value >= 0 else NEGATIVE, alpha)
        star = " key" if index in marked else ""
        chips.append(f"<span class='sal-tok{star}' style='background:{tint}' title='{value:+.3f}'>"
                     f"{html.escape(token.replace(chr(10), '↵'))}</span>")
    return (f"<div class='sal-row sal-{css}'><span class='sal-label'>{html.escape(label)}</span>"
            f"<span class='sal-text'>{''.join(chips)}</span></div>")


def saliency_placeholder() -> str:
    """The panel before anything is explained: what pressing Explain will show (not an empty box)."""
    return ("<div class='sal sal-empty'><div class='sal-head'>Press <b>Explain the answer</b> to colour the prompt "
            "by attribution</div><p>Each prompt token is tinted by how much it carries the gold answer (or the base "
            "model's answer) in the base model, in the unlearned model, and in their difference; the bar chart beside "
            "gives the same numbers. Words the base model relied on and the unlearned model no longer does show up "
            "at a glance.</p></div>")


def saliency_html(attr: PromptAttribution) -> str:
    """Every method's attributions over the prompt's tokens: base, unlearned, and unlearned minus base."""
    blocks = []
    marked = set(attr.marked)
    for method, by_model in attr.scores.items():
        base, unlearned = by_model.get("base", []), by_model.get("unlearned", [])
        scale = max([abs(v) for v in (*base, *unlearned)] or [0.0])
        diff = [u - b for b, u in zip(base, unlearned)]
        diff_scale = max([abs(v) for v in diff] or [0.0])
        rows = [_row("base", "base", attr.labels, base, scale, ROLE_COLORS["base"], marked),
                _row("unlearned", "unlearned", attr.labels, unlearned, scale, ROLE_COLORS["unlearned"], marked),
                _row("unlearned − base", "diff", attr.labels, diff, diff_scale, DIFFERENCE, marked)]
        blocks.append(f"<div class='sal-method'><div class='sal-title'>{html.escape(METHOD_TITLES.get(method, method))}"
                      f" <span class='sal-scale'>(darker = larger share of the answer's log-prob; "
                      f"max |value| {scale:.3f})</span></div>{''.join(rows)}</div>")
    lp = ", ".join(f"{m} {v:.2f}" for m, v in attr.logprob.items())
    return (f"<div class='sal'><div class='sal-head'>Which prompt tokens carry <mark class='gold'>"
            f"{html.escape(attr.answer)}</mark> (answer mean log-prob: {html.escape(lp)})</div>"
            + "".join(blocks) + "</div>")
