"""Audit ``direct``: the plain questions, asked to both models.

This is the claim under audit ("the model forgot"): accuracy on forget,
retain and holdout questions.  Every other audit is measured against it.
"""

from __future__ import annotations

from audits.base import Audit, AuditContext, item_for, pct
from lab.core.options import AuditOptions
from lab.core.records import AuditResult


class DirectAudit(Audit[AuditOptions]):
    name = "direct"
    title = "Plain questions"
    paper = "TOFU: A Task of Fictitious Unlearning for LLMs (forget/retain accuracy protocol)"
    summary = "greedy accuracy of both models on the plain questions of each split"
    recovery_key = None
    asks_directly = True
    default_on = True
    headline_keys = ("forget_accuracy_base", "forget_accuracy_unlearned", "retain_accuracy_base",
                     "retain_accuracy_unlearned", "holdout_accuracy_base")

    def run(self, ctx: AuditContext[AuditOptions]) -> AuditResult:
        base = ctx.baseline
        ctx.record([
            item_for(self.name, fact, prompt, base.answered[fact.id],
                     logprobs=(base.logprob_base[fact.id], base.logprob_unlearned[fact.id]))
            for fact, prompt in zip(base.facts, base.prompts)
        ])
        metrics = {"targets": float(len(base.targets()))}
        for split, model in (("forget", "base"), ("forget", "unlearned"), ("retain", "base"),
                             ("retain", "unlearned"), ("holdout", "base")):
            metrics.update(base.accuracy(split, model))
        return AuditResult(metrics=metrics)

    def verdict(self, metrics: dict[str, float | None]) -> str:
        forget = f"{pct(metrics, 'forget_accuracy_base')} (base) -> {pct(metrics, 'forget_accuracy_unlearned')}"
        retain = f"{pct(metrics, 'retain_accuracy_base')} -> {pct(metrics, 'retain_accuracy_unlearned')}"
        return (f"forget accuracy {forget} (unlearned), retain {retain}: "
                "the claim under audit (the attacks try to bring the forgotten facts back)")
