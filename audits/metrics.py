"""Audit ``metrics``: the standard unlearning metrics, for every model of the run.

What the public evaluation frameworks report, computed by open-unlearning's
definitions with its defaults and named as it names them, so the numbers sit
beside published TOFU and MUSE tables: ROUGE-L of greedy answers (up to 200
new tokens) against the gold, the paraphrased and the perturbed answers,
answer probability, the paraphrased and perturbed answers' probabilities,
truth ratio, normalised probability, exact memorization, extraction
strength, MUSE's knowledge ROUGE (KnowMem: few-shot answers, ROUGE-L F1),
membership inference AUCs (LOSS, ZLib, Min-K%, Min-K%++, the reference-model
attack and the gradient-norm attack, forget vs holdout), PrivLeak (Min-K%,
k = 0.4), forget quality (KS test against a reference model, ideally
retrained without the forget set) and TOFU's model utility (harmonic mean of
nine retain, real authors and world facts components; computed over those the
facts allow, and said so).  The gradient-norm attack needs gradients: on a
served model it is skipped and the notes say so.  open-unlearning's gibberish
rate needs a text classifier from the model hub: it is computed only when
the run names one (option ``gibberish_classifier``), else the notes say why
it is missing.  Formulas and citations are in :mod:`lab.core.unlearning_metrics`;
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

import numpy as np

from audits.base import Answered, Audit, AuditContext, answer_both, fmt, item_for
from lab.core import unlearning_metrics as um
from lab.core.backend import Backend
from lab.core.classifier import load_classifier
from lab.core.facts import TRAINED_SPLITS, Fact
from lab.core.options import AuditOptions, option
from lab.core.membership import (GRADNORM_P, MIA_NAMES, MORE_MIA_NAMES, gradnorm_scores, mia_examples,
                                 membership_scores, reference_scores, split_scores)
from lab.core.probes import Probe, ProbeScores, eos_suffix, score_probes
from lab.core.records import AuditResult, ItemRecord

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

REFERENCE_GENERATION = 200  # open-unlearning's max_new_tokens for the ROUGE generations
KNOWMEM_GENERATION = 32  # open-unlearning's max_new_tokens for MUSE's KnowMem answers
KNOWMEM_SUBSET = "knowmem"  # MUSE's KnowMem questions (lab.core.facts.suites); their few-shot examples per split
# Per-fact values (items' ``extra``); the first five, per split, make the lab's bar chart.
PER_FACT = ("rouge_l", "prob", "truth_ratio", "exact_memorization", "extraction_strength")
VALUES = (*PER_FACT, "normalised_prob", "para_prob", "pert_prob", "para_rouge", "pert_rouge", "gibberish")
GIBBERISH_CLASSIFIER = "madhurjindal/autonlp-Gibberish-Detector-492513457"  # open-unlearning's
GIBBERISH_MAX_LENGTH = 32  # open-unlearning's truncation of the TOFU answers the classifier reads
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
    mia_reference: Literal["reference", "base"] = option(
        "reference", "the model the reference-model attack (mia_reference) compares each model's loss with: the "
        "run's --reference (open-unlearning's retain model) or the base model")
    mia_gradnorm_p: Literal["1", "2", "inf"] = option(
        "2", "the p-norm of each parameter tensor's gradient in the gradient-norm attack (open-unlearning's 2)")
    knowmem_max_new_tokens: int = option(
        KNOWMEM_GENERATION, "greedy answer length of MUSE's KnowMem questions (open-unlearning's 32)", low=1,
        kind="tokens")
    gibberish_classifier: str = option(
        "", f"text classifier whose class probability on each greedy forget answer makes open-unlearning's "
        f"gibberish rate (its own: {GIBBERISH_CLASSIFIER}, from the model hub); a folder or a hub id; empty: the "
        "rate is not computed", kind="model")
    gibberish_class: int = option(0, "the classifier's class whose probability is averaged (open-unlearning's 0)",
                                  low=0, kind="index")


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


# TOFU's paraphrased / perturbed probabilities and ROUGE (open-unlearning's *_PARA_* and *_PERT_* configs).
PARA_PERT = (
    Component("forget_Q_A_PARA_Prob", "forget", "para_prob"),
    Component("forget_Q_A_PERT_Prob", "forget", "pert_prob"),
    Component("forget_Q_A_PARA_ROUGE", "forget", "para_rouge"),
    Component("forget_Q_A_PERT_ROUGE", "forget", "pert_rouge"),
    Component("forget_Q_A_gibberish", "forget", "gibberish"),
    Component("retain_Q_A_PARA_Prob", "retain", "para_prob"),
    Component("retain_Q_A_PERT_Prob", "retain", "pert_prob"),
    Component("ra_Q_A_PERT_Prob", "ra", "pert_prob"),
    Component("wf_Q_A_PERT_Prob", "wf", "pert_prob"),
)
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
    *PARA_PERT,
)
KNOWMEM_KEYS = {"forget": "forget_knowmem_ROUGE", "retain": "retain_knowmem_ROUGE"}  # MUSE's, by split
PRIVLEAK_ATTACK = "mink"  # open-unlearning's and MUSE's privleak: Min-K% at k = 0.4
ALL_MIA_NAMES = {**MIA_NAMES, **MORE_MIA_NAMES}
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
_UTILITY_SETS = {"forget": "forget questions",
                 "retain": "retain questions other than TOFU's real_authors / world_facts",
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
    "ref": ("the model's mean NLL (EOS included) less the anchor model's (option mia_reference: the run's reference "
            "or the base; the anchor's own AUC is 0.5 by construction)",
            "Extracting Training Data from Large Language Models"),
    "gradnorm": ("the mean over parameter tensors of the p-norm (option mia_gradnorm_p, 2) of the gradient of the "
                 "mean NLL, EOS excluded (a local model only: NaN for a served one)",
                 "Pandora's White-Box: Precise Training Data Detection and Extraction in Large Language Models"),
}
_PARA_PERT = {
    "para_prob": "exp(-mean NLL) of the paraphrased answer followed by EOS (NaN for a question without one)",
    "pert_prob": ("the arithmetic mean over the perturbed answers (the truth ratio's wrong answers) of exp(-mean "
                  "NLL) with EOS"),
    "para_rouge": "ROUGE-L (option rouge) of the greedy answer against the paraphrased answer",
    "pert_rouge": "the mean over the perturbed answers of ROUGE-L (option rouge) of the greedy answer against each",
    "gibberish": (f"the probability of class gibberish_class (0) that the classifier gibberish_classifier (open-"
                  f"unlearning's: {GIBBERISH_CLASSIFIER}) gives the greedy answer, truncated to "
                  f"{GIBBERISH_MAX_LENGTH} tokens; not reported without a classifier"),
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
       for attack, name in ALL_MIA_NAMES.items()},
    "privleak": ("((1 - AUC) - (1 - AUC_ref)) / (1 - AUC_ref + 1e-10) * 100 of the Min-K% (k = 0.4) AUC, AUC_ref "
                 "the reference model's (0.5 without one): -100 = still remembers, 0 = like the retrained model, "
                 f"positive = over-unlearned ({_MUSE}; {_OU} privleak)"),
    **{f"privleak_{attack}": f"privleak of the {name} AUC (the lab's: MUSE's PrivLeak for every attack)"
       for attack, name in ALL_MIA_NAMES.items()},
    **{c.key: f"mean over {_UTILITY_SETS[c.group]} of {_PARA_PERT[c.value]} ({_TOFU}; {_OU} {c.key})"
       for c in PARA_PERT},
    **{key: (f"mean over MUSE's KnowMem {split} questions of ROUGE-L F1 of the greedy answer (up to "
             "knowmem_max_new_tokens, 32) after the suite's few-shot examples, cut at the first of MUSE's stop words "
             f"(a blank line, a newline before 'Question', 'Question:') ({_MUSE}; {_OU} {key})")
       for split, key in KNOWMEM_KEYS.items()},
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


def fact_values(fact: Fact, probe: Probe, scores: ProbeScores, output: str, measure: Literal["recall", "f1"]
                ) -> dict[str, float]:
    """Every per-fact value (:data:`VALUES`, but the classifier's ``gibberish``) of one fact under one model, from
    its teacher-forced scores and its greedy answer (``truth_ratio`` is the raw ratio R).  The paraphrased answer is the truth ratio's correct side
    on forget and retain facts that have one (open-unlearning's PARA datasets); the perturbed answers are the
    truth ratio's wrong ones (its PERT datasets)."""
    paraphrased = fact_group(fact) in TRAINED_SPLITS and bool(fact.paraphrased_answer)
    return {
        "rouge_l": um.rouge_l(output, fact.answer, measure),
        **{value: getattr(scores, value) for value in ("prob", "truth_ratio", "exact_memorization",
                                                       "extraction_strength", "normalised_prob")},
        "para_prob": um.answer_probability(scores.true_logprob) if paraphrased else math.nan,
        "pert_prob": um.mean_probability(scores.perturbed_logprobs),
        "para_rouge": um.rouge_l(output, fact.paraphrased_answer, measure) if paraphrased else math.nan,
        "pert_rouge": um.mean_rouge_l(output, probe.perturbed, measure),
    }


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
                     "model_utility", "mia_reference", "mia_gradnorm", "rouge_l_forget", "prob_forget",
                     "truth_ratio_forget", "mia_mink_pp_auc")
    recovery_key = None

    def run(self, ctx: AuditContext[MetricsOptions]) -> AuditResult:
        opts = ctx.options
        engines = dict(zip(("unlearned", "base", "reference"), engines_of(ctx)))
        facts = [f for f in ctx.facts if f.kind == "qa" and f.split in TRAINED_SPLITS]
        per_fact = self._per_fact(ctx, engines, facts, opts)
        mia = self._membership(ctx, engines, opts)
        knowmem = self._knowmem(ctx, engines, opts)
        metrics = summarize(facts, per_fact, mia, list(engines))
        metrics.update(metric_intervals(facts, per_fact, mia, list(engines), metrics))
        metrics.update(knowmem_metrics(knowmem, list(engines)))
        components = computed_utility(metrics, list(engines))
        artifacts = {
            "table": metric_table(metrics, list(engines)),
            "roc": {name: {m: um.roc_points(*split_scores(mia["scores"][m], mia["splits"], attack)) for m in engines}
                    for attack, name in ALL_MIA_NAMES.items()},
            "forget_truth_ratios": {m: [v for f, v in zip(facts, per_fact[m]["truth_ratio"]) if f.split == "forget"]
                                    for m in engines},
            "definitions": METRIC_DEFINITIONS,
            "settings": {"max_new_tokens": opts.max_new_tokens, "rouge": opts.rouge, "mia_k": opts.mia_k,
                         "mia_source": opts.mia_source, "eos": bool(eos_suffix(ctx.pair.base, True)),
                         "mia_reference": opts.mia_reference, "mia_gradnorm_p": opts.mia_gradnorm_p,
                         "knowmem_max_new_tokens": opts.knowmem_max_new_tokens,
                         "gibberish_classifier": opts.gibberish_classifier, "gibberish_class": opts.gibberish_class,
                         "model_utility_components": list(components)},
        }
        return AuditResult(metrics=metrics, artifacts=artifacts, notes=run_notes(ctx, opts, mia, components, knowmem))

    def row_tokens(self, engine: Backend, facts: list[Fact], options: MetricsOptions) -> list[int]:
        measured = super().row_tokens(engine, facts, options)
        # texts are scored only with mia_source=text: otherwise never too long for this audit
        return [0 if f.kind == "text" and options.mia_source != "text" else n for f, n in zip(facts, measured)]

    def _per_fact(self, ctx: AuditContext[MetricsOptions], engines: dict[str, Backend], facts: list[Fact],
                  opts: MetricsOptions) -> dict[str, dict[str, list[float]]]:
        """Per model, per value: one value per fact, from the audit's own greedy answers and scores."""
        probes = [fact_probe(ctx.pair.base, f) for f in facts]
        prompts = [p.prompt for p in probes]
        answered, outputs = greedy_answers(ctx, engines, prompts, facts, opts.max_new_tokens, "greedy answers")
        scores = {m: score_probes(e, probes, f"standard metrics ({m})", eos=True) for m, e in engines.items()}
        values = {m: [fact_values(f, p, s, o, opts.rouge) for f, p, s, o in zip(facts, probes, scores[m], outputs[m])]
                  for m in engines}
        classifier = load_classifier(opts.gibberish_classifier, ctx.pair.base.device) \
            if opts.gibberish_classifier else None
        for m in engines:
            gibberish = (classifier.class_probabilities(outputs[m], opts.gibberish_class, GIBBERISH_MAX_LENGTH,
                                                        f"metrics: gibberish classifier ({m})")
                         if classifier else [math.nan] * len(facts))
            for v, g in zip(values[m], gibberish):
                v["gibberish"] = g
        per_fact = {m: {value: [v[value] for v in values[m]] for value in VALUES} for m in engines}
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
        """Membership scores of every forget and holdout text under every model, every attack; each text an item.

        The reference-model attack compares each model's LOSS score with the anchor's (NaN without the anchor);
        the gradient-norm attack takes a backward pass per text (NaN for a model without weights here).
        """
        examples = mia_examples(ctx.pair.base, list(ctx.facts), opts.mia_source)
        scores = {m: membership_scores(e, examples, opts.mia_k, f"membership inference ({m})")
                  for m, e in engines.items()}
        anchor = scores.get(opts.mia_reference)
        p = GRADNORM_P[opts.mia_gradnorm_p]
        for m, engine in engines.items():
            ref = reference_scores(scores[m], anchor) if anchor else [math.nan] * len(examples)
            grad = (gradnorm_scores(engine, examples, p, f"gradient-norm attack ({m})") if engine.can("internals")
                    else [math.nan] * len(examples))
            for score, r, g in zip(scores[m], ref, grad):
                score.update(ref=r, gradnorm=g)
        ctx.record([
            ItemRecord(audit=self.name, fact_id=ex.fact.id, split=ex.fact.split, prompt=ex.prefix, answer=ex.text,
                       category="mia", extra={m: scores[m][i] for m in engines})
            for i, ex in enumerate(examples)
        ])
        return {"splits": [ex.fact.split for ex in examples], "scores": scores}

    def _knowmem(self, ctx: AuditContext[MetricsOptions], engines: dict[str, Backend], opts: MetricsOptions
                 ) -> dict[str, dict[str, list[float]]]:
        """MUSE's KnowMem: every model's greedy answer to each KnowMem question after the suite's few-shot
        examples of its split, cut at MUSE's stop words and scored by ROUGE-L F1; per model, per split, one
        value per question (nothing when the facts hold no KnowMem questions)."""
        facts = [f for f in ctx.facts if f.kind == "qa" and f.subset == KNOWMEM_SUBSET and f.split in KNOWMEM_KEYS]
        if not facts:
            return {}
        shots = {split: ctx.facts.examples.get(f"{KNOWMEM_SUBSET}_{split}", []) for split in KNOWMEM_KEYS}
        prompts = [ctx.pair.base.few_shot_prompt(shots[f.split], f.question) for f in facts]
        answered, outputs = greedy_answers(ctx, engines, prompts, facts, opts.knowmem_max_new_tokens,
                                           "KnowMem answers")
        cut = {m: [um.cut_at_stop_words(o) for o in outputs[m]] for m in engines}
        rouge = {m: [um.rouge_l(c, f.answer, "f1") for c, f in zip(cut[m], facts)] for m in engines}
        reference = outputs.get("reference")
        ctx.record([item_for(self.name, f, prompt, a, category="knowmem",
                             extra={"answer_cut": {m: cut[m][i] for m in engines},
                                    "knowmem_rouge": {m: rouge[m][i] for m in engines},
                                    **({"output_reference": reference[i]} if reference else {})})
                    for i, (f, prompt, a) in enumerate(zip(facts, prompts, answered))])
        return {m: {split: [v for f, v in zip(facts, rouge[m]) if f.split == split] for split in KNOWMEM_KEYS}
                for m in engines}

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
    reported = [c for c in COMPONENTS if (c.group in TRAINED_SPLITS or c.group in groups)
                and (c.value != "gibberish" or any(math.isfinite(v) for m in models for v in per_fact[m][c.value]))]
    metrics: dict[str, float] = {}
    for model in models:
        for c in reported:
            metrics[metric_key(c.key, model)] = c.aggregate(
                v for g, v in zip(groups, per_fact[model][c.value]) if g == c.group)
        for attack, name in ALL_MIA_NAMES.items():
            metrics[metric_key(name, model)] = um.auc(*split_scores(mia["scores"][model], mia["splits"], attack))
    components = computed_utility(metrics, models)
    metrics["model_utility_components"] = float(len(components))
    forget_ratios = {m: [v for g, v in zip(groups, per_fact[m]["truth_ratio"]) if g == "forget"] for m in models}
    for model in models:
        metrics[metric_key("model_utility", model)] = um.model_utility([metrics[metric_key(k, model)]
                                                                        for k in components])
        if model == "reference":
            continue
        for attack, name in ALL_MIA_NAMES.items():
            reference = metrics.get(f"{name}_reference", um.PRIVLEAK_REFERENCE_AUC)
            metrics[metric_key(f"privleak_{attack}", model)] = um.privleak(metrics[metric_key(name, model)], reference)
        metrics[metric_key("privleak", model)] = metrics[metric_key(f"privleak_{PRIVLEAK_ATTACK}", model)]
        metrics[metric_key("forget_quality", model)] = (
            um.forget_quality(forget_ratios[model], forget_ratios["reference"]) if "reference" in models
            else float("nan"))
    for model in models:
        metrics.update({metric_key(alias, model): metrics[metric_key(key, model)] for alias, key in ALIASES.items()})
    return metrics


BOOTSTRAP_METRICS = 200  # resamples of the facts and texts behind each headline metric's interval


def pair_auc(members: np.ndarray, non_members: np.ndarray) -> float:
    """ROC-AUC as the share of (member, non-member) pairs ordered right, ties counted half (Mann-Whitney): what
    ``um.auc`` computes, without sklearn's checks, for the bootstrap's many resamples."""
    if not members.size or not non_members.size or not (np.isfinite(members).all() and np.isfinite(non_members).all()):
        return math.nan
    diff = members[:, None] - non_members[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def resampled(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices drawn with replacement within each label's group, groups in a fixed order (the same draws in every
    process); none for no labels (a suite without texts)."""
    draws = [rng.choice(np.flatnonzero(labels == g), (labels == g).sum()) for g in sorted(set(labels.tolist()))]
    return np.concatenate(draws) if draws else np.zeros(0, dtype=int)


def metric_intervals(facts: list[Fact], per_fact: dict[str, dict[str, list[float]]], mia: dict[str, Any],
                     models: list[str], metrics: dict[str, float], samples: int = BOOTSTRAP_METRICS,
                     seed: int = 0) -> dict[str, float]:
    """95% percentile-bootstrap intervals (``<key>_ci_low`` / ``<key>_ci_high``) of the headline numbers that
    rest on many facts at once: every membership AUC, PrivLeak and model utility.  Facts are resampled within
    their group (forget, retain, ...) and membership texts within their split, and each number is computed again
    from the resample, so a PrivLeak or a utility resting on a few facts says how far it could move."""
    rng = np.random.default_rng(seed)
    groups = np.asarray([fact_group(f) for f in facts])
    splits = np.asarray(mia["splits"])
    parts = {c.key: c for c in COMPONENTS}
    utility = computed_utility(metrics, models)
    scores = {m: {a: np.asarray([s[a] for s in mia["scores"][m]], dtype=float) for a in ALL_MIA_NAMES}
              for m in models}
    values = {m: {v: np.asarray(per_fact[m][v], dtype=float) for v in per_fact[m]} for m in models}
    draws: dict[str, list[float]] = {}
    for _ in range(samples):
        pick, texts = resampled(groups, rng), resampled(splits, rng)
        members, others = texts[splits[texts] == "forget"], texts[splits[texts] == "holdout"]
        aucs = {(m, a): pair_auc(scores[m][a][members], scores[m][a][others]) for m in models for a in ALL_MIA_NAMES}
        for m in models:
            found = {metric_key(name, m): aucs[(m, attack)] for attack, name in ALL_MIA_NAMES.items()}
            if m != "reference":
                for attack in ALL_MIA_NAMES:
                    reference = aucs.get(("reference", attack), um.PRIVLEAK_REFERENCE_AUC)
                    found[metric_key(f"privleak_{attack}", m)] = um.privleak(aucs[(m, attack)], reference)
                found[metric_key("privleak", m)] = found[metric_key(f"privleak_{PRIVLEAK_ATTACK}", m)]
            chosen = [parts[k].aggregate(values[m][parts[k].value][pick][groups[pick] == parts[k].group])
                      for k in utility]
            found[metric_key("model_utility", m)] = um.model_utility(chosen)
            for key, value in found.items():
                if math.isfinite(value):
                    draws.setdefault(key, []).append(value)
    out = {}
    for key, drawn in draws.items():
        low, high = np.percentile(drawn, [2.5, 97.5])
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = float(low), float(high)
    return out


def greedy_answers(ctx: AuditContext[MetricsOptions], engines: dict[str, Backend], prompts: list[str],
                   facts: list[Fact], max_new_tokens: int, what: str) -> tuple[list[Answered], dict[str, list[str]]]:
    """Every model's greedy answer to each prompt: the pair's scored against the facts' answers, and the text
    of every model's (the reference's too, when the run has one)."""
    answered = answer_both(ctx.pair, prompts, [f.answer for f in facts], max_new_tokens, f"metrics: {what}")
    outputs = {"base": [a.output_base for a in answered], "unlearned": [a.output_unlearned for a in answered]}
    if "reference" in engines:
        outputs["reference"] = engines["reference"].generate(prompts, max_new_tokens,
                                                             desc=f"metrics: {what} (reference)")
    return answered, outputs


def knowmem_metrics(knowmem: dict[str, dict[str, list[float]]], models: list[str]) -> dict[str, float]:
    """``forget_knowmem_ROUGE`` / ``retain_knowmem_ROUGE`` per model, for the splits that have KnowMem questions."""
    return {metric_key(key, model): um.mean(knowmem[model][split])
            for model in models if model in knowmem for split, key in KNOWMEM_KEYS.items() if knowmem[model][split]}


def computed_utility(metrics: dict[str, float], models: list[str]) -> list[str]:
    """The model-utility components every model has a value of (all 9 on a full TOFU suite)."""
    return [key for key in UTILITY
            if all(math.isfinite(metrics.get(metric_key(key, m), float("nan"))) for m in models)]


def run_notes(ctx: AuditContext[MetricsOptions], opts: MetricsOptions, mia: dict[str, Any], components: list[str],
              knowmem: dict[str, dict[str, list[float]]]) -> list[str]:
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
    if opts.mia_reference == "reference" and ctx.reference is None:
        notes.append("mia_reference is NaN: the reference-model attack compares with the run's --reference "
                     "(open-unlearning's retain model); give one, or set metrics.mia_reference=base")
    else:
        notes.append(f"mia_reference compares every model's loss with the {opts.mia_reference} model's (its own "
                     "AUC is 0.5 by construction)")
    served = [e.info.ref for e in engines_of(ctx) if not e.can("internals")]
    notes.append(f"mia_gradnorm: the {opts.mia_gradnorm_p}-norm of each parameter tensor's gradient, one backward "
                 "pass per text, the model in eval mode (open-unlearning's train mode differs only with dropout)"
                 + (f"; skipped (NaN) for {', '.join(served)}: a served model gives no gradients" if served else ""))
    if knowmem:
        counts = {split: len(values) for split, values in next(iter(knowmem.values())).items() if values}
        shots = {split: len(ctx.facts.examples.get(f"{KNOWMEM_SUBSET}_{split}", [])) for split in counts}
        notes.append("MUSE KnowMem: " + ", ".join(f"{n} {split} questions after {shots[split]} few-shot example"
                                                   + ("" if shots[split] == 1 else "s") for split, n in counts.items())
                     + f", answers of up to {opts.knowmem_max_new_tokens} new tokens (open-unlearning: "
                     f"{KNOWMEM_GENERATION}) cut at MUSE's stop words, ROUGE-L F1; the lab strips an answer before "
                     "the cut, so one that opens with a blank line is read past it (open-unlearning reads it as empty)")
    if opts.gibberish_classifier:
        notes.append(f"forget_Q_A_gibberish: the mean probability of class {opts.gibberish_class} that "
                     f"{opts.gibberish_classifier} gives the greedy forget answers (truncated to {GIBBERISH_MAX_LENGTH} "
                     f"tokens); open-unlearning's number needs its classifier, {GIBBERISH_CLASSIFIER}")
    else:
        notes.append("forget_Q_A_gibberish (open-unlearning's gibberish rate) is not reported: it is the mean class-0 "
                     f"probability a hub classifier ({GIBBERISH_CLASSIFIER}) gives the greedy answers, and the run "
                     "names no classifier (option gibberish_classifier)")
    missing = [k for k in UTILITY if k not in components]
    notes.append(f"model_utility: harmonic mean of {len(components)} of open-unlearning's 9 components"
                 + (f" ({', '.join(components)})" if components else "")
                 + (f"; not computed: {', '.join(missing)} (TOFU's real_authors / world_facts retain facts, or "
                    "perturbed answers, are missing), so it is not the published number" if missing else ""))
    return notes


def engines_of(ctx: AuditContext[MetricsOptions]) -> list[Backend]:
    """The run's models: unlearned, base and, when given, the reference."""
    return [ctx.pair.unlearned, ctx.pair.base, *([ctx.reference] if ctx.reference is not None else [])]


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
