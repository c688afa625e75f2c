"""Teacher-forced metrics of probes: a prompt, its gold continuation, and the truth-ratio answers.

The standard unlearning metrics (answer probability, exact memorization,
extraction strength, truth ratio; see :mod:`lab.core.unlearning_metrics`) are
all read from the log-probs of target tokens after a prompt.  A probe names
what to score; :func:`score_probes` scores every gold, true and perturbed
answer of many probes in one batched engine call.  The metrics audit and the
surrogates audit (PSG compares the metrics on the forget set and on
surrogates) share it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from lab.core import unlearning_metrics as um
from lab.core.engine import Engine, TokenScores


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

    logprob: float  # mean token log-prob of the gold continuation
    exact_memorization: float
    extraction_strength: float
    truth_ratio: float  # raw R = P(perturbed) / P(true); NaN without perturbed answers

    @property
    def prob(self) -> float:
        return um.answer_probability(self.logprob)


def score_probes(engine: Engine, probes: Sequence[Probe], desc: str) -> list[ProbeScores]:
    """Every probe's gold, true and perturbed answers scored in one batched engine call."""
    prompts: list[str] = []
    targets: list[str] = []

    def row(prompt: str, target: str) -> int:
        prompts.append(prompt)
        targets.append(target)
        return len(targets) - 1

    layout = []
    for probe in probes:
        gold = row(probe.prompt, probe.gold)
        if not (probe.true_answer and probe.perturbed):
            layout.append((gold, None, []))
            continue
        true = gold if probe.true_answer == probe.gold else row(probe.prompt, probe.true_answer)
        layout.append((gold, true, [row(probe.prompt, p) for p in probe.perturbed]))
    scores = engine.answer_scores(prompts, targets, desc=desc) if prompts else []
    return [_probe_scores(scores, gold, true, wrong) for gold, true, wrong in layout]


def _probe_scores(scores: list[TokenScores], gold: int, true: int | None, wrong: list[int]) -> ProbeScores:
    match = scores[gold].greedy_match
    ratio = um.truth_ratio(scores[true].mean, [scores[i].mean for i in wrong]) if true is not None else math.nan
    return ProbeScores(scores[gold].mean, um.exact_memorization(match), um.extraction_strength(match), ratio)
