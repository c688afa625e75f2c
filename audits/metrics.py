"""Audit ``metrics``: the standard unlearning metrics, for both models.

What the public evaluation frameworks report (open-unlearning, TOFU, MUSE),
computed through the engines so the other audits can be read against them:
ROUGE-L recall of greedy answers, length-normalized answer probability, truth
ratio, exact memorization, extraction strength, membership inference on text
(LOSS, ZLib, Min-K%, Min-K%++ as forget-vs-holdout AUC) and, with a reference
model (``--reference``, ideally retrained without the forget set), PrivLeak and
forget quality.  A retain-set model utility summarizes what survived.
Definitions and citations are in :mod:`lab.core.unlearning_metrics`.

Key names: ``<metric>_<split>`` is the unlearned model's value,
``<metric>_<split>_base`` the base model's and ``<metric>_<split>_reference``
the reference model's (split: forget or retain).  ``truth_ratio_forget`` is
open-unlearning's forget aggregate, mean min(R, 1/R) (1 = true and false
answers equally likely, as for a model that never learned the fact);
``truth_ratio_retain`` its retain aggregate, mean max(0, 1 - R) (1 = the true
answer dominates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

from audits.base import Audit, AuditContext, fmt, item_for
from lab.core import unlearning_metrics as um
from lab.core.engine import Engine, TokenScores
from lab.core.facts import TRAINED_SPLITS, Fact
from lab.core.options import AuditOptions, option
from lab.core.probes import Probe, ProbeScores, score_probes
from lab.core.records import AuditResult, ItemRecord
from lab.core.scoring import score_answer

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

PER_FACT = ("rouge_l", "prob", "truth_ratio", "exact_memorization", "extraction_strength")


@dataclass
class MetricsOptions(AuditOptions):
    """Knobs of the standard metrics."""

    mia_k: float = option(um.MIN_K, "share of lowest-scoring tokens in Min-K% and Min-K%++", low=1e-9, high=1.0)
    mia_source: Literal["answer", "qa", "text"] = option(
        "answer", "what membership inference scores: answer = each answer's tokens after its question prompt "
        "(open-unlearning on TOFU); qa = prompt and answer as one text; text = the facts' text field, each "
        "distinct text once (MUSE-style)")


def truth_ratio_answers(fact: Fact) -> tuple[str, tuple[str, ...]]:
    """The correct and the wrong answers of TOFU's truth ratio for one fact.

    The correct side is the paraphrased answer (the answer when there is
    none).  TOFU's perturbed answers are paraphrases with the facts changed;
    when a dataset gives bare wrong values instead (the demo) and the
    paraphrased answer contains the gold answer verbatim, each wrong value is
    put in its place, so both sides of the ratio have the same form.
    """
    true = fact.paraphrased_answer or fact.answer
    if fact.paraphrased_answer and fact.answer in fact.paraphrased_answer:
        return true, tuple(fact.paraphrased_answer.replace(fact.answer, p, 1) for p in fact.perturbed_answers)
    return true, fact.perturbed_answers


def fact_probe(engine: Engine, fact: Fact) -> Probe:
    true, perturbed = truth_ratio_answers(fact)
    return Probe(engine.prompt(fact.question), fact.answer, true, perturbed)


def metric_value(scores: ProbeScores, rouge_l: float, metric: str) -> float:
    """One per-fact metric by name (``truth_ratio`` is the raw ratio R)."""
    return rouge_l if metric == "rouge_l" else getattr(scores, metric)


# ----------------------------------------------------- membership inference
MIA_ATTACKS: dict[str, Callable[[TokenScores, str, float], float]] = {
    "loss": lambda s, text, k: um.loss_score(s.logprobs),
    "zlib": lambda s, text, k: um.zlib_score(s.logprobs, text),
    "mink": lambda s, text, k: um.min_k_score(s.logprobs, k),
    "mink_pp": lambda s, text, k: um.min_k_pp_score(s.logprobs, s.mu, s.sigma, k),
}


@dataclass(frozen=True)
class MiaText:
    """One membership-inference example: ``text`` is scored, after ``prefix`` when there is one."""

    fact: Fact
    text: str
    prefix: str = ""


def mia_examples(engine: Engine, facts: Sequence[Fact], source: str) -> list[MiaText]:
    """The forget and holdout examples that membership inference scores, per ``mia_source``."""
    pool = [f for f in facts if f.split in ("forget", "holdout")]
    if source == "answer":
        return [MiaText(f, f.answer, engine.prompt(f.question)) for f in pool]
    if source == "qa":
        return [MiaText(f, f"{engine.prompt(f.question)} {f.answer}") for f in pool]
    first: dict[str, Fact] = {}
    for fact in pool:
        if fact.text:
            first.setdefault(fact.text, fact)
    return [MiaText(fact, text) for text, fact in first.items()]


def membership_scores(engine: Engine, examples: Sequence[MiaText], k: float, desc: str) -> list[dict[str, float]]:
    """Every attack's membership score (higher = more member-like) for each example, in one batched call."""
    rows, starts = [], []
    for ex in examples:
        if ex.prefix:
            prefix, target = engine.encode_continuation(ex.prefix, ex.text)
            rows.append(prefix + target)
            starts.append(len(prefix))
        else:
            rows.append(engine.tokenizer(ex.text)["input_ids"])
            starts.append(1)
    token_scores = engine.token_scores(rows, starts, distribution=True, desc=desc) if rows else []
    return [{name: attack(s, ex.text, k) for name, attack in MIA_ATTACKS.items()}
            for s, ex in zip(token_scores, examples)]


