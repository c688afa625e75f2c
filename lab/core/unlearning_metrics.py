"""The standard unlearning metrics, as pure functions over scores.

Every definition follows the reference implementation, open-unlearning
(``src/evals/metrics``: ``memorization.py``, ``privacy.py``, ``utils.py``,
``mia/``), with its defaults, so numbers can be set beside published tables:

- answer probability, normalised probability, truth ratio with the
  ``closer_to_1_better`` / ``true_better`` aggregators, ROUGE-L recall, forget
  quality (KS test) and model utility (harmonic mean): "TOFU: A Task of
  Fictitious Unlearning for LLMs";
- exact memorization and extraction strength: "Towards Effective Evaluations
  and Comparisons for LLM Unlearning Methods" (open-unlearning's ``EM``/``ES``);
- LOSS: "Privacy Risk in Machine Learning: Analyzing the Connection to
  Overfitting"; ZLib: "Extracting Training Data from Large Language Models";
  Min-K%: "Detecting Pretraining Data from Large Language Models";
  Min-K%++: "Min-K%++: Improved Baseline for Detecting Pre-Training Data from
  Large Language Models"; the reference-model attack (the target's loss less
  a reference model's, the same paper by Carlini et al.); the gradient-norm
  attack: "Pandora's White-Box: Precise Training Data Detection and
  Extraction in Large Language Models" (arXiv 2402.17012, which
  open-unlearning's ``mia_gradnorm`` cites);
- PrivLeak, ROUGE-L F1 and KnowMem's few-shot answers cut at MUSE's stop
  words: "MUSE: Machine Unlearning Six-Way Evaluation for Language Models".

Every membership score here is oriented so that *higher means more
member-like* (minus the reference's loss-like score); an AUC of forget
(positive) against holdout (negative) is then 1.0 when the forget set is still
recognizably trained on and 0.5 when it looks like data the model never saw.
That AUC is exactly open-unlearning's, which labels forget 0 and holdout 1 and
ranks by the loss-like score: both are P(a holdout text looks less member-like
than a forget text), ties counted half.  Engine calls live in the audits;
nothing here touches a model.
"""

from __future__ import annotations

import math
import zlib
from functools import lru_cache
from typing import Iterable, Literal, Sequence

import numpy as np
from rouge_score import rouge_scorer
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

MIN_K = 0.4  # k of Min-K% and Min-K%++ in every open-unlearning config
MIN_VARIANCE = 1e-6  # open-unlearning's clamp on the vocabulary variance in Min-K%++
EPS = 1e-10  # open-unlearning's guard in ratios (truth ratio, normalised probability, PrivLeak)
PRIVLEAK_REFERENCE_AUC = 0.5  # open-unlearning's ref_value when no retain model's logs are given


