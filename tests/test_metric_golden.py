"""Golden values: each standard metric on a tiny fixed input, the expected value worked out by hand.

One test per metric.  Each docstring names the formula it checks and where
it is defined (open-unlearning's ``src/evals/metrics`` and the paper); the
comments carry the arithmetic, so a failure points at a definition, not at a
model.  Scores are oriented as the lab orients them (membership: higher =
more member-like, i.e. minus the reference's loss-like score).
"""

import math
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from lab.core import unlearning_metrics as um
from lab.core.backend import TokenScores
from lab.core.probes import tokenwise

LN2 = math.log(2)


def labelled(probs, match=None, mu=None, sigma=None) -> TokenScores:
    """Teacher-forced scores of labelled tokens (the answer, then EOS) from their probabilities."""
    return TokenScores(np.log(np.asarray(probs, dtype=float)),
                       mu=None if mu is None else np.asarray(mu, dtype=float),
                       sigma=None if sigma is None else np.asarray(sigma, dtype=float),
                       greedy_match=None if match is None else np.asarray(match, dtype=bool))


def test_answer_probability_averages_over_the_answer_and_eos():
    """Prob = exp(-mean NLL over every labelled token, EOS included).

    open-unlearning ``evaluate_probability`` (metrics/utils.py), TOFU's Prob.
    """
    scores = labelled([0.5, 0.5, 0.125])  # two answer tokens, then EOS
    # NLL = ln2, ln2, 3 ln2 -> mean 5/3 ln2 -> exp(-5/3 ln2) = 2^(-5/3) = 0.31498...
    assert um.answer_probability(scores.mean) == pytest.approx(2 ** (-5 / 3))
    assert um.answer_probability(tokenwise(scores).mean) == pytest.approx(0.5)  # what leaving EOS out would give


def test_exact_memorization_reads_the_answer_tokens_without_eos():
    """EM = (argmax == label).mean over the labelled tokens less the last ("-1 to ignore eos prediction").

    open-unlearning ``exact_memorization`` (metrics/memorization.py, tokenwise_vocab_logprobs);
    "Towards Effective Evaluations and Comparisons for LLM Unlearning Methods".
    """
    scores = labelled([0.9] * 6, match=[True, False, True, True, False, False])  # 5 answer tokens + EOS (missed)
    # answer tokens: T F T T F -> 3 / 5 = 0.6 (the missed EOS would make it 3 / 6)
    assert um.exact_memorization(tokenwise(scores).greedy_match) == pytest.approx(0.6)


@pytest.mark.parametrize("match, expected", [
    ([True, True, True, True], 1.0),  # k = 0: 1 - 0/4
    ([False, True, True, True], 0.75),  # k = 1: 1 - 1/4
    ([True, False, True, True], 0.5),  # k = 2: the first match at 0 does not count once token 1 is missed
    ([False, False, False, True], 0.25),  # k = 3: 1 - 3/4
    ([False, False, False, False], 0.25),  # no suffix matches: the loop ends at k = n - 1 = 3 -> 1/n
    ([True, True, True, False], 0.25),  # the last token missed: also k = 3 -> 1/n
])
def test_extraction_strength(match, expected):
    """ES = 1 - k/n, k the first index in range(n) with preds[k:] == labels[k:] (the loop's last k when none).

    open-unlearning ``extraction_strength`` (metrics/memorization.py);
    "Towards Effective Evaluations and Comparisons for LLM Unlearning Methods".
    """
    assert um.extraction_strength(np.array(match)) == pytest.approx(expected)


def test_truth_ratio_is_wrong_over_correct_with_a_geometric_mean_of_the_wrong():
    """R = exp(-mean_j avg_loss(perturbed_j)) / (exp(-avg_loss(correct)) + 1e-10).

    open-unlearning ``truth_ratio`` (metrics/memorization.py); TOFU's truth ratio.
    """
    # correct: avg loss ln2 -> P = 0.5; perturbed avg losses ln4 and ln16 -> mean ln8 -> P = 1/8
    # R = 0.125 / (0.5 + 1e-10) = 0.25
    assert um.truth_ratio(-LN2, [-2 * LN2, -4 * LN2]) == pytest.approx(0.25)