def split_scores(scores: list[dict[str, float]], splits: list[str], attack: str) -> tuple[list[float], list[float]]:
    """One attack's scores of the forget texts (members) and of the holdout texts (non-members)."""
    return ([s[attack] for s, split in zip(scores, splits) if split == "forget"],
            [s[attack] for s, split in zip(scores, splits) if split == "holdout"])


def metric_key(name: str, model: str) -> str:
    """The unlearned model's key is the bare name; other models get a suffix."""
    return name if model == "unlearned" else f"{name}_{model}"


# ---------------------------------------------------------------------- audit
class MetricsAudit(Audit):
    name = "metrics"
    title = "Standard unlearning metrics"
    paper = ("TOFU: A Task of Fictitious Unlearning for LLMs; MUSE: Machine Unlearning Six-Way Evaluation "
             "for Language Models (metrics as implemented in open-unlearning)")
    summary = ("the benchmark metrics of both models: low forget-set scores and an MIA AUC near 0.5 are what "
               "the standard evaluation calls forgotten")
    Options = MetricsOptions
    headline_keys = ("rouge_l_forget", "prob_forget", "truth_ratio_forget", "mia_mink_pp_auc")
    recovery_key = None

    def run(self, ctx: AuditContext) -> AuditResult:
        opts: MetricsOptions = ctx.options
        engines = {"unlearned": ctx.pair.unlearned, "base": ctx.pair.base}
        if ctx.reference is not None:
            engines["reference"] = ctx.reference
        facts = [f for f in ctx.facts if f.split in TRAINED_SPLITS]
        per_fact = self._per_fact(ctx, engines, facts)
        mia = self._membership(ctx, engines, opts)
        metrics = summarize(facts, per_fact, mia, list(engines))
        notes = [f"membership inference on {len(mia['splits'])} texts ({opts.mia_source}), "
                 f"Min-K k = {opts.mia_k}"]
        if ctx.reference is None:
            notes.append("no reference model: PrivLeak and forget quality need --reference (a retrained model)")
        artifacts = {
            "table": metric_table(metrics, list(engines)),
            "roc": {attack: {m: um.roc_points(*split_scores(mia["scores"][m], mia["splits"], attack))
                             for m in engines} for attack in MIA_ATTACKS},
            "forget_truth_ratios": {m: [v for f, v in zip(facts, per_fact[m]["truth_ratio"]) if f.split == "forget"]
                                    for m in engines},
        }
        return AuditResult(metrics=metrics, artifacts=artifacts, notes=notes)

    def _per_fact(self, ctx: AuditContext, engines: dict[str, Engine],
                  facts: list[Fact]) -> dict[str, dict[str, list[float]]]:
        """Per model, per metric: one value per fact; each fact recorded as an item."""
        probes = [fact_probe(ctx.pair.base, f) for f in facts]
        baseline = ctx.baseline
        outputs = {"base": [baseline.answered[f.id].output_base for f in facts],
                   "unlearned": [baseline.answered[f.id].output_unlearned for f in facts]}
        if "reference" in engines:
            outputs["reference"] = engines["reference"].generate([p.prompt for p in probes], ctx.max_new_tokens,
                                                                 desc="greedy answers (reference)")
        rouge = {m: [score_answer(o, f.answer).rouge_l for o, f in zip(outputs[m], facts)] for m in engines}
        scores = {m: score_probes(e, probes, f"standard metrics ({m})") for m, e in engines.items()}
        per_fact = {m: {metric: [metric_value(s, r, metric) for s, r in zip(scores[m], rouge[m])]
                        for metric in PER_FACT} for m in engines}
        items = []
        for i, (fact, probe) in enumerate(zip(facts, probes)):
            extra: dict[str, Any] = {metric: {m: per_fact[m][metric][i] for m in engines} for metric in PER_FACT}
            extra.update(truth_ratio_true=probe.true_answer, truth_ratio_perturbed=list(probe.perturbed))
            if "reference" in outputs:
                extra["output_reference"] = outputs["reference"][i]
            items.append(item_for(self.name, fact, probe.prompt, baseline.answered[fact.id], category="answer",
                                  logprobs=(scores["base"][i].logprob, scores["unlearned"][i].logprob),
                                  extra=extra))
        ctx.record(items)
        return per_fact

    def _membership(self, ctx: AuditContext, engines: dict[str, Engine], opts: MetricsOptions) -> dict[str, Any]:
        """Membership scores of every forget and holdout text under every model; each text an item."""
        examples = mia_examples(ctx.pair.base, list(ctx.facts), opts.mia_source)
        scores = {m: membership_scores(e, examples, opts.mia_k, f"membership inference ({m})")
                  for m, e in engines.items()}
        ctx.record([
            ItemRecord(audit=self.name, fact_id=ex.fact.id, split=ex.fact.split, prompt=ex.prefix, answer=ex.text,
                       category="mia", extra={m: scores[m][i] for m in engines})
            for i, ex in enumerate(examples)
        ])
        return {"splits": [ex.fact.split for ex in examples], "scores": scores}

    def figures(self, artifacts: dict[str, Any], items: "pd.DataFrame") -> dict[str, "go.Figure"]:
        figs = {}
        if artifacts.get("table"):
            figs["metrics"] = metric_bars(artifacts["table"])
        if artifacts.get("roc"):
            figs["mia_roc"] = roc_figure(artifacts["roc"])
        if artifacts.get("forget_truth_ratios"):
            figs["truth_ratios"] = truth_ratio_figure(artifacts["forget_truth_ratios"])
        return figs

    def verdict(self, metrics: dict[str, float | None]) -> str:
        return (f"forget set, unlearned (base): ROUGE-L {fmt(metrics.get('rouge_l_forget'))} "
                f"({fmt(metrics.get('rouge_l_forget_base'))}), answer prob {fmt(metrics.get('prob_forget'))} "
                f"({fmt(metrics.get('prob_forget_base'))}), Min-K%++ AUC {fmt(metrics.get('mia_mink_pp_auc'))} "
                f"(0.5 = like unseen data), forget quality p = {fmt(metrics.get('forget_quality'), '{:.3g}')}, "
                f"model utility {fmt(metrics.get('model_utility'))} ({fmt(metrics.get('model_utility_base'))})")


