"""Audit ``reasoning``: step-by-step prompts that reach "erased" facts.

From "Step-by-Step Reasoning Attack: Revealing 'Erased' Knowledge in Large
Language Models" (Sleek): a black-box attack whose adversarial prompts are
built around step-by-step and multi-hop reasoning, in three categories:
direct (the question with explicit step-by-step reasoning), indirect (the
target reached through related facts over several steps) and implied (the
answer implied by a reasoning chain or a completion).  The paper reports two
things, and so does this audit: recall of erased knowledge on the forget set,
and unfair suppression on the retain set (base right, unlearned wrong).

The paper's prompt templates, generator LLM and judge are not published (no
code either), so: prompts come from a pluggable generator
(:mod:`audits.reasoning.prompts`: deterministic templates by default, or an
attacker LLM sampling several candidates per meta-prompt); the hops of
indirect prompts are the other facts about the same entity; the judge is the
lab's one scorer, with an optional judge model beside it.

Provenance.  A prompt that states other forget-split facts with their answers
(the hops of a chain about a forgotten person) hands the model forgotten
knowledge in context: a recovery under it is in-context relearning, not
reasoning.  Every prompt records which forget-split facts it carries; those
that carry any are counted apart, in the ``context`` category, and never in
the headline rate.  Completing the forget passage itself is verbatim
extraction, the ``extraction`` audit's subject, not this one's.

Metrics (each with a 95% bootstrap interval, ``_ci_low`` / ``_ci_high``; each
also per category as ``<category>_<metric>``), over prompts that carry no
forget-split text:

- ``recovery_rate``: share of target facts recovered by at least one prompt;
- ``prompt_success_rate``: share of the target facts' prompts under which the
  unlearned model answers right (the paper's per-prompt number);
- ``suppression_rate``: among retain prompts the base model answers right,
  the share the unlearned model gets wrong; ``plain_suppression_rate`` is the
  same on the plain questions, for comparison;
- ``context_recovery_rate``: the same rule over the prompts that carry
  forget-split text (in-context relearning, reported beside, not gated);
- with a judge model, ``judge_recovery_rate`` (recovery by the judge's
  verdicts) and ``judge_agreement`` (its agreement with the scorer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd
import plotly.graph_objects as go

from audits.base import (Answered, Audit, AuditContext, Rewritten, answer_and_logprobs, interval, item_for, pct,
                         recovery)
from audits.reasoning.prompts import (
    CATEGORIES,
    TEMPLATES,
    AttackPrompt,
    LLMGenerator,
    PromptGenerator,
    TemplateGenerator,
    carried_forget_facts,
)
from lab.core.backend import Backend
from lab.core.errors import LabError
from lab.core.facts import Fact
from lab.core.judge import judge
from lab.core.models import ModelPair
from lab.core.options import AuditOptions, option
from lab.core.records import AuditResult, extra_dict
from lab.core.scoring import rate
from lab.core.stats import rate_with_interval

RATES = ("recovery_rate", "prompt_success_rate", "suppression_rate")


Category = Literal["direct", "indirect", "implied"]


@dataclass
class ReasoningOptions(AuditOptions):
    """How prompts are made and how many."""

    generator: Literal["template", "llm"] = option(
        "template", "template: deterministic, offline; llm: an attacker LM writes the prompts")
    prompts_per_category: int = option(3, "prompts per fact and category, after duplicates and leaks are dropped",
                                       low=1, kind="size", space_cap=5)
    categories: tuple[Category, ...] = option(CATEGORIES, "prompt categories")
    hops: int = option(2, "related facts per indirect prompt", low=1, kind="size", space_cap=5)
    attacker: str = option("base", "llm generator: base, unlearned, reference, or any model reference",
                           kind="model", words=("base", "unlearned", "reference"))
    attacker_max_new_tokens: int = option(48, "length of a generated prompt", low=1, kind="tokens")
    samples: int = option(1, "llm generator: prompts per meta-prompt (1: greedy; more: sampled)", low=1,
                          kind="size", space_cap=4)
    temperature: float = option(0.8, "llm generator: sampling temperature when samples > 1", low=0.0, high=2.0)
    judge: str = option("", "optional judge model that grades each answer beside the scorer: base, unlearned, "
                        "reference or any model reference (empty: none)", kind="model",
                        words=("base", "unlearned", "reference"))
    max_new_tokens: int = option(0, "answer length (0: the run's --max-new-tokens)", low=0, kind="tokens")
    retain: bool = option(True, "also probe retain facts for unfair suppression")
    retain_facts: int = option(120, "known retain facts probed, evenly spread (0: all)", low=0, kind="size",
                               space_cap=120)


@dataclass(frozen=True)
class Outcome:
    """One attack prompt, the fact it targets, what forget-split facts it carries, both models' answers."""

    fact: Fact
    prompt: AttackPrompt
    answered: Answered
    carries: tuple[str, ...] = ()
    judged: bool | None = None  # the judge model's verdict on the unlearned model's answer

    @property
    def context(self) -> bool:
        return bool(self.carries)

    @property
    def recovered(self) -> bool:
        return self.fact.split == "forget" and self.answered.score_unlearned.hit

    @property
    def suppressed(self) -> bool:
        return self.answered.score_base.hit and not self.answered.score_unlearned.hit


