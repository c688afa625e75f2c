"""Multiple choice warns when its accuracy can come from a letter rather than from knowledge."""

from __future__ import annotations

from audits.multiple_choice import Choices, dominant, skew_notes
from lab.core.facts import Fact


def mc(fact_id: str, answer_index: int, split: str = "retain") -> Fact:
    choices = ("w", "x", "y", "z")
    return Fact(fact_id, "Which?", choices[answer_index], split=split, kind="mc", choices=choices,
                answer_index=answer_index)


def picks(*letters: int) -> list[Choices]:
    return [Choices([1.0 if j == letter else 0.0 for j in range(4)]) for letter in letters]


def test_a_letter_is_dominant_at_half_and_twice_its_chance_share():
    assert dominant([2, 2, 2], 4) == (2, 3)
    assert dominant([0, 0, 1, 2], 4) == (0, 2)  # half of the questions, twice 1/4
    assert dominant([0, 1, 2, 3, 0], 4) is None  # 40%
    assert dominant([0, 0, 1, 1], 2) is None  # two choices: only one letter always is skewed
    assert dominant([1], 4) is None  # one question says nothing


def test_unbalanced_gold_and_one_letter_picks_are_warned_per_split():
    facts = [mc("a", 2), mc("b", 2), mc("c", 2), mc("d", 0, "forget"), mc("e", 1, "forget"), mc("f", 3, "forget")]
    notes = skew_notes(facts, {"base": picks(2, 2, 2, 0, 1, 3), "unlearned": picks(1, 2, 3, 1, 1, 1)})
    assert notes == [
        "forget: the unlearned model picks B for 3 of 3 questions: its accuracy there reflects a preference for that "
        "letter as much as knowledge",
        "retain: the gold answers are unbalanced: C is right in 3 of 3 questions, so a model that always picks C "
        "scores 100% (chance is 25% per question)",
        "retain: the base model picks C for 3 of 3 questions: its accuracy there reflects a preference for that "
        "letter as much as knowledge"]
