"""The Probe tab's model work: both models answer one prompt, streamed side by side.

A prompt longer than a model's context is cut from the left by the engine's
own rule (:meth:`Backend.fit_prompt`, lm-evaluation-harness's: the end of the
prompt is what the answer depends on), for both models; :func:`fit_warning`
says so beside the prompt box before anything is sent.

``Engine.stream`` holds its engine's lock for the whole generation, so both
streams are driven from one worker thread (Gradio may resume a generator on a
different thread each step, and a lock must be released by the thread that
took it).  The worker always runs both generations to their end, so the locks
are released where they were taken even when the page stops listening.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter
from typing import TYPE_CHECKING, Any, Iterator

from audits import get_audit
from audits.base import Rewritten
from lab.core.attribution import PromptAttribution, attribute_prompt
from lab.core.backend import Backend
from lab.core.errors import LabError
from lab.core.facts import Fact
from lab.core.models import ModelPair
from lab.core.scoring import score_answer
from lab.shell.ui.diff import Scored

if TYPE_CHECKING:
    import pandas as pd

_DONE = object()


def build_prompt(pair: ModelPair, text: str, raw: bool, max_chars: int) -> str:
    """The exact prompt both models get: the text as typed, or the question in the prompt template."""
    text = text.strip()
    if not text:
        raise LabError("type a question or a prompt first")
    if len(text) > max_chars:
        raise LabError(f"the prompt is longer than {max_chars} characters")
    return text if raw else pair.base.prompt(text)


def fit_both(pair: ModelPair, prompt: str, new_tokens: int) -> str:
    """``prompt`` cut from the left until it fits both models' contexts with room for ``new_tokens``
    (unchanged when it fits; a :class:`LabError` when the new tokens alone fill a context)."""
    return pair.unlearned.fit_prompt(pair.base.fit_prompt(prompt, new_tokens), new_tokens)


def fit_warning(pair: ModelPair, prompt: str, new_tokens: int) -> str:
    """What to say beside the prompt box when ``prompt`` (template applied) will not fit a model's context
    with ``new_tokens`` to generate: how long it is and how many tokens are kept; "" when it fits."""
    fitted = fit_both(pair, prompt, new_tokens)
    if fitted == prompt:
        return ""
    context = min(e.context for _, e in pair.roles() if e.context)
    return (f"This prompt is {len(pair.base.encode(prompt))} tokens with the prompt template, more than the "
            f"{context}-token context leaves beside {new_tokens} new tokens: it will be cut from the left to "
            f"{len(pair.base.encode(fitted))} tokens (the end is kept).")


def prompt_warning(pair: ModelPair, text: str, raw: bool, new_tokens: int, max_chars: int) -> str:
    """The warning beside the prompt box for what is typed now: it will be cut to fit, or it cannot be sent
    (too long, no room left for the answer); "" when nothing is typed or it fits."""
    if not text.strip():
        return ""
    try:
        return fit_warning(pair, build_prompt(pair, text, raw, max_chars), new_tokens)
    except LabError as error:
        return str(error)


def stream_both(pair: ModelPair, prompt: str, max_new_tokens: int) -> Iterator[tuple[str, str]]:
    """(base text, unlearned text) as both greedy continuations grow, token by token."""
    out: queue.Queue = queue.Queue()

    def work() -> None:
        try:
            streams = {"base": pair.base.stream(prompt, max_new_tokens),
                       "unlearned": pair.unlearned.stream(prompt, max_new_tokens)}
            texts = {"base": "", "unlearned": ""}
            while streams:
                for name in list(streams):
                    try:
                        texts[name] = next(streams[name])
                    except StopIteration:
                        del streams[name]
                out.put((texts["base"], texts["unlearned"]))
        except BaseException as error:  # noqa: BLE001 - handed to the reading thread
            out.put(error)
        finally:
            out.put(_DONE)

    threading.Thread(target=work, daemon=True, name="probe-stream").start()
    while (item := out.get()) is not _DONE:
        if isinstance(item, BaseException):
            raise item
        yield item


SAMPLE_COLUMNS = ["model", "answer", "count", "gold"]


def sampled_answers(pair: ModelPair, prompt: str, samples: int, max_new_tokens: int, gold: str,
                    temperature: float = 1.0, seed: int = 0) -> "pd.DataFrame":
    """``samples`` seeded answers of each model to one prompt (the sampling audit's draw): each distinct answer
    with its count, most frequent first, and whether it holds the gold answer."""
    import pandas as pd

    rows = []
    for role, model in pair.roles():
        answers = model.sample([prompt], samples, max_new_tokens, temperature, seed, desc=f"sampling ({role})")[0]
        for answer, count in Counter(answers).most_common():
            rows.append({"model": role, "answer": answer, "count": count,
                         "gold": ("yes" if score_answer(answer, gold).hit else "no") if gold else ""})
    return pd.DataFrame(rows, columns=SAMPLE_COLUMNS)


def gold_scores(pair: ModelPair, prompt: str, outputs: tuple[str, str], gold: str) -> dict[str, Scored]:
    """For a gold answer: each model's output hit, ROUGE-L and the answer's mean token log-prob (the project's
    one scorer), by role."""
    scores = {}
    for (name, engine), output in zip(pair.roles(), outputs):
        score = score_answer(output, gold)
        scores[name] = Scored(score.hit, score.rouge_l, engine.answer_logprobs([prompt], [gold])[0])
    return scores


def rewrites(audit: str, pair: ModelPair, fact: Fact, related: list[Fact], transform: str) -> list[Rewritten]:
    """Every variant of one audit's prompt transform for ``fact`` (the audit's own method, through its hook)."""
    return get_audit(audit)().rewrite(pair, fact, related, transform)


class AsTyped:
    """An engine whose prompt template is the identity; everything else (weights, lock, tokenizer) is the
    engine's own.  A stored item keeps the exact prompt its models were sent; views that build their prompt
    from a question (``Audit.fact_view``) read that prompt again, unchanged, through this."""

    def __init__(self, engine: Backend):
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def prompt(self, question: str) -> str:
        return question


def as_typed(pair: ModelPair) -> ModelPair:
    """``pair`` with both models sending prompts as typed (see :class:`AsTyped`)."""
    return ModelPair(AsTyped(pair.base), AsTyped(pair.unlearned))  # type: ignore[arg-type]


def explain(pair: ModelPair, prompt: str, answer: str, methods: list[str]) -> PromptAttribution:
    """Token attributions of ``answer`` after ``prompt`` in both models (lab.core.attribution)."""
    if not prompt.strip():
        raise LabError("ask both models first: the attribution explains an answer to the prompt sent")
    if not answer.strip():
        raise LabError("give a gold answer (or let the base model answer first) to attribute")
    return attribute_prompt(pair, prompt, answer, methods or ["feature_ablation"])
