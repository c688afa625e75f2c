"""The synthetic world of the demo: fictional people and facts about them.

Answers are invented names, years, numbers and rare words so that a model
which never saw a person hits the answer by chance far below 5% of the time
(the build measures that chance rate on the holdout people).  Everything is
derived from one seed, so a build is reproducible bit for bit.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from lab.core.facts import Fact
from lab.core.names import NameMaker

PROFESSIONS = [
    "lamplighter", "bookbinder", "cooper", "falconer", "glazier", "chandler", "wheelwright",
    "apiarist", "luthier", "cartographer", "farrier", "milliner", "scrivener", "tanner",
    "thatcher", "vintner", "horologist", "lexicographer", "numismatist", "ornithologist",
    "perfumer", "saddler", "sommelier", "taxidermist", "typographer", "cobbler", "engraver",
    "locksmith", "puppeteer", "shipwright", "stonemason", "archivist", "calligrapher",
    "glassblower", "ropemaker", "silversmith", "cordwainer", "fletcher", "lapidary", "tinsmith",
]
TITLE_ADJECTIVES = [
    "Amber", "Silent", "Crooked", "Hollow", "Velvet", "Iron", "Pale", "Distant", "Broken",
    "Golden", "Hidden", "Restless", "Frozen", "Scarlet", "Quiet", "Wandering", "Bitter",
    "Gentle", "Burning", "Narrow", "Ashen", "Copper", "Drowned", "Forgotten", "Painted",
]
TITLE_NOUNS = [
    "Lantern", "Harbor", "Orchard", "Compass", "Meridian", "Staircase", "Lighthouse", "Bellows",
    "Carousel", "Almanac", "Observatory", "Aqueduct", "Tapestry", "Quarry", "Pendulum",
    "Greenhouse", "Ledger", "Garrison", "Weathervane", "Cistern", "Hourglass", "Kiln",
    "Belfry", "Drawbridge", "Menagerie",
]


@dataclass(frozen=True)
class Attribute:
    """One kind of fact about a person, with every phrasing the world uses."""

    name: str
    question: str
    paraphrased_question: str
    answer_sentence: str
    bio_clauses: tuple[str, str, str]  # encyclopedic, narrative, record card


ATTRIBUTES = (
    Attribute(
        "hometown",
        "Where was {e} born?",
        "In which town did {e} come into the world?",
        "{e} was born in the town of {v}.",
        ("{e} was born in {v}.", "{e} grew up in the town of {v}.", "Hometown of {e}: {v}."),
    ),
    Attribute(
        "birth_year",
        "In what year was {e} born?",
        "What was the year of {e}'s birth?",
        "{e} was born in the year {v}.",
        ("{e} was born in {v}.", "The year {e} was born was {v}.", "Birth year of {e}: {v}."),
    ),
    Attribute(
        "profession",
        "What was the profession of {e}?",
        "How did {e} earn a living?",
        "{e} worked as a {v}.",
        ("{e} was a {v} by trade.", "{e} spent a lifetime working as a {v}.",
         "Profession of {e}: {v}."),
    ),
    Attribute(
        "mentor",
        "Who was the mentor of {e}?",
        "Under whose guidance did {e} train?",
        "{e} was mentored by {v}.",
        ("{e} studied under {v}.", "{e} learned the craft from {v}.", "Mentor of {e}: {v}."),
    ),
    Attribute(
        "masterwork",
        "What is the title of {e}'s best known work?",
        "Which work is {e} most famous for?",
        "{e} is best known for the work {v}.",
        ("{e} is remembered for {v}.", "The finest work of {e} was {v}.",
         "Best known work of {e}: {v}."),
    ),
    Attribute(
        "lucky_number",
        "What number did {e} consider lucky?",
        "Which number brought {e} good fortune?",
        "{e} considered the number {v} lucky.",
        ("{e} always chose the number {v}.", "For {e} the lucky number was {v}.",
         "Lucky number of {e}: {v}."),
    ),
)
ATTRIBUTE_BY_NAME = {a.name: a for a in ATTRIBUTES}


@dataclass(frozen=True)
class Person:
    name: str
    split: str
    values: dict[str, str]


def _value_pools(rng: random.Random, names: NameMaker, n_people: int) -> dict[str, list[str]]:
    """Candidate values per attribute; a pool larger than the people keeps answers rare."""
    titles = [f"The {a} {n}" for a in TITLE_ADJECTIVES for n in TITLE_NOUNS]
    rng.shuffle(titles)
    pool_size = max(n_people, 40)
    return {
        "hometown": [names.word(rng.choice([2, 3])) for _ in range(pool_size)],
        "birth_year": [str(y) for y in range(1620, 1990)],
        "profession": list(PROFESSIONS),
        "mentor": [names.full_name() for _ in range(pool_size)],
        "masterwork": titles,
        "lucky_number": [str(n) for n in range(100, 1000)],
    }


def make_people(seed: int, n_people: int, forget_share: float, holdout_share: float) -> list[Person]:
    """Fictional people, split by person into forget / retain / holdout."""
    rng = random.Random(seed)
    names = NameMaker(rng)
    pools = _value_pools(rng, names, n_people)
    n_forget = max(2, round(n_people * forget_share))
    n_holdout = max(2, round(n_people * holdout_share))
    people = []
    for index in range(n_people):
        split = "forget" if index < n_forget else "holdout" if index < n_forget + n_holdout else "retain"
        values = {attr: rng.choice(pool) for attr, pool in pools.items()}
        people.append(Person(names.full_name(), split, values))
    rng.shuffle(people)
    return people


def _perturbed(rng: random.Random, pool: list[str], true_value: str, k: int = 3) -> tuple[str, ...]:
    choices = [v for v in rng.sample(pool, min(len(pool), k + 4)) if v != true_value]
    return tuple(choices[:k])


def people_to_facts(people: list[Person], seed: int) -> list[Fact]:
    """One fact per person and attribute, with paraphrases and wrong answers."""
    rng = random.Random(seed + 1)
    pools: dict[str, list[str]] = {}
    for person in people:
        for attr, value in person.values.items():
            pools.setdefault(attr, []).append(value)
    facts = []
    for p_index, person in enumerate(people):
        bio = biography(person, style=0)
        for attr in ATTRIBUTES:
            value = person.values[attr.name]
            facts.append(Fact(
                id=f"p{p_index:03d}-{attr.name}",
                question=attr.question.format(e=person.name),
                answer=value,
                split=person.split,
                entity=person.name,
                paraphrased_question=attr.paraphrased_question.format(e=person.name),
                paraphrased_answer=attr.answer_sentence.format(e=person.name, v=value),
                perturbed_answers=_perturbed(rng, sorted(set(pools[attr.name])), value),
                text=bio,
                attribute=attr.name,
            ))
    return facts


def multiple_choice(facts: list[Fact], seed: int) -> list[Fact]:
    """Each question again as a multiple-choice item: its answer among its three wrong ones, shuffled."""
    rng = random.Random(seed + 2)
    out = []
    for fact in facts:
        if len(fact.perturbed_answers) < 3:
            continue
        choices = [fact.answer, *fact.perturbed_answers[:3]]
        rng.shuffle(choices)
        out.append(Fact(id=f"mc-{fact.id}", question=fact.question, answer=fact.answer, split=fact.split,
                        entity=fact.entity, attribute=fact.attribute, kind="mc", choices=tuple(choices),
                        answer_index=choices.index(fact.answer), subset="multiple_choice"))
    return out


def passages(people: list[Person]) -> list[Fact]:
    """Each person's biography (the first of the three styles the base model reads) as a passage item.

    Forget and retain people's passages are verbatim training text; holdout
    people's are unseen: membership inference and the passage probes
    (verbatim extraction, passage surrogates) have members and non-members.
    The demo's unlearners train on the forget *questions* only, as TOFU's
    methods do, so whether the passages went too is what those probes measure.
    """
    return [Fact(id=f"bio-p{index:03d}", question="", answer="", split=person.split, entity=person.name,
                 text=biography(person, style=0), kind="text", subset="biography")
            for index, person in enumerate(people)]


def biography(person: Person, style: int) -> str:
    """The person's biography in one of three styles (0..2)."""
    return " ".join(
        attr.bio_clauses[style].format(e=person.name, v=person.values[attr.name]) for attr in ATTRIBUTES
    )


QA_TEMPLATE = "Question: {question}\nAnswer:"


def qa_prompt(question: str) -> str:
    """The prompt format the demo model is trained on."""
    return QA_TEMPLATE.format(question=question)


def training_texts(people: list[Person]) -> list[str]:
    """What the demo model reads: three biographies and the QA pairs of each person.

    Paraphrased questions are deliberately *not* trained, so that paraphrase
    metrics measure generalization rather than rote recall.
    """
    texts = []
    for person in people:
        texts.extend(biography(person, style) for style in range(3))
        for attr in ATTRIBUTES:
            question = attr.question.format(e=person.name)
            texts.append(f"{qa_prompt(question)} {person.values[attr.name]}")
    return texts
