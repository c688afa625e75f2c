"""Audit ``incontext``: do forgotten facts shown in the prompt bring the others back?

"UnUnlearning: Unlearning is not sufficient for content regulation in
advanced generative AI" (Shumailov et al. 2024) argues that knowledge removed
from the weights can be reintroduced in context, and that a model which can
reason over its context will then use it again: in-context relearning.  The
audit shows ``k`` forget-set questions with their answers as examples (earlier
turns under a chat template, else the prompt template repeated), then asks a
target (a forget fact the base knows and the unlearned model misses); the
examples never include the asked fact itself.

- ``source=same_entity``: other forgotten facts about the target's entity
  (the strongest cue: what else the model was made to forget about them);
- ``source=other_entities``: forgotten facts about other entities.

The control asks the same target after ``k`` retain-set examples: the same
prompt shape without forget-set content, so ``lift`` = ``recovery_rate`` -
``control_rate`` is what the forgotten examples themselves bring back.  A
target without enough examples is asked with those it has; one with none
counts as not recovered.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd
import plotly.graph_objects as go

from audits.base import Audit, AuditContext, answer_both, item_for, pct, recovery
from lab.core.facts import Fact
from lab.core.options import AuditOptions, option
from lab.core.records import AuditResult

CONDITIONS = ("forget_examples", "retain_examples")


@dataclass
class IncontextOptions(AuditOptions):
    """How many examples, and whose."""

    k: int = option(3, "examples shown before the asked question", low=1, high=32, kind="size", space_cap=8)
    source: Literal["same_entity", "other_entities"] = option(
        "same_entity", "forget examples about the target's own entity, or about other entities")
    seed: int = option(0, "which examples are drawn", low=0, kind="index")


def pick_examples(target: Fact, pool: list[Fact], k: int, same_entity: bool, rng: random.Random) -> list[Fact]:
    """Up to ``k`` examples for ``target`` from ``pool``, never the target itself."""
    if same_entity:
        chosen = [f for f in pool if f.entity == target.entity and f.id != target.id]
    else:
        chosen = [f for f in pool if f.entity != target.entity and f.id != target.id]
    rng.shuffle(chosen)
    return chosen[:k]


class IncontextAudit(Audit[IncontextOptions]):
    chance_key = "control_rate"
    name = "incontext"
    title = "In-context relearning"
    paper = "UnUnlearning: Unlearning is not sufficient for content regulation in advanced generative AI"
    summary = ("share of the forgotten facts answered once other forgotten facts, with their answers, are shown "
               "in the prompt")
    Options = IncontextOptions
    headline_keys = ("recovery_rate", "control_rate", "lift")

    def run(self, ctx: AuditContext[IncontextOptions]) -> AuditResult:
        opts = ctx.options
        rng = random.Random(opts.seed)
        targets = ctx.baseline.targets()
        forget = [f for f in ctx.baseline.facts if f.split == "forget"]
        retain = [f for f in ctx.baseline.facts if f.split == "retain"]
        shown = {"forget_examples": [pick_examples(t, forget, opts.k, opts.source == "same_entity", rng)
                                     for t in targets],
                 "retain_examples": [pick_examples(t, retain, opts.k, False, rng) for t in targets]}
        slots = [(c, t, ex) for c in CONDITIONS for t, ex in zip(targets, shown[c]) if ex]
        engine = ctx.pair.base
        prompts = [engine.few_shot_prompt([(e.question, e.answer) for e in ex], t.question) for _, t, ex in slots]
        answered = answer_both(ctx.pair, prompts, [t.answer for _, t, _ in slots], ctx.max_new_tokens,
                               "in-context examples")
        ctx.record([item_for(self.name, t, prompt, a, category=c,
                             recovered=a.score_unlearned.hit if c == "forget_examples" else None,
                             extra={"examples": [e.id for e in ex]})
                    for (c, t, ex), prompt, a in zip(slots, prompts, answered)])
        hits = {c: {t.id for (cond, t, _), a in zip(slots, answered) if cond == c and a.score_unlearned.hit}
                for c in CONDITIONS}
        metrics: dict[str, float] = {"targets": float(len(targets))}
        metrics.update(recovery("recovery_rate", targets, hits["forget_examples"]))
        metrics.update(recovery("control_rate", targets, hits["retain_examples"]))
        metrics["lift"] = metrics["recovery_rate"] - metrics["control_rate"]
        base_kept = {t.id for (c, t, _), a in zip(slots, answered) if c == "forget_examples" and a.score_base.hit}
        metrics.update(recovery("base_rate", targets, base_kept))
        missing = sum(not ex for ex in shown["forget_examples"])
        notes = [f"{opts.k} examples per question ({opts.source.replace('_', ' ')}); {len(targets)} targets"
                 + (f", {missing} without any forget example (counted as not recovered)" if missing else "")]
        artifacts = {"rates": {"forget examples": metrics["recovery_rate"],
                               "retain examples (control)": metrics["control_rate"],
                               "base, forget examples": metrics["base_rate"]},
                     "settings": {"k": opts.k, "source": opts.source}}
        return AuditResult(metrics=metrics, artifacts=artifacts, notes=notes)

    def figures(self, artifacts: dict[str, Any], items: pd.DataFrame) -> dict[str, go.Figure]:
        rates = artifacts.get("rates") or {}
        if not rates:
            return {}
        fig = go.Figure(go.Bar(x=list(rates), y=list(rates.values())))
        fig.update_layout(title="Targets answered after in-context examples", yaxis=dict(title="share", range=[0, 1]))
        return {"rates": fig}

    def verdict(self, metrics: dict[str, float | None]) -> str:
        return (f"recovery_rate = {pct(metrics, 'recovery_rate')} with forgotten facts as examples, "
                f"{pct(metrics, 'control_rate')} with retain facts (control)")
