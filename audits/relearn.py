"""Audit ``relearn``: do a few fine-tuning steps bring the forgotten facts back?

"Unlearning or Obfuscating? Jogging the Memory of Unlearned LLMs via Benign
Relearning" (Hu et al. 2024) and "An Adversarial Perspective on Machine
Unlearning for AI Safety" (Łucki et al. 2024) show that unlearned knowledge
often returns after brief fine-tuning on a small set, even one that does not
contain the facts asked afterwards: the knowledge was hidden, not removed.  A
model that never learned the facts (the retrained control) cannot relearn
held-out facts it was not shown.

Here the unlearned model is fine-tuned in place for ``steps`` steps
(:mod:`lab.core.finetune`: LoRA adapters, removed afterwards, or all weights,
restored bit for bit; nothing is written to disk) on the relearning set:

- ``data=forget``: a random ``share`` of the forget questions with their
  answers (the papers' setting); the targets *not* in that share are asked;
- ``data=retain``: ``size`` retain questions only (benign data, no forget fact);
- ``data=file``: the items of a facts file (any format the lab reads:
  question-answer pairs, or passages as plain language-model text).

At every ``eval_every`` steps the held-out targets and the holdout questions
(facts no model was trained on: the chance level) are asked greedily.  The
same schedule runs on the base model (does it keep the facts?) and, with
``--reference``, on the reference model: its final rate is the control that
``recovery_rate_adjusted`` subtracts.  ``recovery_rate`` is the share of
held-out targets answered after the last step.  Every model is asked about
the whole pool the targets come from (the forget facts the base knows, less
those relearned on), the same in every pair of a sweep, so the base's and the
reference's curves are fine-tuned once per sweep (``Backend.remember``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd
import plotly.graph_objects as go

from audits.base import Answered, Audit, AuditContext, item_for, pct
from lab.core.backend import Backend
from lab.core.errors import LabError
from lab.core.facts import Fact, load_facts
from lab.core.finetune import Row, Schedule, finetune
from lab.core.options import AuditOptions, option
from lab.core.probes import labelled_row
from lab.core.records import AuditResult, ItemRecord
from lab.core.scoring import rate, score_answer
from lab.core.stats import rate_with_interval


@dataclass
class RelearnOptions(AuditOptions):
    """The relearning schedule and its data (Łucki et al.'s LoRA relearning by default)."""

    steps: int = option(40, "fine-tuning steps", low=1, high=5000, kind="size", space_cap=200)
    eval_every: int = option(10, "ask the held-out facts every this many steps (the recovery curve)", low=1,
                            kind="index")
    lr: float = option(2e-4, "AdamW learning rate (LoRA: Łucki et al. use 2e-4; full fine-tuning: Hu et al. use "
                       "1e-5 on 7B models)", low=1e-8, high=1.0)
    method: Literal["lora", "full"] = option("lora", "lora: adapters on every linear layer, removed after; full: "
                                             "every weight, restored after")
    rank: int = option(128, "LoRA rank (Łucki et al.: 128; alpha is twice the rank)", low=1, high=1024, kind="size",
                      space_cap=128)
    batch_size: int = option(4, "examples per step", low=1, high=256, kind="size", space_cap=16)
    data: Literal["forget", "retain", "file"] = option(
        "forget", "forget: a share of the forget questions (the rest are asked); retain: retain questions only "
        "(benign); file: the items of a facts file")
    share: float = option(0.5, "data=forget: share of the forget questions used for relearning", low=0.05,
                          high=0.95)
    size: int = option(64, "data=retain: how many retain questions", low=1, high=100_000, kind="size", space_cap=400)
    file: str = option("", "data=file: a facts file (questions and answers, or passages)", kind="path",
                      reads=load_facts)
    seed: int = option(0, "which facts are drawn and the batch order", low=0, kind="index")

    def check(self) -> None:
        if self.data == "file" and not self.file:
            raise LabError("option relearn.file is required with relearn.data=file")
        if self.file and self.data != "file":
            raise LabError("option relearn.file is used only with relearn.data=file")


@dataclass
class Curve:
    """One model's answers to the asked facts at each checkpoint."""

    outputs: dict[int, list[str]]

    def hits(self, step: int, facts: list[Fact]) -> list[bool]:
        return [score_answer(out, f.answer).hit for out, f in zip(self.outputs[step], facts)]

    def of(self, asked: list[Fact], wanted: list[Fact]) -> "Curve":
        """The answers to ``wanted`` (each among ``asked``, the facts this curve answers, in order)."""
        where = {f.id: i for i, f in enumerate(asked)}
        return Curve({step: [out[where[f.id]] for f in wanted] for step, out in self.outputs.items()})


def checkpoints(steps: int, every: int) -> list[int]:
    """0, every ``every`` steps, and the last step."""
    return sorted({0, *range(every, steps, every), steps})


def fact_rows(engine: Backend, facts: list[Fact]) -> list[Row]:
    """Training rows: a question's answer after its prompt (loss on the answer and EOS), a passage whole."""
    rows = []
    for fact in facts:
        if fact.kind == "qa" and fact.question and fact.answer:
            rows.append(labelled_row(engine, engine.prompt(fact.question), fact.answer, eos=True))
        elif fact.text:
            rows.append((engine.tokenizer(fact.text)["input_ids"], 1))
    return rows


class RelearnAudit(Audit[RelearnOptions]):
    chance_key = "holdout_rate"
    name = "relearn"
    title = "Relearning attack"
    paper = ("Unlearning or Obfuscating? Jogging the Memory of Unlearned LLMs via Benign Relearning; "
             "An Adversarial Perspective on Machine Unlearning for AI Safety")
    summary = ("share of the held-out forgotten facts the unlearned model answers again after a few fine-tuning "
               "steps on other data")
    Options = RelearnOptions
    needs = frozenset({"generate", "internals"})
    headline_keys = ("recovery_rate", "holdout_rate", "base_retention")

    def __init__(self) -> None:
        self.reference_hits: set[str] = set()

    def relearning_set(self, ctx: AuditContext[RelearnOptions], opts: RelearnOptions) -> tuple[list[Fact], set[str]]:
        """The facts trained on, and the ids of forget facts among them (never asked afterwards)."""
        rng = random.Random(opts.seed)
        if opts.data == "forget":
            forget = [f for f in ctx.facts.split("forget") if f.kind == "qa"]
            rng.shuffle(forget)
            chosen = forget[: round(len(forget) * opts.share)]
            if not chosen:
                raise LabError(f"relearn.share {opts.share} of {len(forget)} forget questions is none: nothing "
                               "to relearn on")
            return chosen, {f.id for f in chosen}
        if opts.data == "retain":
            retain = [f for f in ctx.facts.split("retain") if f.kind == "qa"]
            rng.shuffle(retain)
            if not retain:
                raise LabError("relearn.data=retain needs retain questions, and the fact set has none")
            return retain[: opts.size], set()
        return list(load_facts(opts.file)), set()

    def run(self, ctx: AuditContext[RelearnOptions]) -> AuditResult:
        opts = ctx.options
        chosen, used = self.relearning_set(ctx, opts)
        targets = [f for f in ctx.baseline.targets() if f.id not in used]
        holdout = [f for f in ctx.baseline.facts if f.split == "holdout"]
        asked = targets + holdout
        schedule = Schedule(opts.steps, opts.lr, opts.batch_size, opts.method, opts.rank, 2 * opts.rank, opts.seed)
        steps = checkpoints(opts.steps, opts.eval_every)
        engines = {"base": ctx.pair.base, "unlearned": ctx.pair.unlearned}
        if ctx.reference is not None:
            engines["reference"] = ctx.reference
        pool = self.pool(ctx, used) + holdout
        curves = {role: self.relearn(engine, chosen, pool, schedule, steps, ctx.max_new_tokens, role).of(pool, asked)
                  for role, engine in engines.items()}
        final = steps[-1]
        self.record(ctx, targets, curves, steps)
        metrics: dict[str, float] = {"targets": float(len(targets)), "relearn_examples": float(len(chosen)),
                                     "steps": float(opts.steps)}
        rates: dict[str, dict[int, float]] = {}
        for role, curve in curves.items():
            rates[role] = {}
            for step in steps:
                hits = curve.hits(step, asked)
                rates[role][step] = rate(hits[: len(targets)])
                if role == "unlearned":
                    metrics.update(rate_with_interval(f"recovery_rate_step_{step}", hits[: len(targets)]))
        unlearned_final = curves["unlearned"].hits(final, asked)
        metrics.update(rate_with_interval("recovery_rate", unlearned_final[: len(targets)]))
        metrics.update(rate_with_interval("holdout_rate", unlearned_final[len(targets):]))
        metrics.update(rate_with_interval("base_retention", curves["base"].hits(final, asked)[: len(targets)]))
        if "reference" in curves:
            reference_final = curves["reference"].hits(final, asked)
            self.reference_hits = {f.id for f, hit in zip(targets, reference_final) if hit}
            metrics.update(rate_with_interval("reference_holdout_rate", reference_final[len(targets):]))
        artifacts = {"curve": {role: {str(s): r for s, r in by_step.items()} for role, by_step in rates.items()},
                     "relearned_on": [f.id for f in chosen], "asked": [f.id for f in targets],
                     "settings": {"steps": opts.steps, "lr": opts.lr, "method": opts.method, "rank": opts.rank,
                                  "batch_size": opts.batch_size, "data": opts.data}}
        notes = [f"relearned on {len(chosen)} {opts.data} items for {opts.steps} steps ({opts.method}, lr "
                 f"{opts.lr:g}); asked {len(targets)} held-out targets and {len(holdout)} holdout questions at steps "
                 f"{', '.join(map(str, steps))}; every model restored afterwards"]
        return AuditResult(metrics=metrics, artifacts=artifacts, notes=notes)

    @staticmethod
    def pool(ctx: AuditContext[RelearnOptions], used: set[str]) -> list[Fact]:
        """The forget facts the base knows, less those relearned on: every pair's targets are among them, and
        they are the same in every pair of a sweep, so each model is asked about all of them and its curve is
        computed once (:meth:`relearn`)."""
        return [f for f in ctx.baseline.facts if f.split == "forget" and ctx.baseline.knows_base(f)
                and f.id not in used]

    @staticmethod
    def relearn(engine: Backend, chosen: list[Fact], asked: list[Fact], schedule: Schedule, steps: list[int],
                max_new_tokens: int, role: str) -> Curve:
        """One model fine-tuned on the relearning set, asked at every checkpoint, then restored.  The curve is
        remembered for the model's weights (:meth:`lab.core.backend.Backend.remember`): fine-tuning is seeded by
        the schedule, so a sweep's later pairs are given the base's and the reference's curves without training
        them again."""
        prompts = [engine.prompt(f.question) for f in asked]

        def curve() -> Curve:
            outputs: dict[int, list[str]] = {}

            def ask(step: int) -> None:
                outputs[step] = engine.generate(prompts, max_new_tokens, desc=f"relearn {role}, step {step}") \
                    if prompts else []

            finetune(engine, fact_rows(engine, chosen), schedule, steps, ask)
            return Curve(outputs)

        inputs = ([(f.question, f.answer, f.text) for f in chosen], prompts, schedule, steps, max_new_tokens)
        return engine.remember("relearn curve", inputs, curve)

    def record(self, ctx: AuditContext[RelearnOptions], targets: list[Fact], curves: dict[str, Curve], steps: list[int]) -> None:
        """One item per held-out target and checkpoint: the relearned base and unlearned models' answers."""
        items: list[ItemRecord] = []
        for step in steps:
            outs_b, outs_u = curves["base"].outputs[step], curves["unlearned"].outputs[step]
            for i, fact in enumerate(targets):
                answered = Answered(outs_b[i], outs_u[i], score_answer(outs_b[i], fact.answer),
                                    score_answer(outs_u[i], fact.answer))
                items.append(item_for(self.name, fact, ctx.pair.base.prompt(fact.question), answered,
                                      category=f"step_{step}", recovered=answered.score_unlearned.hit))
        ctx.record(items)

    def attempts(self, items: list[ItemRecord]) -> list[ItemRecord]:
        """The headline is the rate after the last step."""
        steps = [int(i.category.removeprefix("step_")) for i in items if i.category.startswith("step_")]
        last = f"step_{max(steps)}" if steps else ""
        return [i for i in items if i.category == last and i.recovered is not None]

    def reference_recovered(self, ctx: AuditContext[RelearnOptions], items: list[ItemRecord]) -> set[str]:
        """The reference model went through the same relearning in :meth:`run`; its final answers are the control."""
        return self.reference_hits

    def figures(self, artifacts: dict[str, Any], items: pd.DataFrame) -> dict[str, go.Figure]:
        curve = artifacts.get("curve") or {}
        if not curve:
            return {}
        fig = go.Figure(layout=dict(title="Held-out forgotten facts answered during relearning",
                                    xaxis_title="fine-tuning step", yaxis=dict(title="share answered", range=[0, 1])))
        for role, by_step in curve.items():
            fig.add_scatter(x=[int(s) for s in by_step], y=list(by_step.values()), mode="lines+markers", name=role)
        return {"curve": fig}

    def verdict(self, metrics: dict[str, float | None]) -> str:
        return (f"recovery_rate = {pct(metrics, 'recovery_rate')} of held-out forgotten facts after "
                f"{int(metrics.get('steps') or 0)} relearning steps (never-seen holdout facts: "
                f"{pct(metrics, 'holdout_rate')}; the base keeps {pct(metrics, 'base_retention')})")
