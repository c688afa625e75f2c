"""Teacher-forced metrics of probes: a prompt, its gold continuation, and the truth-ratio answers.

The standard unlearning metrics (answer probability, exact memorization,
extraction strength, truth ratio, normalised probability; see
:mod:`lab.core.unlearning_metrics`) are all read from the log-probs of target
tokens after a prompt.  A probe names what to score; :func:`score_probes`
scores every gold, true and perturbed answer of many probes in one batched
engine call.  The metrics audit and the surrogates audit (PSG compares the
metrics on the forget set and on surrogates) share it.

open-unlearning labels every question-answer pair as the answer followed by
the tokenizer's EOS, and reads two things from those labels: probabilities
and the LOSS / ZLib attacks average over every labelled token, EOS included;
the per-token metrics (exact memorization, extraction strength, Min-K%,
Min-K%++) drop the last labelled token ("-1 to ignore eos prediction").
:func:`labelled_row` and :func:`tokenwise` are those two rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from lab.core import unlearning_metrics as um
from lab.core.backend import Backend, TokenScores
from lab.core.facts import Fact


@dataclass(frozen=True)
class Probe:
    """A prompt with its gold continuation and, optionally, the truth-ratio answers."""

    prompt: str
    gold: str
    true_answer: str = ""  # the correct side of the truth ratio ("" = no truth ratio)
    perturbed: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProbeScores:
    """Teacher-forced metrics of one probe under one model."""

    logprob: float  # mean token log-prob of the gold continuation (EOS included when scored with it)
    exact_memorization: float
    extraction_strength: float
    true_logprob: float = math.nan  # mean token log-prob of the truth ratio's correct answer
    perturbed_logprobs: tuple[float, ...] = ()  # the same for each perturbed answer

    @property
    def prob(self) -> float:
        return um.answer_probability(self.logprob)

    @property
    def truth_ratio(self) -> float:
        """Raw R = P(perturbed) / P(true); NaN without perturbed answers."""
        return um.truth_ratio(self.true_logprob, self.perturbed_logprobs)

    @property
    def normalised_prob(self) -> float:
        """P(true) / (P(true) + sum of P(perturbed)); NaN without perturbed answers."""
        return um.normalised_probability(self.true_logprob, self.perturbed_logprobs)


PASSAGE_PREFIX_WORDS = 32  # MUSE's VerbMem prompts with a passage's opening and scores the continuation
PASSAGE_CONTINUATION_WORDS = 96


def passage_parts(fact: Fact) -> tuple[str, str] | None:
    """A passage item as (prompt, gold continuation): a ``continuation`` item as given, a ``text`` item cut.

    A raw text is cut at a word boundary after its first
    :data:`PASSAGE_PREFIX_WORDS` words (at half its length when shorter),
    and the continuation keeps the next :data:`PASSAGE_CONTINUATION_WORDS`
    words: MUSE's verbatim-memorization setup of prompt and ground-truth
    continuation, applied to passages that come whole.  None for other kinds
    and for texts of fewer than two words.
    """
    if fact.kind == "continuation":
        return (fact.question, fact.answer) if fact.question and fact.answer else None
    if fact.kind != "text":
        return None
    words = fact.text.split()
    if len(words) < 2:
        return None
    cut = min(PASSAGE_PREFIX_WORDS, len(words) // 2)
    return " ".join(words[:cut]), " ".join(words[cut: cut + PASSAGE_CONTINUATION_WORDS])


def eos_suffix(engine: Backend, eos: bool) -> list[int]:
    """``[EOS id]`` when labels end with EOS (``eos`` and the tokenizer has one), else ``[]``."""
    eos_id = engine.tokenizer.eos_token_id
    return [eos_id] if eos and eos_id is not None else []


def labelled_row(engine: Backend, prompt: str, answer: str, eos: bool) -> tuple[list[int], int]:
    """Ids of prompt + answer (+ EOS, see :func:`eos_suffix`) and the index where the labels start."""
    rows, starts = engine.continuation_rows([(prompt, answer)], eos_suffix(engine, eos))
    return rows[0], starts[0]


def tokenwise(scores: TokenScores) -> TokenScores:
    """The labelled tokens less the last: what open-unlearning's per-token metrics read."""
    return TokenScores(scores.logprobs[:-1],
                       mu=None if scores.mu is None else scores.mu[:-1],
                       sigma=None if scores.sigma is None else scores.sigma[:-1],
                       greedy_match=None if scores.greedy_match is None else scores.greedy_match[:-1])


def score_probes(engine: Backend, probes: Sequence[Probe], desc: str, eos: bool = False) -> list[ProbeScores]:
    """Every probe's gold, true and perturbed answers scored in one batched engine call.

    With ``eos`` every answer is followed by the tokenizer's EOS, as
    open-unlearning labels them: log-probs include it, exact memorization and
    extraction strength read the answer's own tokens.  Without it (the lab's
    surrogate probes, whose gold may be a mid-sentence continuation) only the
    answer's tokens are scored.
    """
    pairs: list[tuple[str, str]] = []

    def row(prompt: str, target: str) -> int:
        pairs.append((prompt, target))
        return len(pairs) - 1

    layout = []
    for probe in probes:
        gold = row(probe.prompt, probe.gold)
        if not (probe.true_answer and probe.perturbed):
            layout.append((gold, None, []))
            continue
        true = gold if probe.true_answer == probe.gold else row(probe.prompt, probe.true_answer)
        layout.append((gold, true, [row(probe.prompt, p) for p in probe.perturbed]))
    rows, starts = engine.continuation_rows(pairs, eos_suffix(engine, eos))
    scores = engine.token_scores(rows, starts, desc=desc) if rows else []
    appended = bool(eos_suffix(engine, eos))
    return [_probe_scores(scores, gold, true, wrong, appended) for gold, true, wrong in layout]


def _probe_scores(scores: list[TokenScores], gold: int, true: int | None, wrong: list[int],
                  appended_eos: bool) -> ProbeScores:
    match = (tokenwise(scores[gold]) if appended_eos else scores[gold]).greedy_match
    truth = (scores[true].mean, tuple(scores[i].mean for i in wrong)) if true is not None else (math.nan, ())
    return ProbeScores(scores[gold].mean, um.exact_memorization(match), um.extraction_strength(match), *truth)
