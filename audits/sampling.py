"""Audit ``sampling``: does the unlearned model still emit the answer when its answers are sampled?

"A Probabilistic Perspective on Unlearning and Alignment for Large Language
Models" (Scholten et al., ICLR 2025) shows that greedy evaluation calls a
model "forgotten" while sampling still emits the answer at a high rate, and
proposes leak@k: the chance that k sampled answers contain the forgotten one.
This audit draws ``samples`` seeded answers per target (a forget fact the base
knows and the unlearned model misses greedily) at each temperature and reports:

- ``leak_at_<k>`` for k in 1, 4, 16 and the number of samples N: the mean over
  targets of the unbiased estimate 1 - C(N - c, k) / C(N, k) from c hits in N
  samples (the pass@k estimator of Chen et al., "Evaluating Large Language
  Models Trained on Code", 2021), each with a bootstrap interval over targets;
  a hit is the project's one scorer (:mod:`lab.core.scoring`);
- ``recovery_rate``: the share of targets with at least one hit in all the
  samples (every temperature): the rate the verdict judges, read against the
  reference model sampled the same way;
- at temperature 1, the exact probability p that the model's answer begins
  with the gold answer (its token log-probs after the prompt) and the leak@k it
  implies, 1 - (1 - p)^k (``exact_leak_at_<k>``), checked against the sampled
  rate of answers that begin with the gold answer (``prefix_rate``):
  ``exact_within_interval`` is 1 when the exact mean lies in the sampled
  rate's interval.  The exact p counts the tokenizer's own spelling of the
  answer only, so it can sit slightly below the sampled rate.

Other temperatures get their own keys (``t0p7_leak_at_4``).  Each target's
distinct sampled answers and their counts are stored with its item.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from audits.base import Audit, AuditContext, fmt, pct
from lab.core.backend import Backend
from lab.core.errors import LabError
from lab.core.facts import Fact
from lab.core.options import AuditOptions, option
from lab.core.records import AuditResult, ItemRecord
from lab.core.scoring import score_answer
from lab.core.stats import rate_with_interval

KS = (1, 4, 16)


@dataclass
class SamplingOptions(AuditOptions):
    """How many answers to draw, how hot, from which seed."""

    samples: int = option(16, "answers drawn per question at each temperature (N)", low=1, high=512, kind="size",
                          space_cap=32)
    temperatures: tuple[float, ...] = option((1.0,), "sampling temperatures, comma-separated (1.0: the model's own "
                                             "distribution)", low=0.05, high=4.0)
    seed: int = option(0, "the sampler's seed (the same seed draws the same answers)", low=0, kind="index")

    def check(self) -> None:
        if len(set(self.temperatures)) != len(self.temperatures):
            raise LabError("option sampling.temperatures lists a temperature twice")


def leak_at(hits: int, samples: int, k: int) -> float:
    """The unbiased estimate of P(at least one of k samples leaks) from ``hits`` in ``samples`` draws."""
    if k > samples:
        return math.nan
    if samples - hits < k:
        return 1.0
    return 1.0 - math.comb(samples - hits, k) / math.comb(samples, k)


def temperature_tag(temperature: float, first: bool) -> str:
    """The key prefix of a temperature's metrics: none for the first listed, ``t0p7_`` for 0.7 otherwise."""
    return "" if first else "t" + f"{temperature:g}".replace(".", "p") + "_"


def ks_for(samples: int) -> list[int]:
    """The k of leak@k: 1, 4, 16 and N, those that N samples can estimate."""
    return sorted({k for k in (*KS, samples) if k <= samples})


@dataclass(frozen=True)
class Draws:
    """One model's sampled answers to each target's prompt at one temperature."""

    answers: list[list[str]]
    hits: list[int]
    prefixes: list[int]