def mean(values: Iterable[float]) -> float:
    """Mean of the finite values; NaN when there are none (no denominator, no claim)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


# ----------------------------------------------------------------- per answer
def answer_probability(mean_logprob: float) -> float:
    """Length-normalized answer probability exp(-mean NLL), EOS included (TOFU's Prob)."""
    return float(math.exp(mean_logprob))


def truth_ratio(true_logprob: float, perturbed_logprobs: Sequence[float]) -> float:
    """R = P(perturbed) / (P(true) + 1e-10), each a length-normalized probability (TOFU).

    ``true_logprob`` is the mean token log-prob of the correct answer,
    ``perturbed_logprobs`` those of the wrong answers; the wrong side
    averages the mean log-probs (a geometric mean over the perturbed
    answers), as open-unlearning's ``truth_ratio`` does.  NaN when there is
    no perturbed answer.
    """
    if not len(perturbed_logprobs):
        return float("nan")
    return float(math.exp(float(np.mean(perturbed_logprobs))) / (math.exp(true_logprob) + EPS))


def mean_probability(logprobs: Sequence[float]) -> float:
    """Arithmetic mean of length-normalized probabilities exp(mean log-prob), one per answer (TOFU's PERT
    Prob: open-unlearning's ``probability`` on a list of perturbed answers, averaged per question by
    ``aggregate_to_1D``).  Unlike the truth ratio's geometric mean, it averages the probabilities themselves.
    NaN without answers."""
    if not len(logprobs):
        return float("nan")
    return float(np.mean(np.exp(np.asarray(logprobs, dtype=float))))


def normalised_probability(true_logprob: float, perturbed_logprobs: Sequence[float]) -> float:
    """p_true / (p_true + sum_j p_perturbed_j + 1e-10), each p length-normalized (TOFU's Prob on
    real authors and world facts; open-unlearning's ``probability_w_options``).  NaN without perturbed answers."""
    if not len(perturbed_logprobs):
        return float("nan")
    true = math.exp(true_logprob)
    return float(true / (true + float(np.sum(np.exp(perturbed_logprobs))) + EPS))


def closer_to_1_better(ratios: Iterable[float]) -> float:
    """Forget-set aggregate of truth ratios: mean of min(R, 1/(R + 1e-10)); 1 = true and false equally likely."""
    return mean(min(r, 1.0 / (r + EPS)) for r in ratios if math.isfinite(r))


def true_better(ratios: Iterable[float]) -> float:
    """Retain-set aggregate of truth ratios: mean of max(0, 1 - R); 1 = the true answer dominates."""
    return mean(max(0.0, 1.0 - r) for r in ratios if math.isfinite(r))


def exact_memorization(greedy_match: np.ndarray) -> float:
    """Share of answer tokens (EOS excluded) that are the model's argmax prediction given the true prefix."""
    return float(np.mean(greedy_match)) if len(greedy_match) else float("nan")


def extraction_strength(greedy_match: np.ndarray) -> float:
    """1 - k/n, k the earliest position from which every argmax prediction matches the answer.

    Teacher-forced argmax matches from k on mean greedy decoding from the
    prefix ``answer[:k]`` reproduces the rest.  As in open-unlearning, k is
    searched in range(n), so when even the last token is missed the search
    ends at k = n - 1 and the score is 1/n, the same as when only the last
    token matches (this module returned 0 there before it followed the
    reference).
    """
    n = len(greedy_match)
    if not n:
        return float("nan")
    misses = np.flatnonzero(~np.asarray(greedy_match, dtype=bool))
    k = min(int(misses[-1]) + 1, n - 1) if misses.size else 0
    return 1.0 - k / n


@lru_cache(maxsize=1)
def _stemmed_rouge() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(generated: str, gold: str, measure: Literal["recall", "f1"] = "recall") -> float:
    """ROUGE-L of a generated answer against the gold one, Porter-stemmed (rouge-score, open-unlearning's
    scorer): ``recall`` is TOFU's (share of the gold answer's LCS that was generated), ``f1`` MUSE's."""
    score = _stemmed_rouge().score(gold, generated)["rougeL"]
    return float(score.recall if measure == "recall" else score.fmeasure)


def mean_rouge_l(generated: str, golds: Sequence[str], measure: Literal["recall", "f1"] = "recall") -> float:
    """Mean ROUGE-L of one generated answer against each of several golds (open-unlearning's PERT ROUGE: the
    same greedy answer scored against every perturbed answer, averaged per question).  NaN without golds."""
    if not len(golds):
        return float("nan")
    return float(np.mean([rouge_l(generated, gold, measure) for gold in golds]))


MUSE_STOP_WORDS = ("\n\n", "\nQuestion", "Question:")  # MUSE's KnowMem generations stop at these (open-unlearning)


def cut_at_stop_words(text: str, stop_words: Sequence[str] = MUSE_STOP_WORDS) -> str:
    """The text before the earliest stop word, stripped: MUSE's KnowMem answers (open-unlearning cuts a
    generation at each stop word in turn, which keeps the text before the earliest one)."""
    for word in stop_words:
        if word and word in text:
            text = text.split(word)[0]
    return text.strip()


# ------------------------------------------------------- membership inference
def loss_score(logprobs: np.ndarray) -> float:
    """LOSS attack: minus the mean token NLL (over every labelled token, EOS included)."""
    return float(np.mean(logprobs))


def zlib_score(logprobs: np.ndarray, text: str) -> float:
    """ZLib attack: minus the mean NLL divided by the zlib-compressed length of the text in UTF-8 bytes."""
    return float(np.mean(logprobs)) / len(zlib.compress(text.encode("utf-8")))


def _lowest_mean(values: np.ndarray, k: float) -> float:
    """Mean of the lowest max(1, int(n k)) values; 0 for no values (open-unlearning's score then)."""
    if not len(values):
        return 0.0
    count = max(1, int(len(values) * k))
    return float(np.mean(np.sort(values)[:count]))


def min_k_score(logprobs: np.ndarray, k: float = MIN_K) -> float:
    """Min-K%: mean of the lowest k share of token log-probs."""
    return _lowest_mean(np.asarray(logprobs, dtype=float), k)


def min_k_pp_score(logprobs: np.ndarray, mu: np.ndarray, sigma: np.ndarray, k: float = MIN_K) -> float:
    """Min-K%++: mean of the lowest k share of (log p(x_t) - mu_t) / sigma_t over the vocabulary.

    mu_t = sum_z p(z) log p(z), sigma_t^2 = sum_z p(z) (log p(z))^2 - mu_t^2,
    clamped at 1e-6 as open-unlearning does; ``sigma`` is the standard deviation.
    """
    sigma = np.sqrt(np.maximum(np.square(np.asarray(sigma, dtype=float)), MIN_VARIANCE))
    return _lowest_mean((np.asarray(logprobs, dtype=float) - np.asarray(mu, dtype=float)) / sigma, k)


def reference_score(score_model: float, score_reference: float) -> float:
    """Reference-model attack: a text's LOSS score under the audited model less its LOSS score under a
    reference model (member-like orientation: minus open-unlearning's ``target_loss - ref_loss``).  A text
    the audited model finds easier than the reference does looks trained on; the reference's own difficulty
    with the text (long names, rare words) cancels out."""
    return float(score_model - score_reference)


def gradnorm_score(tensor_norms: Sequence[float]) -> float:
    """Gradient-norm attack: minus the mean, over the model's parameter tensors, of the p-norm of each
    tensor's gradient of the text's mean token NLL (open-unlearning's ``GradNormAttack``: a trained-on text
    sits near a minimum of the loss, so its gradients are small).  NaN without any gradient."""
    if not len(tensor_norms):
        return float("nan")
    return -float(np.mean(np.asarray(tensor_norms, dtype=float)))


def _scorable(members: Sequence[float], non_members: Sequence[float]) -> bool:
    """Both classes present and every score a number (an attack a model cannot run scores NaN)."""
    return bool(len(members) and len(non_members)) and all(math.isfinite(v) for v in (*members, *non_members))


def auc(members: Sequence[float], non_members: Sequence[float]) -> float:
    """ROC-AUC of telling members (positive) from non-members by score; NaN without both classes or with a
    score that is not a number."""
    if not _scorable(members, non_members):
        return float("nan")
    labels = [1] * len(members) + [0] * len(non_members)
    return float(roc_auc_score(labels, [*members, *non_members]))


def roc_points(members: Sequence[float], non_members: Sequence[float]) -> dict[str, list[float]]:
    """False and true positive rates along the threshold sweep, for plotting (none where :func:`auc` is NaN)."""
    if not _scorable(members, non_members):
        return {"fpr": [], "tpr": []}
    labels = [1] * len(members) + [0] * len(non_members)
    fpr, tpr, _ = roc_curve(labels, [*members, *non_members])
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist()}


