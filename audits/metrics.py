"""Audit ``metrics``: the standard unlearning metrics, for every model of the run.

What the public evaluation frameworks report, computed by open-unlearning's
definitions with its defaults and named as it names them, so the numbers sit
beside published TOFU and MUSE tables: ROUGE-L of greedy answers (up to 200
new tokens), answer probability, truth ratio, normalised probability, exact
memorization, extraction strength, membership inference AUCs (LOSS, ZLib,
Min-K%, Min-K%++, forget vs holdout), PrivLeak (Min-K%, k = 0.4), forget
quality (KS test against a reference model, ideally retrained without the
forget set) and TOFU's model utility (harmonic mean of nine retain, real
authors and world facts components; computed over those the facts allow, and
said so).  Formulas and citations are in :mod:`lab.core.unlearning_metrics`;
one line per key in :data:`METRIC_DEFINITIONS`, stored with every run.

Answers are labelled as open-unlearning labels them, the answer followed by
EOS (:mod:`lab.core.probes`): probabilities, truth ratios, LOSS and ZLib
include it; exact memorization, extraction strength, Min-K% and Min-K%++
read the answer's own tokens.

Key names: a bare key is the unlearned model's value, ``<key>_base`` the
base model's and ``<key>_reference`` the reference model's.  The lab's
earlier names (``rouge_l_forget``, ``prob_forget``, ``truth_ratio_forget``,
``mia_mink_pp_auc``, ...) stay as aliases of the reference-named keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Literal

from audits.base import Audit, AuditContext, answer_both, fmt, item_for
from lab.core import unlearning_metrics as um
from lab.core.backend import Backend
from lab.core.facts import TRAINED_SPLITS, Fact
from lab.core.options import AuditOptions, option
from lab.core.membership import MIA_NAMES, mia_examples, membership_scores, split_scores
from lab.core.probes import Probe, ProbeScores, eos_suffix, score_probes
from lab.core.records import AuditResult, ItemRecord

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

REFERENCE_GENERATION = 200  # open-unlearning's max_new_tokens for the ROUGE generations
# Per-fact values (items' ``extra``); the first five, per split, make the lab's bar chart.
PER_FACT = ("rouge_l", "prob", "truth_ratio", "exact_memorization", "extraction_strength")
VALUES = (*PER_FACT, "normalised_prob")
# TOFU's model-utility sets inside the retain split, by the subset a TOFU suite gives them.
UTILITY_SUBSETS = {"real_authors": "ra", "world_facts": "wf"}


@dataclass
class MetricsOptions(AuditOptions):
    """Knobs of the standard metrics."""

    max_new_tokens: int = option(
        REFERENCE_GENERATION, "greedy answer length for ROUGE (open-unlearning's 200); the run's "
        "--max-new-tokens is not used here", low=1, kind="tokens")
    rouge: Literal["recall", "f1"] = option(
        "recall", "ROUGE-L measure of the greedy answers: recall (TOFU) or f1 (MUSE)")
    mia_k: float = option(um.MIN_K, "share of lowest-scoring tokens in Min-K% and Min-K%++", low=1e-9, high=1.0)
    mia_source: Literal["answer", "qa", "text"] = option(
        "answer", "what membership inference scores: answer = each answer's tokens after its question prompt "
        "(open-unlearning on TOFU); qa = prompt and answer as one text; text = the facts' text field, each "
        "distinct text once (MUSE-style)")


# ------------------------------------------------------------------ what is reported
@dataclass(frozen=True)
class Component:
    """One reported aggregate: a per-fact value over one group of facts (see :func:`fact_group`)."""

    key: str
    group: str
    value: str
    aggregate: Callable[[Iterable[float]], float] = um.mean


def utility_components(group: str, prob: str) -> tuple[Component, ...]:
    """TOFU's three model-utility components of one group (``prob``: plain or normalised probability)."""
    return (Component(f"{group}_Q_A_Prob{'_normalised' if prob == 'normalised_prob' else ''}", group, prob),
            Component(f"{group}_Q_A_ROUGE", group, "rouge_l"),
            Component(f"{group}_Truth_Ratio", group, "truth_ratio", um.true_better))


