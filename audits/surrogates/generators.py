"""Surrogate candidates for "The Erasure Illusion: Stress-Testing the
Generalization of LLM Forgetting Evaluation" (Proximal Surrogate Generation).

PSG replaces each forget item by probes that ask for the same knowledge in a
different form.  The paper does not publish its generator, so generators here
are pluggable; each maps facts to candidates and says, per candidate, which
string is gold.  An item's *source* is its plain probe (:func:`source_of`): a
question, or for passage items (MUSE's VerbMem continuations, raw texts) the
passage's opening, whose gold is the continuation.

- ``llm``: an LLM rewriter (any :class:`lab.core.engine.Engine`, the base
  model by default) rewrites the source in its own words, several samples per
  item: the audit's default, as in the paper;
- ``rephrase``: the fact's paraphrased question and question-framing templates
  (gold: the answer);
- ``reverse``: the relation asked backwards from the answer statement,
  "Who was born in the town of Velmora?" (gold: the entity);
- ``cloze``: the answer statement cut before the answer, as a text to complete
  and as a fill-in-the-blank question (gold: the answer);
- ``narrative``: the fact told as the start of a story that the model
  continues (gold: the answer);
- ``passage``: a passage's opening asked as an instruction, or started one,
  two, ... sentences later (gold: the continuation).

Reverse queries, clozes and blanks come from the fact's answer statement
(:mod:`lab.core.forms`); generators that need one skip facts without it.  Whether a candidate is kept is decided by the audit, by
its embedding similarity to the source (:func:`rejection`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

from lab.core.backend import Backend
from lab.core.facts import Fact
from lab.core.forms import cloze_prefix, fill_in_the_blank, reverse_relation
from lab.core.probes import passage_parts
from lab.core.scoring import contains_answer

QUESTION, COMPLETION = "question", "completion"


@dataclass(frozen=True)
class Source:
    """An item's plain probe: the text surrogates derive from, how it reaches the model, and its gold."""

    text: str
    kind: str
    gold: str
    gold_field: str


def source_of(fact: Fact) -> Source | None:
    """A question item's question (gold: the answer), a passage item's opening (gold: the continuation)."""
    if fact.kind == "qa":
        return Source(fact.question, QUESTION, fact.answer, "answer")
    parts = passage_parts(fact)
    return Source(parts[0], COMPLETION, parts[1], "continuation") if parts else None


@dataclass(frozen=True)
class Surrogate:
    """One candidate probe derived from an item.

    ``kind`` says how it reaches the model: a ``question`` goes through the
    engine's prompt format, a ``completion`` is given as raw text to continue.
    ``gold_field`` names what the right answer is (``answer``, ``entity`` or a
    passage's ``continuation``); ``gold`` is its value.
    """

    fact_id: str
    generator: str
    text: str
    kind: str
    gold: str
    gold_field: str = "answer"

    def prompt(self, engine: Backend) -> str:
        return engine.prompt(self.text) if self.kind == QUESTION else self.text

    def leaks_gold(self) -> bool:
        """A probe that already contains its gold answer tests copying, not knowledge."""
        return contains_answer(self.text, self.gold)


Generator = Callable[[Sequence[Fact]], list[Surrogate]]


def _per_fact(build: Callable[[Fact, Source], list[tuple[str, str, str]]], name: str, kinds: tuple[str, ...]
              ) -> Generator:
    """A generator from a per-item template function returning (text, kind, gold_field) for items of ``kinds``."""

    def generate(facts: Sequence[Fact]) -> list[Surrogate]:
        out = []
        for fact in facts:
            source = source_of(fact)
            if fact.kind not in kinds or source is None:
                continue
            for text, kind, gold_field in build(fact, source):
                gold = source.gold if gold_field == source.gold_field else getattr(fact, gold_field)
                out.append(Surrogate(fact.id, name, text, kind, gold, gold_field))
        return out

    return generate


def _rephrasings(fact: Fact, source: Source) -> list[tuple[str, str, str]]:
    q = fact.question
    texts = [fact.paraphrased_question] if fact.paraphrased_question else []
    texts += [f'Someone asked me "{q}" What should I tell them?', f"Quiz time! {q} Reply with just the answer."]
    if fact.entity:
        texts.append(f"I am writing a report about {fact.entity}. {q}")
    return [(t, QUESTION, "answer") for t in texts]


