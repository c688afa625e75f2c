"""Audit ``keywords``: emphasize the prompt's key tokens and see the forgotten answer return.

From "Understanding the Dilemma of Unlearning for Large Language Models"
(unPact): the contribution of prompt token x_i to answer y is the leave-one-out
change of the answer's mean log-prob, C(x_i, y) = LP(x, y) - LP(x without x_i, y)
(:mod:`lab.core.attribution`, batched and checked against captum's FeatureAblation).
The paper finds that unlearning works largely by disrupting the model's focus
on a few keywords, and that emphasizing those keywords in the prompt brings
much of the knowledge back with no weight change.

Steps, on the target facts (forget facts the base knows and the unlearned
model misses on the plain question):

1. contributions of every prompt token in both models (one batched call each);
2. KeyTokens: the base model's ``top_k`` highest-contribution tokens inside
   the question's words (template tokens such as "Answer:" excluded: they
   cannot be emphasized); the words they belong to, adjacent words merged,
   are the keywords;
3. each named emphasis transform (:func:`audits.reasoning.prompts.emphasize`:
   repeat, upper, quote, focus) rewrites the question; both models answer it.

Metrics:

- ``<transform>_recovery_rate``: share of target facts the unlearned model
  answers right under that transform; ``recovery_rate``: under at least one
  transform (best-of);
- ``<transform>_logprob_gain``: mean over targets of the unlearned model's
  answer log-prob under the transform minus on the plain question;
  ``logprob_gain``: the largest of these means (the best transform overall,
  not a per-fact maximum, which noise alone would push above zero);
- ``attribution_shift``: the share of the base model's focus on the keywords
  that the unlearned model lost.  With Q the question's tokens, K the
  KeyTokens and C+ = max(C, 0), a model's keyword focus is
  focus = sum_{i in K} C+(x_i, y) / sum_{i in Q} C+(x_i, y), the part of the
  question's positive contribution mass that sits on the keywords (a share,
  because a confident base model has tiny absolute contributions: its answer
  survives any single deletion).  Per fact, shift = (focus_base -
  focus_unlearned) / focus_base; the metric is its mean over the targets with
  focus_base > 0.  1: all of the focus lost, 0: none, below 0: more focus.
  ``keyword_focus_base`` and ``keyword_focus_unlearned`` are the mean focuses.
  ``attribution_shift_retain`` is the same on a sample of the retain facts the
  base knows (``retain_facts``, evenly spread; the control: a shift specific to forgetting is larger on the targets).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from audits.base import Answered, Audit, AuditContext, Rewritten, answer_and_logprobs, fmt, item_for, recovery
from audits.keywords.emphasis import TRANSFORMS, emphasize, keyword_phrases
from lab.core.attribution import (
    Contributions,
    PromptAttribution,
    attribution_figure,
    captum_leave_one_out,
    leave_one_out,
)
from lab.core.errors import LabError
from lab.core.facts import Fact
from lab.core.models import ModelPair
from lab.core.options import AuditOptions, option
from lab.core.records import AuditResult, extra_dict
from lab.core.unlearning_metrics import mean

CAPTUM_TOLERANCE = 1e-3  # nats; float32 batching differences are far below this, bf16 ones may not be
_WORD_CHAR = re.compile(r"\w")


Transform = Literal["repeat", "upper", "quote", "focus"]


@dataclass
class KeywordsOptions(AuditOptions):
    """Which tokens count as keywords and how they are emphasized."""

    top_k: int = option(3, "KeyTokens per fact: the base model's highest-contribution question tokens", low=1,
                        kind="size", space_cap=10)
    transforms: tuple[Transform, ...] = option(TRANSFORMS, "emphasis transforms, each reported on its own")
    repeats: int = option(2, "times a keyword is written by the repeat transform", low=2, kind="size", space_cap=5)
    captum_check: bool = option(True, "recompute one fact with captum's FeatureAblation and compare")
    retain_control: bool = option(True, "also measure the attribution shift on retain facts (no emphasis there)")
    retain_facts: int = option(120, "known retain facts in that control, evenly spread (0: all)", low=0,
                               kind="size", space_cap=120)


@dataclass
class KeyFact:
    """One target fact's contributions in both models and its keywords."""

    fact: Fact
    prompt: str
    base: Contributions
    unlearned: Contributions
    question: list[int]  # feature indices of the question's word tokens
    key: list[int]  # feature indices of the KeyTokens (a subset of ``question``)
    phrases: list[str]  # the keywords as they appear in the question

    def focus(self, contributions: Contributions) -> float:
        """Share of the question's positive contribution mass on the KeyTokens (NaN without any)."""
        positive = np.clip(contributions.values, 0, None)
        total = float(positive[self.question].sum())
        return float(positive[self.key].sum()) / total if total > 0 else float("nan")

    @property
    def shift(self) -> float:
        base = self.focus(self.base)
        return (base - self.focus(self.unlearned)) / base if base > 0 else float("nan")

    def view(self) -> PromptAttribution:
        """The attribution view of this fact (keywords marked), as the UI and report draw it."""
        return PromptAttribution(
            prompt=self.prompt, answer=self.fact.answer, labels=self.base.tokens.labels,
            scores={"feature_ablation": {"base": self.base.values.tolist(),
                                         "unlearned": self.unlearned.values.tolist()}},
            logprob={"base": self.base.logprob, "unlearned": self.unlearned.logprob}, marked=list(self.key))