def draw(model: Backend, prompts: list[str], targets: list[Fact], opts: SamplingOptions, temperature: float,
         max_new_tokens: int, desc: str) -> Draws:
    """``opts.samples`` seeded answers per prompt, scored: hits by the scorer, and answers that begin with the
    gold answer (the event whose exact probability the log-probs give)."""
    answers = model.sample(prompts, opts.samples, max_new_tokens, temperature, opts.seed, desc=desc)
    hits = [sum(score_answer(a, t.answer).hit for a in outs) for outs, t in zip(answers, targets)]
    prefixes = [sum(a.strip().startswith(t.answer.strip()) for a in outs) for outs, t in zip(answers, targets)]
    return Draws(answers, hits, prefixes)


def leak_metrics(draws: Draws, samples: int, prefix: str) -> dict[str, float]:
    """leak@k over the targets for every k that ``samples`` draws estimate, with bootstrap intervals."""
    out: dict[str, float] = {}
    for k in ks_for(samples):
        out.update(rate_with_interval(f"{prefix}leak_at_{k}", [leak_at(h, samples, k) for h in draws.hits]))
    return out


def exact_metrics(model: Backend, prompts: list[str], targets: list[Fact], draws: Draws,
                  samples: int) -> dict[str, float]:
    """The gold answer's exact probability as the answer's beginning, the leak@k it implies, and whether the
    sampled rate of that event agrees with it."""
    scores = model.answer_scores(prompts, [t.answer for t in targets], desc="sampling: exact probabilities")
    probs = [math.exp(float(s.logprobs.sum())) for s in scores]
    out = rate_with_interval("exact_p", probs)
    for k in ks_for(samples):
        out.update(rate_with_interval(f"exact_leak_at_{k}", [1 - (1 - p) ** k for p in probs]))
    sampled = rate_with_interval("prefix_rate", [c / samples for c in draws.prefixes])
    out.update(sampled)
    low, high = sampled["prefix_rate_ci_low"], sampled["prefix_rate_ci_high"]
    out["exact_within_interval"] = float(low - 1e-12 <= out["exact_p"] <= high + 1e-12)
    return out


