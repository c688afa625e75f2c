"""Audit ``adversarial``: RWKU's adversarial probe types against the forgotten facts.

"RWKU: Benchmarking Real-World Knowledge Unlearning for Large Language
Models" (Jin et al. 2024) tests unlearned models with level-3 adversarial
probes of ten types (:mod:`audits.adversarial.transforms`).  Two sources:

- every target (a forget fact the base knows and the unlearned model misses
  on the plain question) is asked in each chosen probe type built from its
  own question; ``<type>_recovery_rate`` per type and ``recovery_rate`` (a
  target recovered by at least one type), the lab's one rule;
- when the facts include RWKU's own level-3 probes (``probe_type`` set, from
  an ``rwku:`` suite), they are asked as they are: per type,
  ``rwku_<type>_retention`` is the share of the probes the base model answers
  that the unlearned model still answers (RWKU reports accuracy per type; the
  probes are not linked to a plain question, so the lab's recovery rule does
  not apply to them).

A multiple-choice answer counts only when it names the right choice and no
wrong one.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from audits.adversarial.transforms import PROBE_TYPES, ProbeType, build
from audits.base import Answered, Audit, AuditContext, item_for, pct, recovery
from lab.core.options import AuditOptions, option
from lab.core.records import AuditResult
from lab.core.stats import rate_with_interval


@dataclass
class AdversarialOptions(AuditOptions):
    """Which probe types to build."""

    probe_types: tuple[ProbeType, ...] = option(PROBE_TYPES, "RWKU probe types to build from each target's "
                                                "question")
    seed: int = option(0, "choice order and in-context examples", low=0, kind="index")


def type_key(probe_type: str) -> str:
    """A metric-key form of a probe type ("cross lingual (French)" -> "cross_lingual_french")."""
    return re.sub(r"[^a-z0-9]+", "_", probe_type.lower()).strip("_")


class AdversarialAudit(Audit[AdversarialOptions]):
    name = "adversarial"
    title = "RWKU adversarial probes"
    paper = "RWKU: Benchmarking Real-World Knowledge Unlearning for Large Language Models"
    summary = "share of the forgotten facts that RWKU-style adversarial rephrasings of the question bring back"
    Options = AdversarialOptions
    headline_keys = ("recovery_rate",)

    def run(self, ctx: AuditContext[AdversarialOptions]) -> AuditResult:
        opts = ctx.options
        rng = random.Random(opts.seed)
        targets = ctx.baseline.targets()
        retain = [f for f in ctx.baseline.facts if f.split == "retain"]
        probes = [p for t in targets for kind in opts.probe_types if (p := build(t, kind, retain, rng))]
        engine = ctx.pair.base
        prompts = [engine.few_shot_prompt(list(p.examples), p.text) if p.examples else engine.prompt(p.text)
                   for p in probes]
        outs_b = ctx.pair.base.generate(prompts, ctx.max_new_tokens, desc="adversarial probes (base)")
        outs_u = ctx.pair.unlearned.generate(prompts, ctx.max_new_tokens, desc="adversarial probes (unlearned)")
        by_id = {t.id: t for t in targets}
        answered = [Answered(b, u, p.score(b), p.score(u)) for p, b, u in zip(probes, outs_b, outs_u)]
        ctx.record([item_for(self.name, by_id[p.fact_id], prompt, a, category=p.probe_type,
                             recovered=a.score_unlearned.hit, extra={"gold": p.gold, "examples": list(p.examples)})
                    for p, prompt, a in zip(probes, prompts, answered)])
        metrics: dict[str, float] = {"targets": float(len(targets)), "probes": float(len(probes))}
        recovered: set[str] = set()
        for kind in opts.probe_types:
            hits = {p.fact_id for p, a in zip(probes, answered) if p.probe_type == kind and a.score_unlearned.hit}
            recovered |= hits
            built = [p for p in probes if p.probe_type == kind]
            if built:
                metrics.update(recovery(f"{kind}_recovery_rate", targets, hits))
        metrics.update(recovery("recovery_rate", targets, recovered))
        rwku = self.rwku_probes(ctx)
        metrics.update(rwku)
        built = {kind: sum(p.probe_type == kind for p in probes) for kind in opts.probe_types}
        notes = [f"{len(probes)} probes for {len(targets)} targets: "
                 + ", ".join(f"{kind} {n}" for kind, n in built.items())]
        if rwku:
            notes.append("RWKU's own level-3 probes asked as they are (rwku_<type>_retention)")
        return AuditResult(metrics=metrics, artifacts={"built": built}, notes=notes)

    @staticmethod
    def rwku_probes(ctx: AuditContext[AdversarialOptions]) -> dict[str, float]:
        """Per RWKU probe type: the share of base-answered probes the unlearned model still answers."""
        base = ctx.baseline
        out: dict[str, float] = {}
        typed = [f for f in base.facts if f.split == "forget" and f.level == "3" and f.probe_type]
        for kind in dict.fromkeys(f.probe_type for f in typed):
            known = [f for f in typed if f.probe_type == kind and base.knows_base(f)]
            out.update(rate_with_interval(f"rwku_{type_key(kind)}_retention", [base.knows_unlearned(f) for f in known]))
        return out

    def figures(self, artifacts: dict[str, Any], items: pd.DataFrame) -> dict[str, go.Figure]:
        if not len(items):
            return {}
        tried = items[items["recovered"].notna()]
        rates = tried.groupby("category")["recovered"].mean().sort_values()
        fig = go.Figure(go.Bar(x=rates.values, y=rates.index, orientation="h"))
        fig.update_layout(title="Share of adversarial probes the unlearned model answers, per RWKU type",
                          xaxis=dict(title="share of probes answered", range=[0, 1]))
        return {"per_type": fig}

    def verdict(self, metrics: dict[str, float | None]) -> str:
        return f"recovery_rate = {pct(metrics, 'recovery_rate')} of forgotten facts under RWKU-style probes"
