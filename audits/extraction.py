"""Audit ``extraction``: does the unlearned model still continue the forget passages verbatim?

MUSE ("MUSE: Machine Unlearning Six-Way Evaluation for Language Models",
Shi et al. 2024) measures verbatim memorization (VerbMem) by prompting with
the opening of a forget passage and scoring the continuation against the
true one with ROUGE-L F1.  A model unlearned on questions alone may still
recite the passages the facts came from.  Two measures:

- ``recovery_rate`` (the lab's one rule): for each target (a forget fact the
  base knows and the unlearned model misses on the plain question), a
  passage about it that contains the answer (the fact's own ``text``, else a
  passage item about the same entity) is cut just before the answer and
  given as raw text to continue; recovered when the continuation holds the
  answer.  Targets without such a passage count as not recovered;
- ``verbmem_forget`` / ``verbmem_retain``: MUSE's VerbMem on the passage items
  (continuation items as given, raw texts cut after their opening, see
  :func:`lab.core.probes.passage_parts`): mean ROUGE-L F1 of the greedy
  continuation (``max_new_tokens``, MUSE's 128) against the true one, for
  both models (``_base`` keys for the base).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from audits.base import Audit, AuditContext, answer_both, fit_both, item_for, pct, recovery
from lab.core import unlearning_metrics as um
from lab.core.backend import Backend
from lab.core.facts import Fact
from lab.core.fitting import passage_tokens
from lab.core.options import AuditOptions, option
from lab.core.probes import passage_parts
from lab.core.records import AuditResult, extra_dict
from lab.core.scoring import cut_before_answer

VERBMEM_TOKENS = 128  # MUSE's generation length for VerbMem


@dataclass
class ExtractionOptions(AuditOptions):
    """Continuation length of the passage items."""

    max_new_tokens: int = option(VERBMEM_TOKENS, "continuation length for VerbMem (MUSE's 128)", low=1,
                                 kind="tokens")


def passage_prompt(fact: Fact, passages: dict[str, list[str]]) -> str | None:
    """A passage about ``fact`` cut just before its answer: its own text first, then its entity's passages."""
    for text in [fact.text, *passages.get(fact.entity, [])]:
        prefix = cut_before_answer(text, fact.answer) if text else None
        if prefix:
            return prefix
    return None