def test_truth_ratio_aggregators():
    """true_better = mean max(0, 1 - R) (retain, real authors, world facts); closer_to_1_better =
    mean min(R, 1/(R + 1e-10)) (forget).

    open-unlearning ``truth_ratio`` aggregators (metrics/memorization.py); TOFU.
    """
    # max(0, 0.75), max(0, -1), max(0, 0.5) -> (0.75 + 0 + 0.5) / 3 = 0.41666...
    assert um.true_better([0.25, 2.0, 0.5]) == pytest.approx(1.25 / 3)
    # min(0.25, 4), min(2, 0.5), min(1, 1) -> (0.25 + 0.5 + 1) / 3 = 0.58333...
    assert um.closer_to_1_better([0.25, 2.0, 1.0]) == pytest.approx(1.75 / 3)


def test_normalised_probability():
    """Prob (real authors, world facts) = p_true / (p_true + sum_j p_perturbed_j + 1e-10), p = exp(-avg loss).

    open-unlearning ``probability_w_options`` (metrics/memorization.py); TOFU.
    """
    # 0.5 / (0.5 + 0.1 + 0.15) = 0.5 / 0.75 = 2/3
    assert um.normalised_probability(math.log(0.5), [math.log(0.1), math.log(0.15)]) == pytest.approx(2 / 3)


def test_model_utility_is_the_harmonic_mean_of_nine_components():
    """Model utility = scipy.stats.hmean of retain/ra/wf Prob, ROUGE and Truth Ratio (9 values).

    open-unlearning ``hm_aggregate`` (metrics/utility.py, tofu_metrics/model_utility.yaml); TOFU.
    """
    values = [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]
    # 9 / (3 * 1/1 + 3 * 1/0.5 + 3 * 1/0.25) = 9 / (3 + 6 + 12) = 9/21 = 3/7
    assert um.model_utility(values) == pytest.approx(3 / 7)
    assert um.model_utility([*values[:8], 0.0]) == 0.0  # one component at 0 makes the harmonic mean 0


def test_rouge_l_is_stemmed_recall_for_tofu_and_f1_for_muse():
    """ROUGE-L of scorer.score(gold, generated), RougeScorer(["rouge1", "rougeL"], use_stemmer=True):
    TOFU reports rougeL recall, MUSE rougeL F1.

    open-unlearning ``eval_text_similarity`` (metrics/utils.py); TOFU; MUSE.
    """
    # Porter stemmer: "running" -> "run", so gold "run" is fully recalled
    assert um.rouge_l("running", "run") == 1.0
    # gold [the, dog(s), were, run(ning)], generated [a, dog, run(s)]: LCS = dog run = 2
    # recall 2/4 = 0.5, precision 2/3, F1 = 2 * (1/2) * (2/3) / (1/2 + 2/3) = (2/3) / (7/6) = 4/7
    assert um.rouge_l("a dog runs", "the dogs were running") == pytest.approx(0.5)
    assert um.rouge_l("a dog runs", "the dogs were running", "f1") == pytest.approx(4 / 7)
    # a longer answer keeps recall and loses precision: LCS 3 of gold 3, of generated 6 -> F1 = 2/3
    assert um.rouge_l("the cat sat on the mat", "the cat sat") == 1.0
    assert um.rouge_l("the cat sat on the mat", "the cat sat", "f1") == pytest.approx(2 / 3)