RETAIN_UTILITY = utility_components("retain", "prob")
OTHER_UTILITY = utility_components("ra", "normalised_prob") + utility_components("wf", "normalised_prob")
UTILITY = tuple(c.key for c in RETAIN_UTILITY + OTHER_UTILITY)  # open-unlearning's model_utility, in its order
COMPONENTS = (
    Component("forget_Q_A_Prob", "forget", "prob"),
    Component("forget_Q_A_ROUGE", "forget", "rouge_l"),
    Component("forget_truth_ratio", "forget", "truth_ratio", um.closer_to_1_better),
    Component("exact_memorization", "forget", "exact_memorization"),
    Component("extraction_strength", "forget", "extraction_strength"),
    *RETAIN_UTILITY,
    *OTHER_UTILITY,
    Component("exact_memorization_retain", "retain", "exact_memorization"),  # the lab's: retain side too
    Component("extraction_strength_retain", "retain", "extraction_strength"),
)
PRIVLEAK_ATTACK = "mink"  # open-unlearning's and MUSE's privleak: Min-K% at k = 0.4
# The lab's earlier names, kept as aliases of the reference-named keys (CONTRACTS' headline keys among them).
ALIASES = {"rouge_l_forget": "forget_Q_A_ROUGE", "prob_forget": "forget_Q_A_Prob",
           "truth_ratio_forget": "forget_truth_ratio", "exact_memorization_forget": "exact_memorization",
           "extraction_strength_forget": "extraction_strength", "rouge_l_retain": "retain_Q_A_ROUGE",
           "prob_retain": "retain_Q_A_Prob", "truth_ratio_retain": "retain_Truth_Ratio",
           **{f"mia_{attack}_auc": name for attack, name in MIA_NAMES.items()}}

_OU = "open-unlearning"
_TOFU = "TOFU: A Task of Fictitious Unlearning for LLMs"
_MUSE = "MUSE: Machine Unlearning Six-Way Evaluation for Language Models"
_EM_ES = "Towards Effective Evaluations and Comparisons for LLM Unlearning Methods"
_AUC = "ROC-AUC of forget (members) vs holdout texts, 1 = still recognizably trained on, 0.5 = like unseen data,"
_PROB = "exp(-mean NLL) of the gold answer followed by EOS"
_ROUGE = ("ROUGE-L (option rouge: recall, TOFU's, or F1, MUSE's; Porter-stemmed) of the greedy answer (up to "
          "max_new_tokens, cut at EOS) against the gold answer")
_TRUE_BETTER = "max(0, 1 - R), R = P(perturbed) / (P(answer) + 1e-10), P = exp(-mean NLL) with EOS"
_NORMALISED = "P(answer) / (P(answer) + sum_j P(perturbed_j) + 1e-10), P = exp(-mean NLL) with EOS"
_UTILITY_SETS = {"retain": "retain questions other than TOFU's real_authors / world_facts",
                 "ra": "TOFU's real_authors questions", "wf": "TOFU's world_facts questions"}