class ExtractionAudit(Audit[ExtractionOptions]):
    name = "extraction"
    title = "Verbatim extraction"
    paper = "MUSE: Machine Unlearning Six-Way Evaluation for Language Models (VerbMem)"
    summary = ("share of the forgotten facts the unlearned model recites when a passage about them is cut just "
               "before the answer (and ROUGE-L of passage continuations)")
    Options = ExtractionOptions
    uses = ("qa", "continuation", "text")
    headline_keys = ("recovery_rate", "verbmem_forget", "verbmem_forget_base")

    def run(self, ctx: AuditContext[ExtractionOptions]) -> AuditResult:
        opts = ctx.options
        items = [f for f in ctx.facts if f.kind in ("continuation", "text")]
        by_entity: dict[str, list[str]] = {}
        for fact in items:
            if fact.entity and fact.text:
                by_entity.setdefault(fact.entity, []).append(fact.text)
        metrics: dict[str, float] = {}
        notes: list[str] = []
        if ctx.facts.of_kinds(("qa",)).facts:
            metrics.update(self.fact_extraction(ctx, by_entity, notes))
        metrics.update(self.verbmem(ctx, items, opts.max_new_tokens, notes))
        return AuditResult(metrics=metrics, artifacts={"verbmem_tokens": opts.max_new_tokens}, notes=notes)

    def fact_extraction(self, ctx: AuditContext[ExtractionOptions], passages: dict[str, list[str]], notes: list[str]
                        ) -> dict[str, float]:
        """The targets asked through their passages, cut before the answer (and from the left, to fit the
        models' contexts; both models, batched)."""
        targets = ctx.baseline.targets()
        cut = [(t, passage_prompt(t, passages)) for t in targets]
        asked = [(t, fit_both(ctx.pair, p, ctx.max_new_tokens)) for t, p in cut if p]
        answered = answer_both(ctx.pair, [p for _, p in asked], [t.answer for t, _ in asked], ctx.max_new_tokens,
                               "passages cut before the answer") if asked else []
        ctx.record([item_for(self.name, t, p, a, category="passage_cut", recovered=a.score_unlearned.hit)
                    for (t, p), a in zip(asked, answered)])
        out = {"targets": float(len(targets)), "targets_with_passage": float(len(asked))}
        recovered = {t.id for (t, _), a in zip(asked, answered) if a.score_unlearned.hit}
        if asked:
            out.update(recovery("recovery_rate", targets, recovered))
        else:
            out["recovery_rate"] = math.nan
            notes.append("no passage contains a target's answer: recovery_rate is undefined")
        if len(asked) < len(targets):
            notes.append(f"{len(targets) - len(asked)} of {len(targets)} targets have no passage holding their "
                         "answer (counted as not recovered)")
        return out

    def verbmem(self, ctx: AuditContext[ExtractionOptions], items: list[Fact], max_new_tokens: int, notes: list[str]
                ) -> dict[str, float]:
        """MUSE's VerbMem: ROUGE-L F1 of each passage item's greedy continuation, per split and model."""
        parts = [(f, passage_parts(f)) for f in items if f.split in ("forget", "retain")]
        parts = [(f, p) for f, p in parts if p]
        if not parts:
            notes.append("no passage items (continuation or text): VerbMem is undefined")
            return {f"verbmem_{split}{end}": math.nan for split in ("forget", "retain") for end in ("", "_base")}
        prompts = [fit_both(ctx.pair, p, max_new_tokens) for _, (p, _) in parts]
        cut = sum(fitted != p for fitted, (_, (p, _)) in zip(prompts, parts))
        if cut:
            notes.append(f"{cut} passage prompts longer than the models' context were cut from the left "
                         "(as lm-evaluation-harness does)")
        answered = answer_both(ctx.pair, prompts, [g for _, (_, g) in parts], max_new_tokens, "passage continuations")
        scores = [(um.rouge_l(a.output_base, g, "f1"), um.rouge_l(a.output_unlearned, g, "f1"))
                  for (_, (_, g)), a in zip(parts, answered)]
        ctx.record([item_for(self.name, f, p, a, category="verbmem",
                             extra={"rouge_f1_base": b, "rouge_f1_unlearned": u, "continuation": g})
                    for (f, (_, g)), p, a, (b, u) in zip(parts, prompts, answered, scores)])
        out: dict[str, float] = {}
        for split in ("forget", "retain"):
            chosen = [s for (f, _), s in zip(parts, scores) if f.split == split]
            out[f"verbmem_{split}_base"] = um.mean(b for b, _ in chosen)
            out[f"verbmem_{split}"] = um.mean(u for _, u in chosen)
        notes.append(f"VerbMem on {len(parts)} passages ({max_new_tokens} new tokens, ROUGE-L F1)")
        return out

    def row_tokens(self, engine: Backend, facts: list[Fact], options: ExtractionOptions) -> list[int]:
        return passage_tokens(engine, facts)  # passage prompts are cut from the left (fit_both)

    def figures(self, artifacts: dict[str, Any], items: pd.DataFrame) -> dict[str, go.Figure]:
        verb = items[items["category"] == "verbmem"] if len(items) else items
        if not len(verb):
            return {}
        fig = go.Figure()
        for model in ("base", "unlearned"):
            values = [e.get(f"rouge_f1_{model}") for e in verb["extra"].map(extra_dict)]
            fig.add_box(x=verb["split"], y=values, name=model, boxpoints="all")
        fig.update_layout(title="VerbMem: ROUGE-L F1 of passage continuations", boxmode="group",
                          yaxis=dict(title="ROUGE-L F1", range=[0, 1]))
        return {"verbmem": fig}

    def verdict(self, metrics: dict[str, float | None]) -> str:
        return (f"recovery_rate = {pct(metrics, 'recovery_rate')} of forgotten facts recited from a passage cut "
                f"before the answer; VerbMem on forget passages {pct(metrics, 'verbmem_forget')} "
                f"(base {pct(metrics, 'verbmem_forget_base')})")