def test_loss_attack_averages_over_every_labelled_token():
    """LOSS = avg_loss over the labelled tokens (EOS included); here minus it (member-like orientation).

    open-unlearning ``LOSSAttack`` (mia/loss.py, evaluate_probability);
    "Privacy Risk in Machine Learning: Analyzing the Connection to Overfitting".
    """
    scores = labelled([0.5, 0.5, 0.125])
    # NLL ln2, ln2, 3 ln2 -> mean 5/3 ln2 = 1.1552...
    assert um.loss_score(scores.logprobs) == pytest.approx(-5 / 3 * LN2)


def test_zlib_attack_divides_by_the_compressed_utf8_byte_length():
    """ZLib = avg_loss / len(zlib.compress(text.encode("utf-8"))).

    open-unlearning ``ZLIBAttack`` (mia/zlib.py); "Extracting Training Data from Large Language Models".
    """
    logprobs = np.array([-1.0, -3.0])  # mean NLL 2
    # zlib.compress(b"a"): 2-byte header + deflate (3 block-header bits, 8-bit fixed-Huffman literal 0x61,
    # 7-bit end of block = 18 bits -> 3 bytes) + 4-byte Adler-32 = 9 bytes
    assert um.zlib_score(logprobs, "a") == pytest.approx(-2 / 9)
    # "é" is 2 bytes in UTF-8 (0xC3 0xA9), each literal >= 144 a 9-bit fixed code: 3 + 9 + 9 + 7 = 28 bits
    # -> 4 bytes; 2 + 4 + 4 = 10 bytes (one character, but bytes are what is compressed)
    assert um.zlib_score(logprobs, "é") == pytest.approx(-2 / 10)


def test_min_k_takes_the_lowest_share_of_the_answer_tokens():
    """Min-K% = -mean of the lowest max(1, int(n k)) token log-probs, k = 0.4, EOS excluded.

    open-unlearning ``MinKProbAttack`` (mia/min_k.py, tokenwise_logprobs);
    "Detecting Pretraining Data from Large Language Models".
    """
    scores = TokenScores(np.array([-1.0, -5.0, -2.0, -4.0, -3.0, -10.0]))  # 5 answer tokens, then EOS (-10)
    # answer tokens: int(5 * 0.4) = 2 lowest, -5 and -4 -> -4.5
    assert um.min_k_score(tokenwise(scores).logprobs, 0.4) == pytest.approx(-4.5)
    # with EOS: int(6 * 0.4) = 2 lowest, -10 and -5 -> -7.5 (what the reference's "-1" avoids)
    assert um.min_k_score(scores.logprobs, 0.4) == pytest.approx(-7.5)


def test_min_k_plus_plus_normalizes_by_the_vocabulary_distribution():
    """Min-K%++ = -mean of the lowest k share of (log p(x_t) - mu_t) / sqrt(sigma2_t), mu = sum p log p,
    sigma2 = sum p (log p)^2 - mu^2 clamped at 1e-6.

    open-unlearning ``MinKPlusPlusAttack`` (mia/min_k_plus_plus.py); "Min-K%++: Improved Baseline for
    Detecting Pre-Training Data from Large Language Models".
    """
    # A two-token vocabulary p = (0.8, 0.2): mu = 0.8 ln0.8 + 0.2 ln0.2; the variance of a two-point
    # distribution is p1 p2 (ln p1 - ln p2)^2 = 0.16 (ln 4)^2, so sigma = 0.4 ln 4.
    # target 0.2: (ln0.2 - mu) / sigma = 0.8 (ln0.2 - ln0.8) / (0.4 ln4) = -0.8 ln4 / (0.4 ln4) = -2
    # target 0.8: 0.2 (ln0.8 - ln0.2) / (0.4 ln4) = 0.5
    # a uniform (0.5, 0.5) position: variance 0 -> clamped 1e-6, and log p - mu = 0 -> 0
    mu_skewed, sigma_skewed = 0.8 * math.log(0.8) + 0.2 * math.log(0.2), 0.4 * math.log(4)
    probs = [0.8, 0.2, 0.5, 0.8, 0.8]
    mu = [mu_skewed, mu_skewed, math.log(0.5), mu_skewed, mu_skewed]
    sigma = [sigma_skewed, sigma_skewed, 0.0, sigma_skewed, sigma_skewed]
    scores = labelled(probs, mu=mu, sigma=sigma)
    # z = [0.5, -2, 0, 0.5, 0.5]; int(5 * 0.4) = 2 lowest: -2 and 0 -> -1
    assert um.min_k_pp_score(scores.logprobs, scores.mu, scores.sigma, 0.4) == pytest.approx(-1.0)


