"""The shared answer scorer."""

import math

from lab.core.scoring import contains_answer, normalize, rate, rouge_l_recall, score_answer


def test_normalize():
    assert normalize("  The  Amber, Lantern! ") == "amber lantern"


def test_containment_is_whole_word():
    assert contains_answer("He was born in Velmora.", "velmora")
    assert not contains_answer("He was born in Velmorania.", "Velmora")
    assert contains_answer("the year 1873, I think", "1873")
    assert not contains_answer("18730", "1873")
    assert not contains_answer("anything", "")


def test_rouge_l_recall_by_hand():
    # gold "ida rusk mole" (3 tokens), output shares the subsequence "ida mole" -> recall 2/3
    assert math.isclose(rouge_l_recall("ida was a mole", "Ida Rusk Mole"), 2 / 3)
    assert rouge_l_recall("", "x") == 0.0


def test_hit_rule():
    assert score_answer("Velmora", "Velmora").hit
    long_gold = "she worked as a glassblower in the old harbor town"
    paraphrase = "she worked as a glassblower in the harbor town"  # ROUGE-L recall 9/10
    assert not contains_answer(paraphrase, long_gold)
    assert score_answer(paraphrase, long_gold).hit
    assert not score_answer("Orla Mirth", "Orla Venn").hit  # recall 0.5 < 0.7


def test_rate():
    assert rate([True, False, True, True]) == 0.75
    assert math.isnan(rate([]))