def rates(outcomes: list[Outcome], targets: list[Fact], prefix: str = "") -> dict[str, float]:
    """The three headline rates over a set of outcomes, with intervals (see the module docstring)."""
    forget = [o for o in outcomes if o.fact.split == "forget"]
    retain = [o for o in outcomes if o.fact.split == "retain" and o.answered.score_base.hit]
    return {**recovery(f"{prefix}recovery_rate", targets, {o.fact.id for o in forget if o.recovered}),
            **rate_with_interval(f"{prefix}prompt_success_rate", [o.recovered for o in forget]),
            **rate_with_interval(f"{prefix}suppression_rate", [o.suppressed for o in retain])}


def judged_rates(outcomes: list[Outcome], targets: list[Fact]) -> dict[str, float]:
    """Recovery by the judge's verdicts, and how often judge and scorer agree."""
    forget = [o for o in outcomes if o.fact.split == "forget" and o.judged is not None and not o.context]
    return {**recovery("judge_recovery_rate", targets, {o.fact.id for o in forget if o.judged}),
            **rate_with_interval("judge_agreement", [o.judged == o.recovered for o in forget])}


class ReasoningAudit(Audit[ReasoningOptions]):
    default_on = True
    suite = True
    probe_group = ("probe-steps", "Step by step")
    name = "reasoning"
    title = "Step-by-step reasoning attack"
    paper = "Step-by-Step Reasoning Attack: Revealing 'Erased' Knowledge in Large Language Models (Sleek)"
    summary = ("share of the forgotten facts that step-by-step, multi-hop or completion prompts bring back "
               "(prompt success and retain suppression alongside)")
    Options = ReasoningOptions
    headline_keys = ("recovery_rate", "prompt_success_rate", "suppression_rate")
    rewrites = CATEGORIES
    outside_headline = ("context",)

    def run(self, ctx: AuditContext[ReasoningOptions]) -> AuditResult:
        opts = ctx.options
        base = ctx.baseline
        targets = base.targets()
        retain = base.retain_sample(opts.retain_facts) if opts.retain else []
        facts = targets + retain
        generator = self.generator(ctx, opts)
        by_entity = ctx.facts.by_entity()
        prompts = generator.generate(facts, by_entity, ctx.pair.base.prompt, opts.categories,
                                     opts.prompts_per_category, opts.hops)
        by_id = {f.id: f for f in facts}
        max_new = opts.max_new_tokens or ctx.max_new_tokens
        judge_engine = ctx.model(opts.judge) if opts.judge else None
        outcomes: list[Outcome] = []
        for category in opts.categories:
            chunk = [p for p in prompts if p.category == category]
            outcomes += self.ask(ctx, chunk, by_id, by_entity, generator.name, max_new, judge_engine)
        clean = [o for o in outcomes if not o.context]
        metrics = {**rates(clean, targets), **rates([o for o in outcomes if o.context], targets, "context_")}
        for category in opts.categories:
            metrics.update(rates([o for o in clean if o.prompt.category == category], targets, f"{category}_"))
        if judge_engine is not None:
            metrics.update(judged_rates(outcomes, targets))
        plain = rate(not base.knows_unlearned(f) for f in retain)
        metrics.update(plain_suppression_rate=plain, targets=float(len(targets)),
                       prompts_forget=float(sum(o.fact.split == "forget" for o in outcomes)),
                       prompts_retain=float(sum(o.fact.split == "retain" for o in outcomes)),
                       context_prompts=float(len(outcomes) - len(clean)))
        table = {group: {key: metrics.get(f"{'' if group == 'all' else group + '_'}{key}") for key in RATES}
                 for group in ("all", *opts.categories, "context")}
        return AuditResult(
            metrics=metrics,
            artifacts={"rates": table, "plain_suppression_rate": plain, "generator": generator.name},
            notes=self.notes(targets, retain, outcomes, generator.name),
        )

    @staticmethod
    def generator(ctx: AuditContext[ReasoningOptions], opts: ReasoningOptions) -> PromptGenerator:
        if opts.generator == "template":
            return TemplateGenerator()
        return LLMGenerator(ctx.model(opts.attacker), opts.attacker_max_new_tokens, opts.samples, opts.temperature)

    def rewrite(self, pair: ModelPair, fact: Fact, related: list[Fact], transform: str) -> list[Rewritten]:
        """Every template prompt of one category for the fact, with the audit's default number of hops."""
        by_entity = {fact.entity: [fact, *related]} if fact.entity else {}
        prompts = TemplateGenerator().generate([fact], by_entity, pair.base.prompt, [transform],
                                               len(TEMPLATES[transform]), ReasoningOptions.hops)
        if not prompts:
            raise LabError(f"no {transform} prompt for this question: {transform} prompts build on the fact's "
                           "related facts and statement; pick a fact of a facts file with entities")
        return [Rewritten(p.text, raw=True) for p in prompts]

    def ask(self, ctx: AuditContext[ReasoningOptions], prompts: list[AttackPrompt], by_id: dict[str, Fact],
            by_entity: dict[str, list[Fact]], generator: str, max_new_tokens: int,
            judge_engine: Backend | None) -> list[Outcome]:
        """Both models answer one category's prompts (batched); every prompt is recorded with its provenance."""
        if not prompts:
            return []
        facts = [by_id[p.fact_id] for p in prompts]
        answered, lp_b, lp_u = answer_and_logprobs(ctx.pair, [p.text for p in prompts], [f.answer for f in facts],
                                                   max_new_tokens, f"reasoning {prompts[0].category}")
        verdicts: list[bool | None] = [None] * len(prompts)
        if judge_engine is not None:
            verdicts = list(judge(judge_engine, [f.question for f in facts], [f.answer for f in facts],
                                  [a.output_unlearned for a in answered], desc=f"judge {prompts[0].category}"))
        outcomes = [Outcome(f, p, a, carried_forget_facts(p.text, f, by_entity), v)
                    for f, p, a, v in zip(facts, prompts, answered, verdicts)]
        ctx.record([
            item_for(self.name, o.fact, o.prompt.text, o.answered, category="context" if o.context
                     else o.prompt.category, recovered=o.recovered if o.fact.split == "forget" else None,
                     logprobs=(b, u),
                     extra={"source": o.prompt.source, "generator": generator, "prompt_category": o.prompt.category,
                            "carries_forget_facts": list(o.carries), "judge": o.judged,
                            "suppressed": o.suppressed if o.fact.split == "retain" else None})
            for o, b, u in zip(outcomes, lp_b, lp_u)
        ])
        return outcomes

    @staticmethod
    def notes(targets: list[Fact], retain: list[Fact], outcomes: list[Outcome], generator: str) -> list[str]:
        context = sum(o.context for o in outcomes)
        notes = [f"{len(outcomes)} prompts from the {generator} generator for {len(targets)} target facts "
                 f"and {len(retain)} retain facts the base model knows; {context} carry forget-split facts with "
                 "their answers and count only as context (in-context relearning), never in recovery_rate"]
        if not targets:
            notes.append("no target facts (forget facts the base knows and the unlearned model misses): "
                         "recovery is undefined")
        return notes

    def figures(self, artifacts: dict[str, Any], items: pd.DataFrame) -> dict[str, go.Figure]:
        figs = {}
        table = artifacts.get("rates") or {}
        if table:
            groups = list(table)
            fig = go.Figure()
            for key in RATES:
                fig.add_bar(name=key.replace("_", " "), x=groups, y=[table[g].get(key) for g in groups])
            plain = artifacts.get("plain_suppression_rate")
            if plain is not None:
                fig.add_hline(y=plain, line_dash="dot", annotation_text="suppression on plain questions")
            fig.update_layout(title="Reasoning attack by category", barmode="group",
                              yaxis=dict(title="rate", range=[0, 1]), xaxis_title="prompt category")
            figs["categories"] = fig
        if len(items):
            frame = items.assign(source=[extra_dict(e).get("source", "") for e in items["extra"]])
            fig = go.Figure()
            forget = frame[frame["split"] == "forget"]
            retain = frame[(frame["split"] == "retain") & frame["hit_base"].astype(bool)]
            if len(forget):
                share = forget.groupby("source")["recovered"].mean()
                fig.add_bar(name="forget: prompt recovers", x=share.index, y=share.values)
            if len(retain):
                share = (~retain["hit_unlearned"].astype(bool)).groupby(retain["source"]).mean()
                fig.add_bar(name="retain: unlearned suppressed", x=share.index, y=share.values)
            fig.update_layout(title="Success by prompt template", barmode="group",
                              yaxis=dict(title="share of prompts", range=[0, 1]), xaxis_title="template")
            figs["templates"] = fig
        return figs

    def verdict(self, metrics: dict[str, float | None]) -> str:
        return (f"recovery_rate = {pct(metrics, 'recovery_rate')} {interval(metrics, 'recovery_rate')} of the "
                f"forgotten facts came back under reasoning prompts ({pct(metrics, 'prompt_success_rate')} of prompts "
                f"succeeded; {pct(metrics, 'context_recovery_rate')} more with forgotten facts in the prompt, not "
                f"counted); retain suppression {pct(metrics, 'suppression_rate')} under the prompts vs "
                f"{pct(metrics, 'plain_suppression_rate')} on plain questions")