_ATTACKS = {
    "loss": ("mean NLL over the labelled tokens, EOS included",
             "Privacy Risk in Machine Learning: Analyzing the Connection to Overfitting"),
    "zlib": ("mean NLL (EOS included) / zlib-compressed UTF-8 byte length of the scored text",
             "Extracting Training Data from Large Language Models"),
    "mink": ("mean of the lowest mia_k (0.4) share of token log-probs, EOS excluded",
             "Detecting Pretraining Data from Large Language Models"),
    "mink_pp": ("Min-K% of (log p - mu) / sigma over the vocabulary (variance clamped at 1e-6), EOS excluded",
                "Min-K%++: Improved Baseline for Detecting Pre-Training Data from Large Language Models"),
}
METRIC_DEFINITIONS: dict[str, str] = {
    "forget_Q_A_Prob": f"mean over forget questions of {_PROB} ({_TOFU}; {_OU} probability)",
    "forget_Q_A_ROUGE": f"mean over forget questions of {_ROUGE} ({_TOFU}; {_OU} rouge, rougeL_recall)",
    "forget_truth_ratio": ("mean over forget questions of min(R, 1/(R + 1e-10)), R = P(perturbed) / (P(paraphrased) "
                           "+ 1e-10), P = exp(-mean NLL) with EOS, perturbed answers averaged geometrically; "
                           f"1 = true and false equally likely ({_TOFU}; {_OU} truth_ratio, closer_to_1_better)"),
    "forget_quality": ("p-value of the two-sided two-sample KS test of the forget truth ratios R against the "
                       f"reference model's; NaN without --reference ({_TOFU}; {_OU} forget_quality)"),
    "exact_memorization": ("mean over forget answers of the share of answer tokens (EOS excluded) that are the "
                           f"argmax prediction given the true prefix ({_EM_ES}; {_OU} exact_memorization)"),
    "extraction_strength": ("mean over forget answers of 1 - k/n, k the first position in range(n) from which every "
                            "argmax prediction matches the answer (EOS excluded; 1/n when none does) "
                            f"({_EM_ES}; {_OU} extraction_strength)"),
    **{c.key: f"mean over {_UTILITY_SETS[c.group]} of " + {
        "prob": _PROB, "normalised_prob": _NORMALISED, "rouge_l": _ROUGE, "truth_ratio": _TRUE_BETTER}[c.value]
       + f" ({_TOFU}; {_OU} {c.key})" for c in RETAIN_UTILITY + OTHER_UTILITY},
    "model_utility": (f"harmonic mean of the model-utility components computed ({', '.join(UTILITY)}; all 9 "
                      f"make the published number) ({_TOFU}; {_OU} model_utility, hm_aggregate)"),
    "model_utility_components": "how many of the 9 model-utility components were computed (the lab's)",
    **{name: f"{_AUC} scored by {_ATTACKS[attack][0]} ({_ATTACKS[attack][1]}; {_OU} {name})"
       for attack, name in MIA_NAMES.items()},
    "privleak": ("((1 - AUC) - (1 - AUC_ref)) / (1 - AUC_ref + 1e-10) * 100 of the Min-K% (k = 0.4) AUC, AUC_ref "
                 "the reference model's (0.5 without one): -100 = still remembers, 0 = like the retrained model, "
                 f"positive = over-unlearned ({_MUSE}; {_OU} privleak)"),
    **{f"privleak_{attack}": f"privleak of the {name} AUC (the lab's: MUSE's PrivLeak for every attack)"
       for attack, name in MIA_NAMES.items()},
    "exact_memorization_retain": "exact_memorization on the retain facts (the lab's)",
    "extraction_strength_retain": "extraction_strength on the retain facts (the lab's)",
    **{alias: f"same as {key} (the lab's earlier name, kept)" for alias, key in ALIASES.items()},
}


def fact_group(fact: Fact) -> str:
    """forget, retain, ra (TOFU's real authors), wf (world facts) or holdout."""
    return UTILITY_SUBSETS.get(fact.subset, "retain") if fact.split == "retain" else fact.split