@dataclass
class TransformRun:
    """Both models' answers to the emphasized questions of one transform."""

    transform: str
    answered: list[Answered]
    gains: list[float]  # per target: unlearned answer log-prob under the transform minus plain


def question_features(contributions: Contributions, prompt: str, question: str) -> list[int]:
    """Features inside the question's words (not template tokens such as "Answer:", not punctuation)."""
    start = prompt.find(question)
    lo, hi = (start, start + len(question)) if start >= 0 else (0, len(prompt))
    inside = []
    for i, (s, e) in enumerate(contributions.tokens.spans):
        piece = prompt[s:e]
        core_start = s + len(piece) - len(piece.lstrip())  # byte-level BPE tokens carry their leading space
        if lo <= core_start and e <= hi and _WORD_CHAR.search(piece):
            inside.append(i)
    return inside


def key_tokens(contributions: Contributions, candidates: list[int], top_k: int) -> list[int]:
    """KeyTokens: the ``top_k`` candidates with the highest contribution, in prompt order."""
    ranked = sorted(candidates, key=lambda i: -contributions.values[i])
    return sorted(ranked[:top_k])


def question_keywords(contributions: Contributions, prompt: str, question: str,
                      top_k: int) -> tuple[list[int], list[int], list[str]]:
    """The question's word tokens, its KeyTokens, and the keywords they cover (whole words).

    Shared by the audit and the web lab's emphasis buttons, so both emphasize the same words.
    """
    candidates = question_features(contributions, prompt, question)
    key = key_tokens(contributions, candidates, top_k)
    offset = max(prompt.find(question), 0)
    spans = [(contributions.tokens.spans[i][0] - offset, contributions.tokens.spans[i][1] - offset) for i in key]
    return candidates, key, keyword_phrases(question, spans)


def metrics(keyed: list[KeyFact], runs: dict[str, TransformRun], transforms: tuple[str, ...],
            control: list[KeyFact] = ()) -> dict[str, float]:
    """Per-transform and best-of recovery, log-prob gain and attribution shifts (module docstring)."""
    targets = [k.fact for k in keyed]
    out: dict[str, float] = {}
    recovered: set[str] = set()
    for transform in transforms:
        run = runs.get(transform)
        hits = {k.fact.id for k, a in zip(keyed, run.answered) if a.score_unlearned.hit} if run else set()
        recovered |= hits
        out.update(recovery(f"{transform}_recovery_rate", targets, hits))
        out[f"{transform}_logprob_gain"] = mean(run.gains) if run else float("nan")
    out.update(recovery("recovery_rate", targets, recovered))
    gains = [out[f"{t}_logprob_gain"] for t in transforms if not math.isnan(out[f"{t}_logprob_gain"])]
    out["logprob_gain"] = max(gains) if gains else float("nan")
    out["attribution_shift"] = mean([k.shift for k in keyed])
    out["keyword_focus_base"] = mean([k.focus(k.base) for k in keyed])
    out["keyword_focus_unlearned"] = mean([k.focus(k.unlearned) for k in keyed])
    out["attribution_shift_retain"] = mean([k.shift for k in control])
    out["targets"] = float(len(targets))
    return out