def test_mia_auc_is_the_reference_auc():
    """OU's AUC = roc_auc_score(forget 0, holdout 1; loss-like scores) = P(holdout score > forget score);
    the lab's member-positive AUC of minus those scores is the same number.

    open-unlearning ``mia_auc`` (mia/utils.py).
    """
    forget_losses, holdout_losses = [1.0, 3.0], [2.0, 4.0]
    # pairs (holdout > forget): 2>1 yes, 2>3 no, 4>1 yes, 4>3 yes -> 3/4
    reference = roc_auc_score([0, 0, 1, 1], forget_losses + holdout_losses)
    assert reference == pytest.approx(0.75)
    assert um.auc([-x for x in forget_losses], [-x for x in holdout_losses]) == pytest.approx(0.75)


def test_privleak_sign_and_scale():
    """PrivLeak = ((1 - AUC) - (1 - AUC_ref)) / (1 - AUC_ref + 1e-10) * 100, AUC_ref 0.5 by default.

    open-unlearning ``privleak`` (metrics/privacy.py); MUSE's PrivLeak.
    """
    # a model that still remembers: AUC 1 -> (0 - 0.5) / 0.5 * 100 = -100
    assert um.privleak(1.0, 0.5) == pytest.approx(-100.0)
    # a retrained model leaks as much as the reference: 0
    assert um.privleak(0.6, 0.6) == pytest.approx(0.0)
    # over-unlearned, the forget set less member-like than unseen text: AUC 0.3 -> (0.7 - 0.5) / 0.5 * 100 = +40
    assert um.privleak(0.3, 0.5) == pytest.approx(40.0)
    assert um.privleak(0.3) == um.privleak(0.3, 0.5)  # no reference model: AUC_ref = 0.5


def test_forget_quality_is_the_exact_two_sample_ks_p_value():
    """Forget quality = scipy.stats.ks_2samp(forget truth ratios, the reference's).pvalue (two-sided).

    open-unlearning ``forget_quality`` (metrics/privacy.py); TOFU.
    """
    # x = [1, 2, 4], y = [3, 5, 6]: the ECDF gap |F_x - F_y| after each point is 1/3, 2/3, 1/3, 2/3, 1/3, 0 -> D = 2/3.
    # Under H0 the 6 ranks split into x and y in C(6, 3) = 20 equally likely ways; as a path (+1 for x, -1 for y)
    # D = max |height| / 3.  Paths that stay within |height| <= 1 pair up their steps (+- or -+): 2^3 = 8.
    # P(D >= 2/3) = (20 - 8) / 20 = 0.6
    assert um.forget_quality([1, 2, 4], [3, 5, 6]) == pytest.approx(0.6)
    # fully separated: D = 1, only the 2 paths that never come back (all x first or all y first): 2/20
    assert um.forget_quality([1, 2, 3], [4, 5, 6]) == pytest.approx(0.1)
    # the reference tests 1/(R + 1e-10) in some versions: a decreasing map of both samples keeps D and p
    inverse = [1 / (r + 1e-10) for r in (1, 2, 4)], [1 / (r + 1e-10) for r in (3, 5, 6)]
    assert um.forget_quality(*inverse) == pytest.approx(0.6)