def truth_ratio_answers(fact: Fact) -> tuple[str, tuple[str, ...]]:
    """The correct and the wrong answers of TOFU's truth ratio for one fact.

    The correct side is the paraphrased answer on forget and retain facts and
    the answer itself on real authors and world facts, as open-unlearning
    sets them (the answer when there is no paraphrase).  TOFU's perturbed
    answers are paraphrases with the facts changed; when a dataset gives bare
    wrong values instead (the demo) and the paraphrased answer contains the
    gold answer verbatim, each wrong value is put in its place, so both sides
    of the ratio have the same form (the lab's choice).
    """
    if fact_group(fact) in ("ra", "wf") or not fact.paraphrased_answer:
        return fact.answer, fact.perturbed_answers
    true = fact.paraphrased_answer
    if fact.answer in true:
        return true, tuple(true.replace(fact.answer, p, 1) for p in fact.perturbed_answers)
    return true, fact.perturbed_answers


def fact_probe(engine: Backend, fact: Fact) -> Probe:
    true, perturbed = truth_ratio_answers(fact)
    return Probe(engine.prompt(fact.question), fact.answer, true, perturbed)


def fact_value(scores: ProbeScores, rouge_l: float, value: str) -> float:
    """One per-fact value by name (``truth_ratio`` is the raw ratio R)."""
    return rouge_l if value == "rouge_l" else getattr(scores, value)


def metric_key(name: str, model: str) -> str:
    """The unlearned model's key is the bare name; other models get a suffix."""
    return name if model == "unlearned" else f"{name}_{model}"