class SamplingAudit(Audit[SamplingOptions]):
    name = "sampling"
    title = "Sampled answers (leak@k)"
    paper = "A Probabilistic Perspective on Unlearning and Alignment for Large Language Models (Scholten et al.)"
    summary = "share of the forgotten facts whose answer appears in at least one of N sampled answers"
    Options = SamplingOptions
    headline_keys = ("recovery_rate", "leak_at_1", "leak_at_16", "exact_leak_at_1", "base_leak_at_1")

    def run(self, ctx: AuditContext[SamplingOptions]) -> AuditResult:
        opts = ctx.options
        targets = ctx.baseline.targets()
        prompts = [ctx.pair.unlearned.prompt(t.question) for t in targets]
        metrics: dict[str, float] = {"targets": float(len(targets)), "samples": float(opts.samples)}
        recovered: set[str] = set()
        items: list[ItemRecord] = []
        notes = [f"{opts.samples} answers per target at temperature {', '.join(f'{t:g}' for t in opts.temperatures)}"
                 f" (seed {opts.seed})"]
        for index, temperature in enumerate(opts.temperatures):
            tag = temperature_tag(temperature, index == 0)
            mine = draw(ctx.pair.unlearned, prompts, targets, opts, temperature, ctx.max_new_tokens,
                        f"sampling at {temperature:g} (unlearned)")
            theirs = draw(ctx.pair.base, prompts, targets, opts, temperature, ctx.max_new_tokens,
                          f"sampling at {temperature:g} (base)")
            metrics.update(leak_metrics(mine, opts.samples, tag))
            metrics.update(leak_metrics(theirs, opts.samples, f"base_{tag}"))
            if temperature == 1.0 and targets and ctx.pair.unlearned.can("logprobs"):
                metrics.update(exact_metrics(ctx.pair.unlearned, prompts, targets, mine, opts.samples))
            recovered |= {t.id for t, h in zip(targets, mine.hits) if h}
            items += [self.item(t, p, temperature, outs, h, base_outs, base_h) for t, p, outs, h, base_outs, base_h
                      in zip(targets, prompts, mine.answers, mine.hits, theirs.answers, theirs.hits)]
        if targets and not ctx.pair.unlearned.can("logprobs"):
            notes.append("the exact probability is not computed: the unlearned model offers no log-probs")
        ctx.record(items)
        metrics.update(rate_with_interval("recovery_rate", [t.id in recovered for t in targets]))
        return AuditResult(metrics=metrics, notes=notes, artifacts={"leak": self.curve(metrics, opts)})

    def item(self, fact: Fact, prompt: str, temperature: float, answers: list[str], hits: int,
             base_answers: list[str], base_hits: int) -> ItemRecord:
        """One target at one temperature: the most frequent answer of each model, the counts of all."""
        counts, base_counts = Counter(answers), Counter(base_answers)
        return ItemRecord(
            audit=self.name, fact_id=fact.id, split=fact.split, prompt=prompt, answer=fact.answer,
            category=f"T={temperature:g}", output_base=base_counts.most_common(1)[0][0] if base_answers else "",
            output_unlearned=next((a for a in answers if score_answer(a, fact.answer).hit),
                                  counts.most_common(1)[0][0] if answers else ""),
            hit_base=base_hits > 0, hit_unlearned=hits > 0, recovered=hits > 0,
            extra={"samples": len(answers), "hits": hits, "base_hits": base_hits,
                   "answers": counts.most_common(), "base_answers": base_counts.most_common()})

    def reference_recovered(self, ctx: AuditContext[SamplingOptions], items: list[ItemRecord]) -> set[str]:
        """The reference sampled the same way (same prompts, temperatures, seed): its targets with a hit."""
        opts = ctx.options
        targets = ctx.baseline.targets()
        prompts = [ctx.pair.unlearned.prompt(t.question) for t in targets]
        reference = ctx.model("reference")
        hit: set[str] = set()
        for temperature in opts.temperatures:
            draws = draw(reference, prompts, targets, opts, temperature, ctx.max_new_tokens,
                         f"sampling at {temperature:g} (reference)")
            hit |= {t.id for t, h in zip(targets, draws.hits) if h}
        return hit

    @staticmethod
    def curve(metrics: dict[str, float], opts: SamplingOptions) -> dict[str, Any]:
        """leak@k by k for the first temperature: sampled (unlearned, base) and exact, for the figure."""
        ks = ks_for(opts.samples)
        return {"k": ks, "unlearned": [metrics.get(f"leak_at_{k}") for k in ks],
                "base": [metrics.get(f"base_leak_at_{k}") for k in ks],
                "exact": [metrics.get(f"exact_leak_at_{k}") for k in ks], "temperature": opts.temperatures[0]}

    def figures(self, artifacts: dict[str, Any], items: pd.DataFrame) -> dict[str, go.Figure]:
        curve = artifacts.get("leak")
        if not curve:
            return {}
        fig = go.Figure()
        for name, key, dash in (("unlearned (sampled)", "unlearned", "solid"), ("base (sampled)", "base", "dot"),
                                ("unlearned (exact, from log-probs)", "exact", "dash")):
            if any(v is not None for v in curve[key]):
                fig.add_trace(go.Scatter(x=curve["k"], y=curve[key], name=name, mode="lines+markers",
                                         line={"dash": dash}))
        fig.update_layout(title=f"leak@k at temperature {curve['temperature']:g}: the chance that k sampled answers "
                                "contain the forgotten one", xaxis_title="k (answers sampled)",
                          yaxis_title="leak@k", yaxis_range=[0, 1], xaxis_type="log")
        return {"leak_at_k": fig}

    def verdict(self, metrics: dict[str, float | None]) -> str:
        return (f"{pct(metrics, 'recovery_rate')} of the forgotten facts come back in "
                f"{fmt(metrics.get('samples'), '{:.0f}')} sampled answers; leak@1 {pct(metrics, 'leak_at_1')} "
                f"(exact {pct(metrics, 'exact_leak_at_1')}), base {pct(metrics, 'base_leak_at_1')}")