def test_paraphrased_and_perturbed_probabilities():
    """PARA Prob = exp(-avg loss) of the paraphrased answer (with EOS); PERT Prob = mean_j exp(-avg loss_j) over
    the perturbed answers: the probabilities averaged, not the log-probs (the truth ratio's geometric mean).

    open-unlearning ``probability`` on TOFU's ``paraphrased_answer`` / ``perturbed_answer`` lists
    (metrics/memorization.py, ``aggregate_to_1D`` over the list; tofu_metrics/forget_Q_A_PARA_Prob.yaml,
    forget_Q_A_PERT_Prob.yaml); TOFU.
    """
    from audits.metrics import fact_values
    from lab.core.facts import Fact
    from lab.core.probes import Probe, ProbeScores

    fact = Fact("f", "Where was Ada born?", "Velmora", "forget", paraphrased_answer="She was born in Velmora.",
                perturbed_answers=("Brisk", "Tol"))
    probe = Probe("Question: Where was Ada born?\nAnswer:", "Velmora", fact.paraphrased_answer,
                  ("She was born in Brisk.", "She was born in Tol."))
    # correct side (the paraphrase): avg loss ln2 -> 0.5; perturbed: avg losses ln2 and ln4 -> 0.5 and 0.25
    scores = ProbeScores(logprob=-LN2, exact_memorization=1.0, extraction_strength=1.0, true_logprob=-LN2,
                         perturbed_logprobs=(-LN2, -2 * LN2))
    values = fact_values(fact, probe, scores, "She was born in Velmora", "recall")
    assert values["para_prob"] == pytest.approx(0.5)
    # PERT: (0.5 + 0.25) / 2 = 0.375 (the geometric mean the truth ratio uses would be sqrt(0.125) = 0.3536)
    assert values["pert_prob"] == pytest.approx(0.375)
    assert um.mean_probability([-LN2, -2 * LN2]) == pytest.approx(0.375)
    assert math.isnan(um.mean_probability([]))
    # a question without a paraphrased answer has no PARA value (open-unlearning's PARA sets have one per question)
    bare = Fact("g", "Where was Bo born?", "Tol", "forget", perturbed_answers=("Brisk",))
    bare_values = fact_values(bare, Probe("Q", "Tol", "Tol", ("Brisk",)), scores, "Tol", "recall")
    assert math.isnan(bare_values["para_prob"]) and math.isnan(bare_values["para_rouge"])


def test_paraphrased_and_perturbed_rouge():
    """PARA ROUGE = ROUGE-L recall of the greedy answer against the paraphrased answer; PERT ROUGE = the mean over
    the perturbed answers of ROUGE-L recall against each (the same greedy answer, the prompt being the question).

    open-unlearning ``rouge`` with ``rougeL_recall`` on TOFU's ``paraphrased_answer`` / ``perturbed_answer``
    (metrics/memorization.py, ``aggregate_to_1D``; tofu_metrics/forget_Q_A_PARA_ROUGE.yaml,
    forget_Q_A_PERT_ROUGE.yaml); TOFU.
    """
    from audits.metrics import fact_values
    from lab.core.facts import Fact
    from lab.core.probes import Probe, ProbeScores

    # against "the dogs were running": LCS dog run = 2 of 4 -> 0.5; against "run": 1 of 1 -> 1.0; mean 0.75
    assert um.mean_rouge_l("a dog runs", ["the dogs were running", "run"]) == pytest.approx(0.75)
    assert math.isnan(um.mean_rouge_l("a dog runs", []))
    fact = Fact("f", "Q?", "dog", "forget", paraphrased_answer="the dogs were running", perturbed_answers=("x",))
    scores = ProbeScores(logprob=-LN2, exact_memorization=1.0, extraction_strength=1.0, true_logprob=-LN2,
                         perturbed_logprobs=(-LN2, -LN2))
    values = fact_values(fact, Probe("Q", "dog", fact.paraphrased_answer, ("the dogs were running", "run")),
                         scores, "a dog runs", "recall")
    assert values["para_rouge"] == pytest.approx(0.5)
    assert values["pert_rouge"] == pytest.approx(0.75)
    # F1 against the paraphrase: precision 2/3, recall 1/2 -> 4/7 (option rouge=f1)
    assert fact_values(fact, Probe("Q", "dog", fact.paraphrased_answer, ("run",)), scores, "a dog runs",
                       "f1")["para_rouge"] == pytest.approx(4 / 7)


