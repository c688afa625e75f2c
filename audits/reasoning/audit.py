"""Audit ``reasoning``: step-by-step prompts that reach "erased" facts.

From "Step-by-Step Reasoning Attack: Revealing 'Erased' Knowledge in Large
Language Models" (Sleek): a black-box attack whose adversarial prompts are
built around step-by-step and multi-hop reasoning, in three categories:
direct (the question with explicit step-by-step reasoning), indirect (the
target reached through related facts over several steps) and implied (the
answer implied by a reasoning chain or a completion).  The paper reports two
things, and so does this audit: recall of erased knowledge on the forget set,
and unfair suppression on the retain set (base right, unlearned wrong).

Our choices where the paper is not public: prompts come from a pluggable
generator (:mod:`audits.reasoning.prompts`: deterministic templates by default, or
an attacker LLM with a meta-prompt per category); the hops of indirect
prompts are the other facts about the same entity; the judge is the lab's one
scorer.  Prompts run on the target facts (forget facts the base knows and the
unlearned model misses on the plain question) and on a sample of the retain
facts the base knows (``retain_facts``, evenly spread; 0: all).

Metrics (each also per category as ``<category>_<metric>``):

- ``recovery_rate``: share of target facts recovered by at least one prompt
  (a target without a prompt of a category counts as not recovered there);
- ``prompt_success_rate``: share of the target facts' prompts under which the
  unlearned model answers right (the paper's per-prompt number);
- ``suppression_rate``: among retain prompts the base model answers right,
  the share the unlearned model gets wrong; ``plain_suppression_rate`` is the
  same on the plain questions, for comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd
import plotly.graph_objects as go

from audits.base import Answered, Audit, AuditContext, Rewritten, answer_and_logprobs, item_for, pct, recovery_rate
from audits.reasoning.prompts import (
    CATEGORIES,
    TEMPLATES,
    AttackPrompt,
    LLMGenerator,
    PromptGenerator,
    TemplateGenerator,
)
from lab.core.errors import LabError
from lab.core.facts import Fact
from lab.core.models import ModelPair
from lab.core.options import AuditOptions, option
from lab.core.records import AuditResult, extra_dict
from lab.core.scoring import rate

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
    max_new_tokens: int = option(0, "answer length (0: the run's --max-new-tokens)", low=0, kind="tokens")
    retain: bool = option(True, "also probe retain facts for unfair suppression")
    retain_facts: int = option(120, "known retain facts probed, evenly spread (0: all)", low=0, kind="size",
                               space_cap=120)


@dataclass(frozen=True)
class Outcome:
    """One attack prompt, the fact it targets and both models' answers."""

    fact: Fact
    prompt: AttackPrompt
    answered: Answered

    @property
    def recovered(self) -> bool:
        return self.fact.split == "forget" and self.answered.score_unlearned.hit

    @property
    def suppressed(self) -> bool:
        return self.answered.score_base.hit and not self.answered.score_unlearned.hit


def rates(outcomes: list[Outcome], targets: list[Fact]) -> dict[str, float]:
    """The three headline rates over a set of outcomes (see the module docstring)."""
    forget = [o for o in outcomes if o.fact.split == "forget"]
    retain = [o for o in outcomes if o.fact.split == "retain" and o.answered.score_base.hit]
    return {
        "recovery_rate": recovery_rate(targets, {o.fact.id for o in forget if o.recovered}),
        "prompt_success_rate": rate(o.recovered for o in forget),
        "suppression_rate": rate(o.suppressed for o in retain),
    }