# ---------------------------------------------------------------------- audit
class MetricsAudit(Audit[MetricsOptions]):
    name = "metrics"
    title = "Standard unlearning metrics"
    paper = ("TOFU: A Task of Fictitious Unlearning for LLMs; MUSE: Machine Unlearning Six-Way Evaluation "
             "for Language Models (metrics as implemented in open-unlearning)")
    summary = ("the benchmark metrics of every model: low forget-set scores, an MIA AUC near 0.5 and PrivLeak "
               "near 0 are what the standard evaluation calls forgotten")
    Options = MetricsOptions
    needs = frozenset({"generate", "logprobs", "exact_tokens"})  # answers are scored followed by EOS
    uses = ("qa", "text")  # text: passages for membership inference (mia_source=text)
    headline_keys = ("forget_Q_A_ROUGE", "forget_Q_A_Prob", "forget_truth_ratio", "forget_quality", "privleak",
                     "model_utility", "rouge_l_forget", "prob_forget", "truth_ratio_forget", "mia_mink_pp_auc")
    recovery_key = None

    def run(self, ctx: AuditContext[MetricsOptions]) -> AuditResult:
        opts = ctx.options
        engines = {"unlearned": ctx.pair.unlearned, "base": ctx.pair.base}
        if ctx.reference is not None:
            engines["reference"] = ctx.reference
        facts = [f for f in ctx.facts if f.kind == "qa" and f.split in TRAINED_SPLITS]
        per_fact = self._per_fact(ctx, engines, facts, opts)
        mia = self._membership(ctx, engines, opts)
        metrics = summarize(facts, per_fact, mia, list(engines))
        components = computed_utility(metrics, list(engines))
        artifacts = {
            "table": metric_table(metrics, list(engines)),
            "roc": {MIA_NAMES[attack]: {m: um.roc_points(*split_scores(mia["scores"][m], mia["splits"], attack))
                                        for m in engines} for attack in MIA_NAMES},
            "forget_truth_ratios": {m: [v for f, v in zip(facts, per_fact[m]["truth_ratio"]) if f.split == "forget"]
                                    for m in engines},
            "definitions": METRIC_DEFINITIONS,
            "settings": {"max_new_tokens": opts.max_new_tokens, "rouge": opts.rouge, "mia_k": opts.mia_k,
                         "mia_source": opts.mia_source, "eos": bool(eos_suffix(ctx.pair.base, True)),
                         "model_utility_components": list(components)},
        }
        return AuditResult(metrics=metrics, artifacts=artifacts, notes=run_notes(ctx, opts, mia, components))

    def row_tokens(self, engine: Backend, facts: list[Fact], options: MetricsOptions) -> list[int]:
        measured = super().row_tokens(engine, facts, options)
        # texts are scored only with mia_source=text: otherwise never too long for this audit
        return [0 if f.kind == "text" and options.mia_source != "text" else n for f, n in zip(facts, measured)]

    def _per_fact(self, ctx: AuditContext[MetricsOptions], engines: dict[str, Backend], facts: list[Fact],
                  opts: MetricsOptions) -> dict[str, dict[str, list[float]]]:
        """Per model, per value: one value per fact, from the audit's own greedy answers and scores."""
        probes = [fact_probe(ctx.pair.base, f) for f in facts]
        prompts = [p.prompt for p in probes]
        answered = answer_both(ctx.pair, prompts, [f.answer for f in facts], opts.max_new_tokens,
                               "metrics: greedy answers")
        outputs = {"base": [a.output_base for a in answered], "unlearned": [a.output_unlearned for a in answered]}
        if "reference" in engines:
            outputs["reference"] = engines["reference"].generate(prompts, opts.max_new_tokens,
                                                                 desc="metrics: greedy answers (reference)")
        rouge = {m: [um.rouge_l(o, f.answer, opts.rouge) for o, f in zip(outputs[m], facts)] for m in engines}
        scores = {m: score_probes(e, probes, f"standard metrics ({m})", eos=True) for m, e in engines.items()}
        per_fact = {m: {value: [fact_value(s, r, value) for s, r in zip(scores[m], rouge[m])] for value in VALUES}
                    for m in engines}
        items = []
        for i, (fact, probe) in enumerate(zip(facts, probes)):
            extra: dict[str, Any] = {value: {m: per_fact[m][value][i] for m in engines} for value in VALUES}
            extra.update(group=fact_group(fact), truth_ratio_true=probe.true_answer,
                         truth_ratio_perturbed=list(probe.perturbed))
            if "reference" in outputs:
                extra["output_reference"] = outputs["reference"][i]
            items.append(item_for(self.name, fact, probe.prompt, answered[i], category="answer",
                                  logprobs=(scores["base"][i].logprob, scores["unlearned"][i].logprob),
                                  extra=extra))
        ctx.record(items)
        return per_fact

    def _membership(self, ctx: AuditContext[MetricsOptions], engines: dict[str, Backend], opts: MetricsOptions) -> dict[str, Any]:
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
        return (f"forget set, unlearned (base): ROUGE-L {fmt(metrics.get('forget_Q_A_ROUGE'))} "
                f"({fmt(metrics.get('forget_Q_A_ROUGE_base'))}), answer prob {fmt(metrics.get('forget_Q_A_Prob'))} "
                f"({fmt(metrics.get('forget_Q_A_Prob_base'))}), {membership_phrase(metrics)}, forget quality p = "
                f"{fmt(metrics.get('forget_quality'), '{:.3g}')}, model utility {fmt(metrics.get('model_utility'))} "
                f"({fmt(metrics.get('model_utility_base'))}; {fmt(metrics.get('model_utility_components'), '{:.0f}')}"
                f" of 9 components)")


def membership_phrase(metrics: dict[str, float | None]) -> str:
    """The Min-K% AUC and privleak for the verdict line, or why they are n/a."""
    auc = metrics.get("mia_min_k")
    if auc is None or not math.isfinite(auc):
        return "Min-K% AUC and privleak n/a (no forget or no holdout texts to compare)"
    return (f"Min-K% AUC {fmt(auc)} (0.5 = like unseen data), privleak {fmt(metrics.get('privleak'), '{:+.1f}')}% "
            "(-100 = still remembers, 0 = like the reference)")


