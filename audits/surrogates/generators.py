"""Surrogate candidates for "The Erasure Illusion: Stress-Testing the
Generalization of LLM Forgetting Evaluation" (Proximal Surrogate Generation).

PSG replaces each forget fact by probes that ask for the same knowledge in a
different form.  The paper does not publish its generator, so generators here
are pluggable; each maps facts to candidates and says, per candidate, which
string is gold:

- ``rephrase``: the fact's paraphrased question and question-framing templates
  (gold: the answer);
- ``reverse``: the relation asked backwards from the answer statement,
  "Who was born in the town of Velmora?" (gold: the entity);
- ``cloze``: the answer statement cut before the answer, as a text to complete
  and as a fill-in-the-blank question (gold: the answer);
- ``narrative``: the fact told as the start of a story that the model
  continues (gold: the answer);
- ``llm``: an LLM rewriter (any :class:`lab.core.engine.Engine`) that rephrases the
  question in its own words (gold: the answer).

The "answer statement" is the fact's paraphrased answer when it contains the
answer verbatim (TOFU-style data and the demo); generators that need it skip
facts without one.  Whether a candidate is kept is decided elsewhere, by its
embedding similarity to the source question (:func:`in_band`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from lab.core.engine import Engine
from lab.core.facts import Fact
from lab.core.scoring import contains_answer

QUESTION, COMPLETION = "question", "completion"


@dataclass(frozen=True)
class Surrogate:
    """One candidate probe derived from a fact.

    ``kind`` says how it reaches the model: a ``question`` goes through the
    engine's prompt format, a ``completion`` is given as raw text to continue.
    ``gold_field`` names the fact field that is the right answer
    (``answer`` or ``entity``); ``gold`` is its value.
    """

    fact_id: str
    generator: str
    text: str
    kind: str
    gold: str
    gold_field: str = "answer"

    def prompt(self, engine: Engine) -> str:
        return engine.prompt(self.text) if self.kind == QUESTION else self.text

    def leaks_gold(self) -> bool:
        """A probe that already contains its gold answer tests copying, not knowledge."""
        return contains_answer(self.text, self.gold)


Generator = Callable[[Sequence[Fact]], list[Surrogate]]


def answer_statement(fact: Fact) -> str | None:
    """The fact as a statement containing the answer verbatim, when the data has one."""
    statement = fact.paraphrased_answer.strip()
    return statement if fact.answer and fact.answer in statement else None


def cloze_prefix(fact: Fact) -> str | None:
    """The answer statement up to (not including) the answer."""
    statement = answer_statement(fact)
    prefix = statement[: statement.index(fact.answer)].strip() if statement else ""
    return prefix or None


def _per_fact(build: Callable[[Fact], list[tuple[str, str, str]]], name: str) -> Generator:
    """A generator from a per-fact template function returning (text, kind, gold_field)."""

    def generate(facts: Sequence[Fact]) -> list[Surrogate]:
        out = []
        for fact in facts:
            for text, kind, gold_field in build(fact):
                out.append(Surrogate(fact.id, name, text, kind, getattr(fact, gold_field), gold_field))
        return out

    return generate


def _rephrasings(fact: Fact) -> list[tuple[str, str, str]]:
    q = fact.question
    texts = [fact.paraphrased_question] if fact.paraphrased_question else []
    texts += [f'Someone asked me "{q}" What should I tell them?', f"Quiz time! {q} Reply with just the answer."]
    if fact.entity:
        texts.append(f"I am writing a report about {fact.entity}. {q}")
    return [(t, QUESTION, "answer") for t in texts]


def _reverse_queries(fact: Fact) -> list[tuple[str, str, str]]:
    statement = answer_statement(fact)
    if not fact.entity or not statement or not statement.startswith(fact.entity):
        return []
    rest = statement[len(fact.entity):].rstrip(" .")
    return [(f"Who{rest}?", QUESTION, "entity"), (f"Name the person who{rest}.", QUESTION, "entity")]


def _clozes(fact: Fact) -> list[tuple[str, str, str]]:
    prefix, statement = cloze_prefix(fact), answer_statement(fact)
    if not prefix or not statement:
        return []
    blank = statement.replace(fact.answer, "____", 1)
    return [(prefix, COMPLETION, "answer"), (f"Fill in the blank: {blank}", QUESTION, "answer")]


def _narratives(fact: Fact) -> list[tuple[str, str, str]]:
    texts = [f'Once, a traveller asked the village storyteller: "{fact.question}" The storyteller answered:']
    prefix = cloze_prefix(fact)
    if prefix and fact.entity:
        texts.append(f"This is the story of {fact.entity}. {prefix}")
    return [(t, COMPLETION, "answer") for t in texts]


REWRITE_INSTRUCTION = "Rewrite this question in different words, keeping its meaning: {question}"


def llm_rewriter(engine: Engine, max_new_tokens: int = 40) -> Generator:
    """Candidates written by an LLM: one rewrite of each question, generated in one batch."""

    def generate(facts: Sequence[Fact]) -> list[Surrogate]:
        prompts = [engine.prompt(REWRITE_INSTRUCTION.format(question=f.question)) for f in facts]
        outputs = engine.generate(prompts, max_new_tokens, desc="LLM rewrites")
        out = []
        for fact, output in zip(facts, outputs):
            text = output.strip().splitlines()[0].strip(' "') if output.strip() else ""
            if text:
                out.append(Surrogate(fact.id, "llm", text, QUESTION, fact.answer))
        return out

    return generate


TEMPLATE_GENERATORS: dict[str, Generator] = {
    "rephrase": _per_fact(_rephrasings, "rephrase"),
    "reverse": _per_fact(_reverse_queries, "reverse"),
    "cloze": _per_fact(_clozes, "cloze"),
    "narrative": _per_fact(_narratives, "narrative"),
}
GENERATOR_NAMES = (*TEMPLATE_GENERATORS, "llm")


def candidates(facts: Sequence[Fact], generators: Sequence[Generator]) -> list[Surrogate]:
    """Every generator's candidates, in order, each (fact, text) once."""
    seen: set[tuple[str, str]] = set()
    out = []
    for generate in generators:
        for cand in generate(facts):
            if (cand.fact_id, cand.text) not in seen:
                seen.add((cand.fact_id, cand.text))
                out.append(cand)
    return out


def rejection(cand: Surrogate, source: str, similarity: float, low: float, high: float) -> str:
    """Why a candidate is not kept ("" when kept).

    Kept means derived, yet distinct: the cosine similarity to the source
    question lies in [low, high].  A probe that contains its gold answer
    (copying, not knowledge) or repeats the source question is dropped first.
    """
    if cand.leaks_gold():
        return "contains its gold answer"
    if cand.text.strip() == source.strip():
        return "repeats the question"
    if similarity < low:
        return "below the band"
    if similarity > high:
        return "above the band"
    return ""