class ReasoningAudit(Audit):
    name = "reasoning"
    title = "Step-by-step reasoning attack"
    paper = "Step-by-Step Reasoning Attack: Revealing 'Erased' Knowledge in Large Language Models (Sleek)"
    summary = ("share of the forgotten facts that step-by-step, multi-hop or completion prompts bring back "
               "(prompt success and retain suppression alongside)")
    Options = ReasoningOptions
    headline_keys = ("recovery_rate", "prompt_success_rate", "suppression_rate")
    rewrites = CATEGORIES

    def run(self, ctx: AuditContext) -> AuditResult:
        opts: ReasoningOptions = ctx.options
        base = ctx.baseline
        targets = base.targets()
        retain = base.retain_sample(opts.retain_facts) if opts.retain else []
        facts = targets + retain
        generator = self.generator(ctx, opts)
        prompts = generator.generate(facts, ctx.facts.by_entity(), ctx.pair.base.prompt, opts.categories,
                                     opts.prompts_per_category, opts.hops)
        by_id = {f.id: f for f in facts}
        max_new = opts.max_new_tokens or ctx.max_new_tokens
        outcomes: list[Outcome] = []
        for category in opts.categories:
            chunk = [p for p in prompts if p.category == category]
            outcomes += self.ask(ctx, chunk, by_id, generator.name, max_new)
        table = {"all": rates(outcomes, targets)}
        for category in opts.categories:
            table[category] = rates([o for o in outcomes if o.prompt.category == category], targets)
        plain = rate(not base.knows_unlearned(f) for f in retain)
        metrics = {**table["all"], **{f"{c}_{key}": v for c in opts.categories for key, v in table[c].items()},
                   "plain_suppression_rate": plain, "targets": float(len(targets)),
                   "prompts_forget": float(sum(o.fact.split == "forget" for o in outcomes)),
                   "prompts_retain": float(sum(o.fact.split == "retain" for o in outcomes))}
        return AuditResult(
            metrics=metrics,
            artifacts={"rates": table, "plain_suppression_rate": plain, "generator": generator.name},
            notes=self.notes(targets, retain, prompts, generator.name),
        )

    @staticmethod
    def generator(ctx: AuditContext, opts: ReasoningOptions) -> PromptGenerator:
        if opts.generator == "template":
            return TemplateGenerator()
        return LLMGenerator(ctx.model(opts.attacker), opts.attacker_max_new_tokens)

    def rewrite(self, pair: ModelPair, fact: Fact, related: list[Fact], transform: str) -> list[Rewritten]:
        """Every template prompt of one category for the fact, with the audit's default number of hops."""
        by_entity = {fact.entity: [fact, *related]} if fact.entity else {}
        prompts = TemplateGenerator().generate([fact], by_entity, pair.base.prompt, [transform],
                                               len(TEMPLATES[transform]), ReasoningOptions.hops)
        if not prompts:
            raise LabError(f"no {transform} prompt for this question: {transform} prompts build on the fact's "
                           "related facts and statement; pick a fact of a facts file with entities")
        return [Rewritten(p.text, raw=True) for p in prompts]

    def ask(self, ctx: AuditContext, prompts: list[AttackPrompt], by_id: dict[str, Fact], generator: str,
            max_new_tokens: int) -> list[Outcome]:
        """Both models answer one category's prompts (batched); every prompt is recorded."""
        if not prompts:
            return []
        facts = [by_id[p.fact_id] for p in prompts]
        answered, lp_b, lp_u = answer_and_logprobs(ctx.pair, [p.text for p in prompts], [f.answer for f in facts],
                                                   max_new_tokens, f"reasoning {prompts[0].category}")
        outcomes = [Outcome(f, p, a) for f, p, a in zip(facts, prompts, answered)]
        ctx.record([
            item_for(self.name, o.fact, o.prompt.text, o.answered, category=o.prompt.category,
                     recovered=o.recovered if o.fact.split == "forget" else None, logprobs=(b, u),
                     extra={"source": o.prompt.source, "generator": generator,
                            "suppressed": o.suppressed if o.fact.split == "retain" else None})
            for o, b, u in zip(outcomes, lp_b, lp_u)
        ])
        return outcomes

    @staticmethod
    def notes(targets: list[Fact], retain: list[Fact], prompts: list[AttackPrompt], generator: str) -> list[str]:
        notes = [f"{len(prompts)} prompts from the {generator} generator for {len(targets)} target facts "
                 f"and {len(retain)} retain facts the base model knows"]
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
        return (f"recovery_rate = {pct(metrics, 'recovery_rate')} of the forgotten facts came back under reasoning "
                f"prompts ({pct(metrics, 'prompt_success_rate')} of prompts succeeded); retain suppression "
                f"{pct(metrics, 'suppression_rate')} under the prompts vs {pct(metrics, 'plain_suppression_rate')} "
                "on plain questions")