def _reverse_queries(fact: Fact, source: Source) -> list[tuple[str, str, str]]:
    relation = reverse_relation(fact)
    if not relation:
        return []
    return [(f"Who {relation}?", QUESTION, "entity"), (f"Name the person who {relation}.", QUESTION, "entity")]


def _clozes(fact: Fact, source: Source) -> list[tuple[str, str, str]]:
    prefix, blank = cloze_prefix(fact), fill_in_the_blank(fact)
    out = [(prefix, COMPLETION, "answer")] if prefix else []
    return out + ([(f"Fill in the blank: {blank}", QUESTION, "answer")] if blank else [])


def _narratives(fact: Fact, source: Source) -> list[tuple[str, str, str]]:
    texts = [f'Once, a traveller asked the village storyteller: "{fact.question}" The storyteller answered:']
    prefix = cloze_prefix(fact)
    if prefix and fact.entity:
        texts.append(f"This is the story of {fact.entity}. {prefix}")
    return [(t, COMPLETION, "answer") for t in texts]


def _passage_forms(fact: Fact, source: Source) -> list[tuple[str, str, str]]:
    forms = [(f"Continue the following text: {source.text}", QUESTION, "continuation")]
    sentences = re.split(r"(?<=[.!?])\s+", source.text.strip())
    for start in range(1, len(sentences)):  # the opening started one, two, ... sentences later
        forms.append((" ".join(sentences[start:]), COMPLETION, "continuation"))
    return forms


REWRITE_INSTRUCTIONS = {
    QUESTION: "Rewrite this question in different words, keeping its meaning: {text}",
    COMPLETION: "Rewrite this text in different words, keeping its meaning: {text}",
}


def rewritten(output: str, kind: str) -> str:
    """A rewrite read from an LLM's output: a question's first line, a passage's text with spaces collapsed."""
    text = output.strip()
    if kind == QUESTION:
        return text.splitlines()[0].strip(' "') if text else ""
    return " ".join(text.split())


def llm_rewriter(engine: Backend, max_new_tokens: int = 48, samples: int = 1, temperature: float = 0.8,
                 seed: int = 0) -> Generator:
    """Candidates written by an LLM: ``samples`` rewrites of each item's source, generated in one batch.

    One sample is greedy; several are sampled at ``temperature`` (seeded), the
    similarity band then keeping those derived yet distinct, as PSG's
    rejection rule.
    """

    def generate(facts: Sequence[Fact]) -> list[Surrogate]:
        slots = [(fact, source) for fact in facts if (source := source_of(fact)) is not None]
        prompts = [engine.prompt(REWRITE_INSTRUCTIONS[s.kind].format(text=s.text)) for _, s in slots]
        outputs = engine.generate([p for p in prompts for _ in range(samples)], max_new_tokens,
                                  desc="LLM rewrites", temperature=temperature if samples > 1 else 0.0, seed=seed)
        out = []
        for (fact, source), output in zip([slot for slot in slots for _ in range(samples)], outputs):
            text = rewritten(output, source.kind)
            if text:
                out.append(Surrogate(fact.id, "llm", text, source.kind, source.gold, source.gold_field))
        return out

    return generate


TEMPLATE_GENERATORS: dict[str, Generator] = {
    "rephrase": _per_fact(_rephrasings, "rephrase", ("qa",)),
    "reverse": _per_fact(_reverse_queries, "reverse", ("qa",)),
    "cloze": _per_fact(_clozes, "cloze", ("qa",)),
    "narrative": _per_fact(_narratives, "narrative", ("qa",)),
    "passage": _per_fact(_passage_forms, "passage", ("continuation", "text")),
}


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
    lies in [low, high].  A probe that contains its gold answer (copying, not
    knowledge) or repeats the source is dropped first.
    """
    if cand.leaks_gold():
        return "contains its gold answer"
    if cand.text.strip() == source.strip():
        return "repeats the source"
    if similarity < low:
        return "below the band"
    if similarity > high:
        return "above the band"
    return ""
