"""The standard unlearning metrics on hand-computed cases."""

import math

import numpy as np
import pytest

from lab.core import unlearning_metrics as um


def test_answer_probability_is_the_geometric_mean_token_probability():
    assert um.answer_probability(math.log(0.5)) == pytest.approx(0.5)
    # two tokens with p = 0.2 and 0.8: mean log-prob -> sqrt(0.16) = 0.4
    assert um.answer_probability(np.mean(np.log([0.2, 0.8]))) == pytest.approx(0.4)


def test_truth_ratio_uses_the_geometric_mean_of_the_perturbed_answers():
    # perturbed probs 0.1 and 0.4 -> geometric mean 0.2; true 0.5 -> R = 0.4
    assert um.truth_ratio(math.log(0.5), [math.log(0.1), math.log(0.4)]) == pytest.approx(0.4)
    assert math.isnan(um.truth_ratio(math.log(0.5), []))
    assert um.truth_ratio(-1e4, [math.log(0.5)]) == pytest.approx(0.5 / 1e-10)  # the reference's 1e-10 guard
    assert math.isnan(um.normalised_probability(math.log(0.5), []))


def test_truth_ratio_aggregators():
    assert um.closer_to_1_better([0.5, 2.0, 1.0]) == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert um.true_better([0.25, 1.5]) == pytest.approx((0.75 + 0.0) / 2)
    assert um.true_better([0.25, float("nan")]) == pytest.approx(0.75)
    assert math.isnan(um.true_better([]))


def test_exact_memorization():
    assert um.exact_memorization(np.array([True, False, True, True])) == pytest.approx(0.75)
    assert math.isnan(um.exact_memorization(np.array([], dtype=bool)))


@pytest.mark.parametrize("match, expected", [
    ([True, True, True, True], 1.0),  # k = 0: the whole answer comes out
    ([False, True, True, True], 0.75),  # k = 1
    ([True, True, False, True], 0.25),  # k = 3: an early hit does not count once a later token is missed
    ([True, True, True, False], 0.25),  # the last token missed: open-unlearning's search stops at k = n - 1 -> 1/n
    ([False, False, False, False], 0.25),  # nothing matches: also 1/n, as in the reference
])
def test_extraction_strength(match, expected):
    assert um.extraction_strength(np.array(match)) == pytest.approx(expected)


def test_loss_and_zlib_scores():
    assert um.loss_score(np.array([-1.0, -3.0])) == pytest.approx(-2.0)
    # zlib.compress(b"a") is 9 bytes (2 header + 3 deflate + 4 adler32)
    assert um.zlib_score(np.array([-1.0, -3.0]), "a") == pytest.approx(-2.0 / 9)


def test_min_k_takes_the_lowest_share():
    logprobs = np.array([-1.0, -5.0, -2.0, -4.0, -3.0])
    assert um.min_k_score(logprobs, 0.4) == pytest.approx(-4.5)  # int(5 * 0.4) = 2 lowest: -5, -4
    assert um.min_k_score(logprobs, 0.1) == pytest.approx(-5.0)  # at least one token
    assert um.min_k_score(np.array([]), 0.4) == 0.0  # no token left: the reference scores 0


def test_min_k_pp_normalizes_by_the_vocabulary_distribution():
    logprobs, mu, sigma = np.array([-1.0, -2.0]), np.array([-1.5, -1.5]), np.array([0.5, 1.0])
    # z = [(-1 + 1.5) / 0.5, (-2 + 1.5) / 1] = [1, -0.5]
    assert um.min_k_pp_score(logprobs, mu, sigma, 0.5) == pytest.approx(-0.5)
    assert um.min_k_pp_score(logprobs, mu, sigma, 1.0) == pytest.approx(0.25)
    # a zero-variance position is clamped (variance 1e-6, std 1e-3) instead of dividing by zero
    assert um.min_k_pp_score(np.array([-1.0]), np.array([-1.001]), np.array([0.0]), 1.0) == pytest.approx(1.0)


def test_auc_counts_ordered_pairs():
    # members 3, 2; non-members 1, 2.5: 3 of the 4 pairs are ordered right
    assert um.auc([3, 2], [1, 2.5]) == pytest.approx(0.75)
    assert um.auc([1], [1]) == pytest.approx(0.5)
    assert math.isnan(um.auc([], [1]))
    points = um.roc_points([3, 2], [1, 2.5])
    assert points["fpr"][0] == 0 and points["tpr"][-1] == 1


def test_privleak_is_relative_to_the_reference_auc():
    # MUSE's sign and scale, in percent: ((1 - 0.75) - (1 - 0.5)) / (1 - 0.5) * 100 = -50
    assert um.privleak(0.75, 0.5) == pytest.approx(-50.0)
    assert um.privleak(0.5, 0.5) == 0.0
    assert um.privleak(0.75) == pytest.approx(-50.0)  # no reference: AUC_ref = 0.5


def test_forget_quality_is_the_ks_p_value():
    assert um.forget_quality([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    # fully separated samples of 5 and 5: exact p = 2 / C(10, 5)
    assert um.forget_quality([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == pytest.approx(2 / 252)
    assert math.isnan(um.forget_quality([], [1.0]))


def test_model_utility_is_a_harmonic_mean():
    assert um.model_utility([0.5, 1.0]) == pytest.approx(2 / 3)
    assert um.model_utility([0.0, 1.0]) == 0.0
    assert math.isnan(um.model_utility([float("nan"), 1.0]))


def test_mean_skips_missing_values():
    assert um.mean([1.0, float("nan"), 3.0, None]) == pytest.approx(2.0)
    assert math.isnan(um.mean([]))
