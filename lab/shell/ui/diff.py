"""Diff-first comparison of the two models' outputs: what changed jumps out, the gold answer is marked.

Wherever the lab shows the base and the unlearned model answering the same
prompt (Probe, an item's full record, the worst recovered facts), it shows
them through :func:`compare_outputs`:

- a word-level diff (``difflib`` over words, compared case- and
  punctuation-insensitively): words only one model wrote are tinted in that
  model's colour;
- every word of the gold answer is marked in both outputs (the scorer's own
  normalisation, :func:`lab.core.scoring.normalize`);
- hit or miss as a coloured badge, and the gold answer's per-token
  probability under each model as a number that is always visible (a
  suppressed answer often keeps a high probability while the greedy output
  changes).
"""

from __future__ import annotations

import difflib
import html
import math
import re
from dataclasses import dataclass

from lab.core.scoring import normalize

_TOKENS = re.compile(r"\s+|[^\s]+")


def split_words(text: str) -> list[str]:
    """``text`` as alternating words and whitespace runs (joining them gives ``text`` back)."""
    return _TOKENS.findall(text or "")


def _key(word: str) -> str:
    return normalize(word) or word


def word_diff(base: str, unlearned: str) -> tuple[list[tuple[str, bool]], list[tuple[str, bool]]]:
    """Each side's tokens with a flag: True where only this side has the word (whitespace is never flagged)."""
    left, right = split_words(base), split_words(unlearned)
    lw = [i for i, t in enumerate(left) if not t.isspace()]
    rw = [i for i, t in enumerate(right) if not t.isspace()]
    matcher = difflib.SequenceMatcher(None, [_key(left[i]) for i in lw], [_key(right[i]) for i in rw],
                                      autojunk=False)
    only_left, only_right = set(range(len(lw))), set(range(len(rw)))
    for block in matcher.get_matching_blocks():
        only_left -= set(range(block.a, block.a + block.size))
        only_right -= set(range(block.b, block.b + block.size))
    flag_left, flag_right = {lw[i] for i in only_left}, {rw[i] for i in only_right}
    return ([(t, i in flag_left) for i, t in enumerate(left)], [(t, i in flag_right) for i, t in enumerate(right)])


def gold_words(gold: str) -> set[str]:
    """The gold answer's words as the scorer normalises them (articles and punctuation dropped)."""
    return set(normalize(gold or "").split())


def marked(tokens: list[tuple[str, bool]], gold: set[str], side: str) -> str:
    """One side's tokens as HTML: words only this side wrote tinted, gold-answer words marked."""
    out = []
    for token, only in tokens:
        text = html.escape(token)
        if token.isspace():
            out.append(text)
            continue
        words = set(normalize(token).split())
        if words and words <= gold:
            text = f"<mark class='gold' title='gold answer'>{text}</mark>"
        if only:
            text = f"<span class='only only-{side}' title='only the {side} model wrote this'>{text}</span>"
        out.append(text)
    return "".join(out)


@dataclass(frozen=True)
class Scored:
    """One model's scores on the gold answer: hit, ROUGE-L recall, and the answer's mean token log-prob."""

    hit: bool | None = None
    rouge: float | None = None
    logprob: float | None = None

    @property
    def probability(self) -> float | None:
        """The gold answer's per-token probability (the exponent of its mean token log-prob)."""
        if self.logprob is None or not math.isfinite(self.logprob):
            return None
        return math.exp(self.logprob)


def hit_badge(hit: bool | None) -> str:
    """Hit or miss as a coloured badge (– when there was no gold answer to judge against)."""
    if hit is None:
        return "<span class='badge badge-none'>no gold</span>"
    return "<span class='badge badge-hit'>✓ hit</span>" if hit else "<span class='badge badge-miss'>✗ miss</span>"


def probability_text(score: Scored | None) -> str:
    p = score.probability if score else None
    if p is None:
        return "<span class='pgold'>p(gold) –</span>"
    return (f"<span class='pgold' title='per-token probability of the gold answer (mean log-prob "
            f"{score.logprob:.3f})'>p(gold) <b>{p:.3f}</b></span>")


def _side(side: str, label: str, body: str, score: Scored | None) -> str:
    rouge = "" if not score or score.rouge is None else f"<span class='rouge'>ROUGE-L {score.rouge:.2f}</span>"
    return (f"<div class='cmp-side cmp-{side}'><div class='cmp-head'><span class='cmp-model'>{label}</span>"
            f"{hit_badge(score.hit if score else None)}{probability_text(score)}{rouge}</div>"
            f"<div class='cmp-text'>{body or '<span class=cmp-empty>(no output yet)</span>'}</div></div>")


def compare_outputs(base: str, unlearned: str, gold: str = "", scores: dict[str, Scored] | None = None,
                    labels: tuple[str, str] = ("base", "unlearned")) -> str:
    """Both outputs side by side (stacked on a phone), diffed word by word, gold words marked, with scores."""
    left, right = word_diff(base or "", unlearned or "")
    gold_set = gold_words(gold)
    scores = scores or {}
    legend = ("<div class='cmp-legend'><span class='only only-base'>base only</span> "
              "<span class='only only-unlearned'>unlearned only</span>"
              + (f" <mark class='gold'>gold: {html.escape(gold)}</mark>" if gold.strip() else "") + "</div>")
    return ("<div class='cmp'>" + legend + "<div class='cmp-pair'>"
            + _side("base", labels[0], marked(left, gold_set, "base"), scores.get("base"))
            + _side("unlearned", labels[1], marked(right, gold_set, "unlearned"), scores.get("unlearned"))
            + "</div></div>")