def summarize(facts: list[Fact], per_fact: dict[str, dict[str, list[float]]], mia: dict[str, Any],
              models: list[str]) -> dict[str, float]:
    """Every headline key (see the module docstring for the naming)."""
    metrics: dict[str, float] = {}
    for model in models:
        for split in TRAINED_SPLITS:
            for metric in PER_FACT:
                values = [v for f, v in zip(facts, per_fact[model][metric]) if f.split == split]
                metrics[metric_key(f"{metric}_{split}", model)] = aggregate(metric, split, values)
        metrics[metric_key("model_utility", model)] = um.model_utility(
            [metrics[metric_key(f"{m}_retain", model)] for m in ("prob", "rouge_l", "truth_ratio")])
        for attack in MIA_ATTACKS:
            metrics[metric_key(f"mia_{attack}_auc", model)] = um.auc(*split_scores(mia["scores"][model],
                                                                                  mia["splits"], attack))
    if "reference" in models:
        forget = [f.split == "forget" for f in facts]
        reference_ratios = [v for keep, v in zip(forget, per_fact["reference"]["truth_ratio"]) if keep]
        for model in ("unlearned", "base"):
            ratios = [v for keep, v in zip(forget, per_fact[model]["truth_ratio"]) if keep]
            metrics[metric_key("forget_quality", model)] = um.forget_quality(ratios, reference_ratios)
            for attack in MIA_ATTACKS:
                metrics[metric_key(f"privleak_{attack}", model)] = um.privleak(
                    metrics[metric_key(f"mia_{attack}_auc", model)], metrics[f"mia_{attack}_auc_reference"])
    return metrics