class KeywordsAudit(Audit[KeywordsOptions]):
    default_on = True
    suite = True
    probe_group = ("probe-emphasis", "Keywords")
    name = "keywords"
    title = "Keyword emphasis"
    paper = "Understanding the Dilemma of Unlearning for Large Language Models (unPact)"
    summary = ("share of the forgotten facts that come back when the prompt's key tokens are emphasized "
               "(best of the transforms)")
    Options = KeywordsOptions
    needs = frozenset({"generate", "logprobs", "exact_tokens"})  # attributions score prompts with tokens taken out
    headline_keys = ("recovery_rate", "logprob_gain", "attribution_shift")
    rewrites = TRANSFORMS

    def run(self, ctx: AuditContext[KeywordsOptions]) -> AuditResult:
        opts = ctx.options
        targets = ctx.baseline.targets()
        if not targets:
            return AuditResult(metrics=metrics([], {}, opts.transforms),
                               notes=["no target facts (forget facts the base knows and the unlearned model "
                                      "misses): nothing to emphasize, recovery is undefined"])
        keyed = self.keywords(ctx, targets, opts.top_k)
        runs = {t: self.attack(ctx, keyed, t, opts.repeats) for t in opts.transforms}
        control_facts = ctx.baseline.retain_sample(opts.retain_facts) if opts.retain_control else []
        control = self.keywords(ctx, control_facts, opts.top_k)
        values = metrics(keyed, runs, opts.transforms, control)
        artifacts: dict[str, Any] = {
            "transforms": {t: {"recovery_rate": values[f"{t}_recovery_rate"],
                               "logprob_gain": values[f"{t}_logprob_gain"]} for t in opts.transforms},
            "attributions": [{"fact_id": k.fact.id, "keywords": k.phrases, "shift": k.shift,
                              "focus_base": k.focus(k.base), "focus_unlearned": k.focus(k.unlearned),
                              "view": k.view().to_dict()} for k in keyed],
            "retain_focus": [{"fact_id": k.fact.id, "shift": k.shift, "focus_base": k.focus(k.base),
                              "focus_unlearned": k.focus(k.unlearned)} for k in control],
        }
        notes = [f"{len(targets)} target facts; keywords from the base model's top {opts.top_k} question tokens"]
        if opts.captum_check:
            artifacts["captum_check"] = self.captum_check(ctx, keyed[0])
            check = artifacts["captum_check"]
            notes.append(f"batched leave-one-out vs captum FeatureAblation on {check['fact_id']}: max |difference| "
                         f"{check['max_abs_diff']:.2e} nats" + ("" if check["agrees"] else
                         f" (above {CAPTUM_TOLERANCE}: low-precision weights or a backend that pads differently)"))
        return AuditResult(metrics=values, artifacts=artifacts, notes=notes)

    def rewrite(self, pair: ModelPair, fact: Fact, related: list[Fact], transform: str) -> list[Rewritten]:
        """The question with its keywords emphasized, keywords found as the audit finds them.

        KeyTokens: the base model's highest leave-one-out contributions to the gold answer among the
        question's own tokens (the default ``top_k``), widened to whole words.
        """
        if not fact.question.strip() or not fact.answer.strip():
            raise LabError("keyword emphasis needs a question and its gold answer: the keywords are the question "
                           "tokens that carry the answer in the base model")
        prompt = pair.base.prompt(fact.question)
        contributions = leave_one_out(pair.base, [prompt], [fact.answer])[0]
        _, _, phrases = question_keywords(contributions, prompt, fact.question, KeywordsOptions.top_k)
        return [Rewritten(emphasize(fact.question, phrases, transform, KeywordsOptions.repeats), raw=False)]

    @staticmethod
    def keywords(ctx: AuditContext[KeywordsOptions], facts: list[Fact], top_k: int) -> list[KeyFact]:
        """Contributions in both models (one batched call each), each fact's KeyTokens and keywords."""
        if not facts:
            return []
        prompts = [ctx.pair.base.prompt(f.question) for f in facts]
        answers = [f.answer for f in facts]
        loo_b = leave_one_out(ctx.pair.base, prompts, answers, desc="leave-one-out (base)")
        loo_u = leave_one_out(ctx.pair.unlearned, prompts, answers, desc="leave-one-out (unlearned)")
        keyed = []
        for fact, prompt, b, u in zip(facts, prompts, loo_b, loo_u):
            keyed.append(KeyFact(fact, prompt, b, u, *question_keywords(b, prompt, fact.question, top_k)))
        return keyed

    def attack(self, ctx: AuditContext[KeywordsOptions], keyed: list[KeyFact], transform: str, repeats: int) -> TransformRun:
        """Both models answer every target's question under one transform; the items are recorded."""
        questions = [emphasize(k.fact.question, k.phrases, transform, repeats) for k in keyed]
        prompts = [ctx.pair.base.prompt(q) for q in questions]
        answered, lp_b, lp_u = answer_and_logprobs(ctx.pair, prompts, [k.fact.answer for k in keyed],
                                                   ctx.max_new_tokens, f"keywords {transform}")
        plain = [ctx.baseline.logprob_unlearned[k.fact.id] for k in keyed]
        gains = [u - p for u, p in zip(lp_u, plain)]
        ctx.record([
            item_for(self.name, k.fact, prompt, a, category=transform, recovered=a.score_unlearned.hit,
                     logprobs=(b, u), extra={"keywords": k.phrases, "plain_logprob_unlearned": p, "logprob_gain": g})
            for k, prompt, a, b, u, p, g in zip(keyed, prompts, answered, lp_b, lp_u, plain, gains)
        ])
        return TransformRun(transform, answered, gains)

    @staticmethod
    def captum_check(ctx: AuditContext[KeywordsOptions], key: KeyFact) -> dict[str, Any]:
        """One fact's base contributions recomputed by captum (one forward per token) and compared."""
        reference = captum_leave_one_out(ctx.pair.base, key.prompt, key.fact.answer)
        diff = float(np.abs(reference - key.base.values).max())
        return {"fact_id": key.fact.id, "max_abs_diff": diff, "agrees": diff <= CAPTUM_TOLERANCE}

    def figures(self, artifacts: dict[str, Any], items: pd.DataFrame) -> dict[str, go.Figure]:
        figs = {}
        table = artifacts.get("transforms") or {}
        if table:
            names = list(table)
            fig = go.Figure(go.Bar(x=names, y=[table[t]["recovery_rate"] for t in names], name="recovery rate"))
            fig.update_layout(title="Recovery of forgotten facts by emphasis transform",
                              yaxis=dict(title="recovery rate", range=[0, 1]), xaxis_title="transform")
            figs["transforms"] = fig
        if len(items):
            gains = [extra_dict(e).get("logprob_gain") for e in items["extra"]]
            fig = go.Figure([go.Box(y=[g for g, c in zip(gains, items["category"]) if c == name], name=name,
                                    boxpoints="all") for name in items["category"].unique()])
            fig.add_hline(y=0, line_dash="dot")
            fig.update_layout(title="Unlearned model: answer log-prob gain under emphasis (vs plain question)",
                              yaxis_title="mean token log-prob gain", xaxis_title="transform")
            figs["logprob_gain"] = fig
        rows = artifacts.get("attributions") or []
        if rows:
            fig = go.Figure()
            for name, group in (("target facts", rows), ("retain facts", artifacts.get("retain_focus") or [])):
                focus = pd.DataFrame(group, columns=["fact_id", "focus_base", "focus_unlearned"])
                fig.add_scatter(x=focus["focus_base"], y=focus["focus_unlearned"], mode="markers",
                                text=focus["fact_id"], name=name)
            fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot"), name="no shift")
            fig.update_layout(title="Keyword focus (share of the question's positive contribution on the keywords)",
                              xaxis=dict(title="base", range=[0, 1.02]), yaxis=dict(title="unlearned", range=[0, 1.02]))
            figs["keyword_focus"] = fig
            first = rows[0]
            figs["attribution"] = attribution_figure(
                PromptAttribution.from_dict(first["view"]),
                title=f"{first['fact_id']}: leave-one-out contributions (* = keyword tokens)")
        return figs

    def verdict(self, metrics: dict[str, float | None]) -> str:
        return (f"recovery_rate = {fmt(metrics.get('recovery_rate'), '{:.0%}')} of the forgotten facts came back "
                f"when their keywords were emphasized (best transform's mean answer log-prob gain "
                f"{fmt(metrics.get('logprob_gain'), '{:+.2f}')}); the unlearned model lost "
                f"{fmt(metrics.get('attribution_shift'), '{:.0%}')} of the base model's focus on the keywords")
