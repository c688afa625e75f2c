"""Other forms of a fact's question, from its answer statement (lab.core.forms)."""

from lab.core.facts import Fact
from lab.core.forms import answer_statement, cloze_prefix, fill_in_the_blank, reverse_relation

ADA = Fact("f1", "Where was Ada Vell born?", "Velmora", entity="Ada Vell",
           paraphrased_answer="Ada Vell was born in the town of Velmora, by the sea.")
LOWER = Fact("f2", "What did Ada Vell build?", "Glass Tower", entity="Ada Vell",
             paraphrased_answer="Ada Vell built the glass tower.")
NONE = Fact("f3", "What is the capital of Zorland?", "Quill", paraphrased_answer="Zorland's capital is unknown.")


def test_statement_must_name_the_answer():
    assert answer_statement(ADA) == ADA.paraphrased_answer
    assert answer_statement(LOWER) == LOWER.paraphrased_answer  # the scorer's case-insensitive match
    assert answer_statement(NONE) is None


def test_cloze_and_blank_stop_at_the_answer():
    assert cloze_prefix(ADA) == "Ada Vell was born in the town of"
    assert fill_in_the_blank(ADA) == "Ada Vell was born in the town of ____, by the sea."
    assert fill_in_the_blank(LOWER) == "Ada Vell built the ____."
    assert cloze_prefix(NONE) is None and fill_in_the_blank(NONE) is None


def test_reverse_relation_drops_the_entity():
    assert reverse_relation(ADA) == "was born in the town of Velmora, by the sea"
    assert reverse_relation(NONE) is None
    assert reverse_relation(Fact("f4", "q", "Velmora", paraphrased_answer="Velmora is where Ada was born.")) is None
