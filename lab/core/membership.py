"""Membership inference on texts, the attacks the unlearning benchmarks report.

LOSS (Yeom et al., "Privacy Risk in Machine Learning: Analyzing the
Connection to Overfitting"), ZLib (Carlini et al., "Extracting Training Data
from Large Language Models"), Min-K% (Shi et al., "Detecting Pretraining
Data from Large Language Models") and Min-K%++ (Zhang et al.), each a score
per text read from one forward pass, oriented "higher = more member-like";
an AUC of forget (members) against holdout (non-members) texts says how
recognizably the model was trained on the forget set.  The metrics audit
reports them on the facts and passages, the surrogates audit on its
surrogate probes.

Two more attacks need more than one forward pass of one model
(:data:`MORE_MIA_NAMES`, the metrics audit's): the reference-model attack
(the LOSS score less a reference model's; Carlini et al., above) and the
gradient-norm attack (a backward pass per text, so a model loaded here;
"Pandora's White-Box: Precise Training Data Detection and Extraction in
Large Language Models").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from lab.core import unlearning_metrics as um
from lab.core.backend import Backend, TokenScores
from lab.core.facts import Fact
from lab.core.probes import eos_suffix, labelled_row, tokenwise
from lab.core.prompts import Encoder

MIA_NAMES = {"loss": "mia_loss", "zlib": "mia_zlib", "mink": "mia_min_k", "mink_pp": "mia_min_k_plus_plus"}
# The attacks that read another model's scores (ref) or gradients (gradnorm), by open-unlearning's names.
MORE_MIA_NAMES = {"ref": "mia_reference", "gradnorm": "mia_gradnorm"}
GRADNORM_P = {"1": 1.0, "2": 2.0, "inf": math.inf}  # the norms open-unlearning's gradient-norm attack accepts

# Each attack from the labelled tokens' scores, the per-token ones (EOS dropped), the scored text and k;
# oriented "higher = more member-like" (minus open-unlearning's loss-like scores).
MIA_ATTACKS: dict[str, Callable[[TokenScores, TokenScores, str, float], float]] = {
    "loss": lambda s, per_token, text, k: um.loss_score(s.logprobs),
    "zlib": lambda s, per_token, text, k: um.zlib_score(s.logprobs, text),
    "mink": lambda s, per_token, text, k: um.min_k_score(per_token.logprobs, k),
    "mink_pp": lambda s, per_token, text, k: (um.min_k_pp_score(per_token.logprobs, per_token.mu, per_token.sigma, k)
                                              if per_token.mu is not None else math.nan),
}


@dataclass(frozen=True)
class MiaText:
    """One membership-inference example: ``text`` is scored, after ``prefix`` when there is one."""

    fact: Fact
    text: str
    prefix: str = ""


def mia_examples(engine: Backend, facts: Sequence[Fact], source: str) -> list[MiaText]:
    """The forget and holdout examples that membership inference scores, per ``mia_source``.

    ``answer`` and ``qa`` read question-answer facts; ``text`` reads the
    ``text`` field of any fact, so a MUSE suite's privleak passages (kind
    ``text``) give MUSE's forget-vs-holdout PrivLeak.
    """
    pool = [f for f in facts if f.split in ("forget", "holdout")]
    questions = [f for f in pool if f.kind == "qa"]
    if source == "answer":
        return [MiaText(f, f.answer, engine.prompt(f.question)) for f in questions]
    if source == "qa":
        return [MiaText(f, Encoder.joined(engine.prompt(f.question), f.answer)) for f in questions]
    first: dict[str, Fact] = {}
    for fact in pool:
        if fact.text:
            first.setdefault(fact.text, fact)
    return [MiaText(fact, text) for text, fact in first.items()]


def attack_scores(labelled: TokenScores, per_token: TokenScores, text: str, k: float) -> dict[str, float]:
    """Every attack's membership score of one example."""
    return {name: attack(labelled, per_token, text, k) for name, attack in MIA_ATTACKS.items()}


@dataclass(frozen=True)
class Labelled:
    """The token rows of membership examples: ids, where the labels start, and whether the per-token attacks
    drop the last label."""

    rows: list[list[int]]
    starts: list[int]
    drops: list[bool]


def labelled_rows(engine: Backend, examples: Sequence[MiaText]) -> Labelled:
    """Labelled as open-unlearning labels them: an answer after its prompt is followed by EOS; a text is every
    token after the first (its pretraining format, no EOS added).  The per-token attacks drop the last
    labelled token either way, as the reference does (the EOS of an answer; a text's last token)."""
    rows, starts, drops = [], [], []
    for ex in examples:
        if ex.prefix:
            row, start = labelled_row(engine, ex.prefix, ex.text, eos=True)
            drops.append(bool(eos_suffix(engine, True)))
        else:
            row, start = engine.tokenizer(ex.text)["input_ids"], 1
            drops.append(True)
        rows.append(row)
        starts.append(start)
    return Labelled(rows, starts, drops)


def membership_scores(engine: Backend, examples: Sequence[MiaText], k: float, desc: str) -> list[dict[str, float]]:
    """Every one-pass attack's membership score (higher = more member-like) for each example, in one batched
    call (Min-K%++ needs the full vocabulary distribution: NaN for a served model), labelled as
    :func:`labelled_rows` says; ZLib compresses the labelled tokens decoded without special tokens.
    """
    labelled = labelled_rows(engine, examples)
    rows, starts, drops = labelled.rows, labelled.starts, labelled.drops
    token_scores = engine.token_scores(rows, starts, distribution=engine.can("internals"), desc=desc) if rows else []
    return [attack_scores(s, tokenwise(s) if drop else s,
                          engine.tokenizer.decode(row[start:], skip_special_tokens=True), k)
            for s, row, start, drop in zip(token_scores, rows, starts, drops)]


def reference_scores(scores: Sequence[dict[str, float]], anchor: Sequence[dict[str, float]]) -> list[float]:
    """The reference-model attack per example: its LOSS score under the audited model less its LOSS score
    under the anchor model (the run's reference or the base), both from :func:`membership_scores`."""
    return [um.reference_score(s["loss"], a["loss"]) for s, a in zip(scores, anchor)]


def gradnorm_scores(engine: Backend, examples: Sequence[MiaText], p: float, desc: str) -> list[float]:
    """The gradient-norm attack per example (:func:`lab.core.unlearning_metrics.gradnorm_score`): the mean
    token NLL over the labels the per-token attacks read, one backward pass per example (remembered for the
    model's weights: a sweep's base and reference are not differentiated again in every pair)."""
    from lab.core.gradnorm import tensor_gradient_norms

    labelled = labelled_rows(engine, examples)
    ends = [len(row) - int(drop) for row, drop in zip(labelled.rows, labelled.drops)]
    norms = engine.remember("gradient norms", (labelled.rows, labelled.starts, ends, p),
                            lambda: tensor_gradient_norms(engine, labelled.rows, labelled.starts, ends, p, desc))
    return [um.gradnorm_score(n) for n in norms]


def split_scores(scores: list[dict[str, float]], splits: list[str], attack: str) -> tuple[list[float], list[float]]:
    """One attack's scores of the forget texts (members) and of the holdout texts (non-members)."""
    return ([s[attack] for s, split in zip(scores, splits) if split == "forget"],
            [s[attack] for s, split in zip(scores, splits) if split == "holdout"])


