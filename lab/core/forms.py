"""Other forms of a fact's question, derived from its answer statement.

Several attacks ask for a fact in another shape: a sentence to complete
(cloze), a blank to fill, the relation asked backwards (a reverse query, as in
RWKU's level-3 probes and PSG's surrogates).  They all start from the fact's
*answer statement*: its paraphrased answer when that holds the answer
verbatim (TOFU-style data, RWKU, the demo).  Each function returns None when
the fact has no usable statement.
"""

from __future__ import annotations

from lab.core.facts import Fact
from lab.core.scoring import contains_answer, cut_before_answer


def answer_statement(fact: Fact) -> str | None:
    """The fact as a statement that names the answer, when the data has one."""
    statement = fact.paraphrased_answer.strip()
    return statement if fact.answer and statement and contains_answer(statement, fact.answer) else None


def cloze_prefix(fact: Fact) -> str | None:
    """The answer statement cut right before the answer: a sentence to complete."""
    statement = answer_statement(fact)
    return cut_before_answer(statement, fact.answer) if statement else None


def fill_in_the_blank(fact: Fact) -> str | None:
    """The answer statement with the answer replaced by a blank."""
    statement, prefix = answer_statement(fact), cloze_prefix(fact)
    if not statement or not prefix:
        return None
    rest = statement[len(prefix):].lstrip()
    return f"{prefix} ____{rest[len(fact.answer):]}" if rest.lower().startswith(fact.answer.lower()) else None


def reverse_relation(fact: Fact) -> str | None:
    """What the statement says of the entity, without the entity ("was born in the town of Velmora"):
    the relation a reverse query asks about, whose answer is the entity."""
    statement = answer_statement(fact)
    if not fact.entity or not statement or not statement.startswith(fact.entity):
        return None
    rest = statement[len(fact.entity):].strip().rstrip(" .")
    return rest or None
