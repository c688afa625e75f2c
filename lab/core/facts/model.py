"""Facts: the one record type every audit consumes.

A fact is one item of a forget, retain or holdout set, of one of four kinds:

- ``qa``: a question and its gold answer, with what the standard benchmarks
  carry beside it (TOFU's paraphrased and perturbed answers, RWKU's subject,
  probe level and type);
- ``mc``: a multiple-choice question (``choices``, ``answer_index``; ``answer``
  is the right choice's text), scored from the choices' log-likelihoods as
  lm-evaluation-harness scores WMDP;
- ``continuation``: a prompt and its gold continuation (MUSE's VerbMem: how
  much of a passage the model still reproduces); ``question`` holds the
  prompt, ``answer`` the continuation;
- ``text``: a raw text in ``text`` (membership inference; MUSE's privleak
  and raw sets, RWKU's MIA passages).

``subset`` names where a fact came from inside a suite (``forget10``,
``real_authors``, ``verbmem``, ``forget_level3``, ...), so metrics can pick
what they need (TOFU's model utility reads ``real_authors`` and
``world_facts``).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

from lab.core.errors import LabError

SPLITS = ("forget", "retain", "holdout")
TRAINED_SPLITS = ("forget", "retain")  # what the base model was trained on: where answers are checked
KINDS = ("qa", "mc", "continuation", "text")
Kind = Literal["qa", "mc", "continuation", "text"]


@dataclass(frozen=True)
class Fact:
    """One item of a fact set (see the module docstring for the kinds)."""

    id: str
    question: str
    answer: str
    split: str = "forget"
    entity: str = ""
    paraphrased_question: str = ""
    paraphrased_answer: str = ""
    perturbed_answers: tuple[str, ...] = ()
    text: str = ""
    attribute: str = ""
    kind: str = "qa"
    choices: tuple[str, ...] = ()
    answer_index: int | None = None
    subset: str = ""
    level: str = ""
    probe_type: str = ""

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["perturbed_answers"] = list(self.perturbed_answers)
        row["choices"] = list(self.choices)
        return row


@dataclass
class FactSet:
    """An ordered list of facts with its provenance (source, content hash, suite)."""

    facts: list[Fact]
    source: str = ""
    sha256: str = ""
    warnings: list[str] = field(default_factory=list)
    suite: str = ""  # tofu | muse | rwku | wmdp, or "" for a plain file
    # Few-shot examples a suite ships for prompting (MUSE's knowmem ICL): subset -> [(question, answer)].
    examples: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.facts)

    def __iter__(self) -> Iterator[Fact]:
        return iter(self.facts)

    def with_facts(self, facts: list[Fact]) -> "FactSet":
        """The same provenance around other facts (a filtered view)."""
        return FactSet(facts, self.source, self.sha256, list(self.warnings), self.suite, self.examples)

    def split(self, name: str) -> list[Fact]:
        return [f for f in self.facts if f.split == name]

    def of_kinds(self, kinds: Iterable[str]) -> "FactSet":
        wanted = set(kinds)
        return self.with_facts([f for f in self.facts if f.kind in wanted])

    def counts(self) -> dict[str, int]:
        counts = Counter(f.split for f in self.facts)
        return {s: counts.get(s, 0) for s in SPLITS}

    def breakdown(self) -> dict[str, dict[str, int]]:
        """Items per kind and split: what a loaded suite holds."""
        counts = Counter((f.kind, f.split) for f in self.facts)
        kinds = [k for k in KINDS if any(kind == k for kind, _ in counts)]
        return {k: {s: counts.get((k, s), 0) for s in SPLITS} for k in kinds}

    def subsets(self) -> dict[str, int]:
        return dict(Counter(f.subset or "(file)" for f in self.facts))

    def by_entity(self) -> dict[str, list[Fact]]:
        groups: dict[str, list[Fact]] = {}
        for fact in self.facts:
            groups.setdefault(fact.entity, []).append(fact)
        return groups

    def limited(self, per_split: int | None) -> "FactSet":
        """At most ``per_split`` facts of each split and kind, in file order."""
        if per_split is None:
            return self
        check_limit(per_split)
        seen: Counter[tuple[str, str]] = Counter()
        kept = []
        for fact in self.facts:
            key = (fact.split, fact.kind)
            if seen[key] < per_split:
                kept.append(fact)
                seen[key] += 1
        return self.with_facts(kept)


def check_limit(per_split: int) -> None:
    if per_split < 1:
        raise LabError(f"--limit must be at least 1, got {per_split}")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def combined_sha256(hashes: Iterable[str]) -> str:
    """One hash for a suite made of several files (their hashes in reading order)."""
    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()