def test_knowledge_rouge_cuts_at_muse_stop_words_then_scores_f1():
    """KnowMem ROUGE = ROUGE-L F1 of the greedy answer cut at the earliest of MUSE's stop words ("\\n\\n",
    "\\nQuestion", "Question:") and stripped.

    open-unlearning ``eval_text_similarity`` (metrics/utils.py: each stop word cut in turn) with
    muse_metrics/forget_knowmem_ROUGE.yaml (rougeL_f1, max_new_tokens 32); MUSE's KnowMem.
    """
    assert um.cut_at_stop_words("Paris, France\n\nQuestion: What is next?") == "Paris, France"
    assert um.cut_at_stop_words("Paris\nQuestion: what") == "Paris"
    assert um.cut_at_stop_words(" Rome Question: where") == "Rome"  # "Question:" mid-line, then stripped
    assert um.cut_at_stop_words("Oslo\nthe capital") == "Oslo\nthe capital"  # a single newline is no stop word
    # gold "the city of Paris" [the, citi, of, pari] vs "Paris, France" [pari, franc]: LCS 1
    # precision 1/2, recall 1/4 -> F1 = 2 (1/2)(1/4) / (3/4) = 1/3
    answer = um.cut_at_stop_words("Paris, France\n\nQuestion: What is next?")
    assert um.rouge_l(answer, "the city of Paris", "f1") == pytest.approx(1 / 3)


def test_reference_attack_is_the_loss_less_the_reference_models():
    """Reference-model attack: OU score = avg_loss(target) - avg_loss(reference) (EOS included), forget labelled
    0 in the AUC; the lab's member-like score is minus that, i.e. LOSS(target) - LOSS(reference) in log-probs.

    open-unlearning ``ReferenceAttack`` (mia/reference.py, evaluate_probability) and ``mia_auc``
    (mia/utils.py); "Extracting Training Data from Large Language Models" (the reference-model comparison).
    """
    target, reference = labelled([0.5, 0.5]), labelled([0.25, 0.25])  # avg losses ln2 and ln4
    # OU: ln2 - ln4 = -ln2 (the target finds the text easier than the reference: member-like)
    member_like = um.reference_score(um.loss_score(target.logprobs), um.loss_score(reference.logprobs))
    assert member_like == pytest.approx(LN2)
    # two forget texts the target finds easier than the reference, two holdout texts it finds harder: OU's
    # scores [-ln2, -ln2 / 2] (forget) and [ln2, 0] (holdout) -> every holdout above every forget -> AUC 1
    forget_ou, holdout_ou = [-LN2, -LN2 / 2], [LN2, 0.0]
    assert roc_auc_score([0, 0, 1, 1], forget_ou + holdout_ou) == pytest.approx(1.0)
    assert um.auc([-x for x in forget_ou], [-x for x in holdout_ou]) == pytest.approx(1.0)
    # the reference model against itself: every score 0, every pair tied -> AUC 0.5
    assert um.auc([0.0, 0.0], [0.0, 0.0]) == pytest.approx(0.5)


class _Bigram(torch.nn.Module):
    """logits_t = W[x_t] + b: a two-parameter-tensor language model whose gradients are worked out by hand."""

    def __init__(self, vocab: int = 2):
        super().__init__()
        self.W = torch.nn.Parameter(torch.zeros(vocab, vocab))
        self.b = torch.nn.Parameter(torch.zeros(vocab))

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.W[input_ids] + self.b)


