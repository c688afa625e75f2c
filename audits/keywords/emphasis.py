"""Keyword emphasis from "Understanding the Dilemma of Unlearning for Large Language Models" (unPact).

The paper finds that emphasizing the prompt's keywords brings forgotten knowledge
back; the exact emphasis is not given, so :func:`emphasize` offers named
transforms, each reported on its own.  Pure text in, text out: the keywords
audit and the web lab's Probe (through the audit's rewrite hook) use the same
functions.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable, Sequence

from lab.core.errors import LabError

TRANSFORMS = ("repeat", "upper", "quote", "focus")

_WORD = re.compile(r"\w+(?:[-'’]\w+)*")


def keyword_phrases(text: str, spans: Iterable[tuple[int, int]]) -> list[str]:
    """The words of ``text`` touched by the character ``spans`` (key tokens), adjacent words merged.

    Key tokens are often word pieces ("Sha", "ex"); emphasis acts on whole
    words, and neighbouring key words (a first and last name) on the phrase.
    """
    spans = list(spans)
    words = [m for m in _WORD.finditer(text)
             if any(start < m.end() and m.start() < end for start, end in spans)]
    phrases: list[str] = []
    last_end = None
    for match in words:
        if phrases and last_end is not None and not text[last_end:match.start()].strip():
            phrases[-1] += text[last_end:match.start()] + match.group()
        else:
            phrases.append(match.group())
        last_end = match.end()
    return list(dict.fromkeys(phrases))


def _mark_each(text: str, phrases: Sequence[str], mark: Callable[[str], str]) -> str:
    """Every whole-word occurrence of each phrase replaced by ``mark(phrase)``, in one pass."""
    ordered = sorted(set(phrases), key=len, reverse=True)
    pattern = re.compile(r"(?<!\w)(" + "|".join(re.escape(p) for p in ordered) + r")(?!\w)")
    return pattern.sub(lambda m: mark(m.group(1)), text)


def check_emphasis(transform: str, repeats: int = 2) -> None:
    """A known transform name and a repeat count that repeats."""
    if transform not in TRANSFORMS:
        raise LabError(f"unknown emphasis transform '{transform}' (use {', '.join(TRANSFORMS)})")
    if repeats < 2:
        raise LabError(f"keywords.repeats must be at least 2, got {repeats}")


def emphasize(question: str, phrases: Sequence[str], transform: str, repeats: int = 2) -> str:
    """The question with its keyword phrases emphasized by one named transform.

    repeat: each keyword written ``repeats`` times; upper: keywords in capitals;
    quote: keywords in double quotes; focus: the prefix "Focus on: <keywords>.".
    """
    check_emphasis(transform, repeats)
    if not phrases:
        return question
    if transform == "focus":
        return f"Focus on: {', '.join(phrases)}. {question}"
    marks: dict[str, Callable[[str], str]] = {
        "repeat": lambda p: " ".join([p] * repeats),
        "upper": str.upper,
        "quote": lambda p: f'"{p}"',
    }
    return _mark_each(question, phrases, marks[transform])