def summarize(facts: list[Fact], per_fact: dict[str, dict[str, list[float]]], mia: dict[str, Any],
              models: list[str]) -> dict[str, float]:
    """Every key (see :data:`METRIC_DEFINITIONS`; the module docstring for the model suffixes)."""
    groups = [fact_group(f) for f in facts]
    reported = [c for c in COMPONENTS if c.group in TRAINED_SPLITS or c.group in groups]
    metrics: dict[str, float] = {}
    for model in models:
        for c in reported:
            metrics[metric_key(c.key, model)] = c.aggregate(
                v for g, v in zip(groups, per_fact[model][c.value]) if g == c.group)
        for attack, name in MIA_NAMES.items():
            metrics[metric_key(name, model)] = um.auc(*split_scores(mia["scores"][model], mia["splits"], attack))
    components = computed_utility(metrics, models)
    metrics["model_utility_components"] = float(len(components))
    forget_ratios = {m: [v for g, v in zip(groups, per_fact[m]["truth_ratio"]) if g == "forget"] for m in models}
    for model in models:
        metrics[metric_key("model_utility", model)] = um.model_utility([metrics[metric_key(k, model)]
                                                                        for k in components])
        if model == "reference":
            continue
        for attack, name in MIA_NAMES.items():
            reference = metrics.get(f"{name}_reference", um.PRIVLEAK_REFERENCE_AUC)
            metrics[metric_key(f"privleak_{attack}", model)] = um.privleak(metrics[metric_key(name, model)], reference)
        metrics[metric_key("privleak", model)] = metrics[metric_key(f"privleak_{PRIVLEAK_ATTACK}", model)]
        metrics[metric_key("forget_quality", model)] = (
            um.forget_quality(forget_ratios[model], forget_ratios["reference"]) if "reference" in models
            else float("nan"))
    for model in models:
        metrics.update({metric_key(alias, model): metrics[metric_key(key, model)] for alias, key in ALIASES.items()})
    return metrics


def computed_utility(metrics: dict[str, float], models: list[str]) -> list[str]:
    """The model-utility components every model has a value of (all 9 on a full TOFU suite)."""
    return [key for key in UTILITY
            if all(math.isfinite(metrics.get(metric_key(key, m), float("nan"))) for m in models)]


def run_notes(ctx: AuditContext[MetricsOptions], opts: MetricsOptions, mia: dict[str, Any], components: list[str]) -> list[str]:
    """What a reader needs to set these numbers beside published ones."""
    notes = [f"ROUGE-L {opts.rouge} (Porter-stemmed) of greedy answers of up to {opts.max_new_tokens} new tokens "
             f"(open-unlearning: {REFERENCE_GENERATION})"]
    if eos_suffix(ctx.pair.base, True):
        notes.append("answers labelled with EOS, as open-unlearning labels them: probabilities, truth ratios, LOSS "
                     "and ZLib include it; exact memorization, extraction strength, Min-K% and Min-K%++ do not")
    else:
        notes.append("the tokenizer has no EOS id: answers are scored without one (open-unlearning appends EOS), "
                     "so probabilities, truth ratios, LOSS and ZLib differ from the reference's")
    notes.append(f"membership inference on {len(mia['splits'])} texts ({opts.mia_source}), Min-K k = {opts.mia_k}; "
                 f"privleak is the Min-K% one")
    missing = [split for split in ("forget", "holdout") if split not in mia["splits"]]
    if missing:  # n/a says why: RWKU ships no holdout split
        notes.append(f"no {' and no '.join(missing)} texts to score ({opts.mia_source}): the membership AUCs and "
                     "privleak compare forget with holdout texts, so they are n/a")
    if ctx.reference is None:
        notes.append("no reference model: forget_quality is NaN and privleak is taken against AUC 0.5 "
                     "(open-unlearning's default); --reference (a model retrained without the forget set) gives both")
    missing = [k for k in UTILITY if k not in components]
    notes.append(f"model_utility: harmonic mean of {len(components)} of open-unlearning's 9 components"
                 + (f" ({', '.join(components)})" if components else "")
                 + (f"; not computed: {', '.join(missing)} (TOFU's real_authors / world_facts retain facts, or "
                    "perturbed answers, are missing), so it is not the published number" if missing else ""))
    return notes


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