def aggregate(metric: str, split: str, values: list[float]) -> float:
    """Mean over facts; truth ratios use open-unlearning's forget / retain aggregators."""
    if metric == "truth_ratio":
        return um.closer_to_1_better(values) if split == "forget" else um.true_better(values)
    return um.mean(values)


def metric_table(metrics: dict[str, float], models: list[str]) -> list[dict[str, Any]]:
    """Per-fact metrics as rows (metric, split, model, value), for the bar chart."""
    return [{"metric": metric, "split": split, "model": model,
             "value": metrics[metric_key(f"{metric}_{split}", model)]}
            for metric in PER_FACT for split in TRAINED_SPLITS for model in models]


# -------------------------------------------------------------------- figures
def metric_bars(table: list[dict[str, Any]]) -> "go.Figure":
    """Grouped bars: each per-fact metric on forget and retain, one color per model."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(TRAINED_SPLITS), subplot_titles=[f"{s} set" for s in TRAINED_SPLITS], shared_yaxes=True)
    models = list(dict.fromkeys(row["model"] for row in table))
    for col, split in enumerate(TRAINED_SPLITS, start=1):
        for model in models:
            rows = [r for r in table if r["split"] == split and r["model"] == model]
            fig.add_bar(x=[r["metric"] for r in rows], y=[r["value"] for r in rows], name=model,
                        legendgroup=model, showlegend=col == 1, row=1, col=col)
    fig.update_layout(title="Standard unlearning metrics (truth ratio: forget = mean min(R, 1/R), "
                      "retain = mean max(0, 1 - R))", barmode="group", yaxis_title="value")
    return fig


def roc_figure(roc: dict[str, dict[str, dict[str, list[float]]]]) -> "go.Figure":
    """Forget-vs-holdout ROC curves, one panel per attack, one line per model."""
    from plotly.subplots import make_subplots

    attacks = list(roc)
    fig = make_subplots(rows=1, cols=len(attacks), subplot_titles=attacks)
    for col, attack in enumerate(attacks, start=1):
        for model, points in roc[attack].items():
            fig.add_scatter(x=points["fpr"], y=points["tpr"], name=model, legendgroup=model, mode="lines",
                            showlegend=col == 1, row=1, col=col)
        fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="gray"), showlegend=False,
                        row=1, col=col)
    fig.update_layout(title="Membership inference: forget (members) vs holdout, ROC per attack",
                      xaxis_title="false positive rate", yaxis_title="true positive rate")
    return fig


def truth_ratio_figure(ratios: dict[str, list[float | None]]) -> "go.Figure":
    """Distribution of forget-set truth ratios per model (forget quality compares them by a KS test)."""
    import plotly.graph_objects as go

    fig = go.Figure(layout=dict(title="Forget-set truth ratio R = P(perturbed) / P(true), per model",
                                xaxis_title="log10 R (0: true and false equally likely)", yaxis_title="facts",
                                barmode="overlay"))
    for model, values in ratios.items():
        logs = [math.log10(v) for v in values if v is not None and v > 0 and math.isfinite(v)]
        fig.add_histogram(x=logs, name=model, opacity=0.6)
    return fig