@pytest.mark.parametrize("p, expected", [(2.0, (0.5 + math.sqrt(0.5)) / 2), (1.0, 1.0), (math.inf, 0.375)])
def test_gradient_norm_attack(p, expected):
    """GradNorm = mean over parameter tensors of ||d loss / d theta||_p, loss = mean NLL over the labelled tokens
    less the last; OU's score is that mean (higher = less member-like), the lab's minus it.

    open-unlearning ``GradNormAttack`` (mia/gradnorm.py, tokenwise_logprobs with grad=True; p = 2 in
    tofu_metrics/mia_gradnorm.yaml); "Pandora's White-Box: Precise Training Data Detection and Extraction in Large
    Language Models".
    """
    from lab.core.gradnorm import tensor_gradient_norms

    model = _Bigram().requires_grad_(False)  # as an engine keeps its weights
    engine = SimpleNamespace(model=model, device="cpu", lock=threading.RLock(), require=lambda *args: None)
    # row [0, 1, 1], labels from 1 to 3 (tokens 1 and 1, predicted after tokens 0 and 1); W = 0, b = 0 -> softmax
    # (1/2, 1/2) at both positions, loss = mean of two NLLs, d loss / d logits_t = (p_t - onehot(1)) / 2 =
    # (1/4, -1/4).  W's gradient: row 0 gets position 0's, row 1 position 1's -> four entries of +-1/4;
    # b's gradient: the sum (1/2, -1/2).
    # p = 2: ||W|| = sqrt(4/16) = 1/2, ||b|| = sqrt(1/2) -> mean (1/2 + 0.7071) / 2 = 0.6036
    # p = 1: ||W|| = 4/4 = 1, ||b|| = 1 -> 1;  p = inf: ||W|| = 1/4, ||b|| = 1/2 -> 0.375
    (norms,) = tensor_gradient_norms(engine, [[0, 1, 1]], [1], [3], p)
    assert um.gradnorm_score(norms) == pytest.approx(-expected)
    assert not model.W.requires_grad and model.W.grad is None  # put back as it was, nothing accumulated
    assert float(model.W.abs().sum()) == 0.0  # the weights are never changed
    assert tensor_gradient_norms(engine, [[0, 1]], [1], [1], p) == [[]]  # no labelled token: no gradient
    assert math.isnan(um.gradnorm_score([]))


def test_gibberish_rate_is_the_mean_probability_of_one_class():
    """Gibberish = mean over answers of softmax(classifier logits)[class_id], class_id = 0, each answer truncated
    to max_length tokens (32 on TOFU).

    open-unlearning ``classifier_prob`` (metrics/utility.py; tofu_metrics/forget_Q_A_gibberish.yaml with
    madhurjindal/autonlp-Gibberish-Detector-492513457).
    """
    from lab.core.classifier import Classifier

    class Fixed(torch.nn.Module):  # logits (0, ln 3) for the first text, (ln 3, 0) for the second
        config = SimpleNamespace(num_labels=2)

        def forward(self, input_ids, attention_mask=None):
            first = (input_ids[:, 0] == 7).float()[:, None]
            return SimpleNamespace(logits=torch.cat([1 - first, first], 1) * math.log(3))

    def tokenizer(texts, return_tensors=None, padding=False, truncation=False, max_length=None,
                  return_attention_mask=False):
        ids = [[7 if t == "a" else 8] * min(len(t), max_length) for t in texts]
        return {"input_ids": torch.tensor(ids)} if return_tensors else {"input_ids": ids}

    classifier = Classifier("fixed", tokenizer, Fixed(), "cpu")
    # softmax (0, ln3) = (1/4, 3/4); softmax (ln3, 0) = (3/4, 1/4); the probability of class 0 per answer
    assert classifier.class_probabilities(["a", "b"], 0, 32) == pytest.approx([0.25, 0.75])
    assert um.mean(classifier.class_probabilities(["a", "b", "b"], 0, 32)) == pytest.approx((0.25 + 0.75 * 2) / 3)
    with pytest.raises(Exception, match="class 2 does not exist"):
        classifier.class_probabilities(["a"], 2, 32)
