"""Facts: the record every audit consumes (:mod:`.model`), read from any schema (:mod:`.rows`), from
files streamed row by row (:mod:`.readers`) or from whole benchmark suites (:mod:`.suites`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from lab.core.facts.model import KINDS, SPLITS, TRAINED_SPLITS, Fact, FactSet, file_sha256
from lab.core.facts.readers import load_file
from lab.core.facts.rows import fact_from_row
from lab.core.facts.suites import SUITES, is_suite, load_suite

__all__ = ["KINDS", "SPLITS", "SUITES", "TRAINED_SPLITS", "Fact", "FactSet", "fact_from_row", "file_sha256",
           "is_suite", "load_facts", "save_facts"]


def load_facts(reference: str | Path, per_split: int | None = None) -> FactSet:
    """A facts file or a suite reference (``tofu:DIR``, ...), validated; at most ``per_split`` per split and kind."""
    text = str(reference)
    return load_suite(text, per_split) if is_suite(text) else load_file(text, per_split)


def save_facts(facts: Iterable[Fact], path: str | Path) -> Path:
    """Write facts as JSONL (the native format)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for fact in facts:
            handle.write(json.dumps(fact.to_dict(), ensure_ascii=False) + "\n")
    return path