def privleak(auc_model: float, auc_reference: float = PRIVLEAK_REFERENCE_AUC) -> float:
    """MUSE PrivLeak in percent: ((1 - AUC) - (1 - AUC_ref)) / (1 - AUC_ref + 1e-10) * 100.

    MUSE (and open-unlearning's ``privleak``) report the AUC as 1 - x of the
    AUC here, so a model that still remembers the forget set (AUC 1) scores
    about -100, one that leaks like the retrained reference 0, and an
    over-unlearned one (forget set less member-like than unseen data)
    positive.  Without a reference model the reference AUC is 0.5.
    """
    return ((1 - auc_model) - (1 - auc_reference)) / (1 - auc_reference + EPS) * 100


def forget_quality(ratios_model: Sequence[float], ratios_reference: Sequence[float]) -> float:
    """TOFU forget quality: two-sided two-sample KS p-value of forget truth ratios against the reference's.

    open-unlearning tests 1/(R + 1e-10) in some versions and R in others;
    a strictly monotone map of both samples leaves the KS statistic, and so
    the p-value, unchanged.
    """
    a = [r for r in ratios_model if math.isfinite(r)]
    b = [r for r in ratios_reference if math.isfinite(r)]
    if not a or not b:
        return float("nan")
    return float(stats.ks_2samp(a, b).pvalue)


def model_utility(values: Sequence[float]) -> float:
    """TOFU model utility: harmonic mean of the utility metrics (0 when any is 0, NaN when any is NaN)."""
    if not values or any(not math.isfinite(v) for v in values):
        return float("nan")
    if any(v <= 0 for v in values):
        return 0.0
    return float(stats.hmean(values))
