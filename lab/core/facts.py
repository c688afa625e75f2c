"""Facts: the one record type every audit consumes, and the readers for it.

A fact is a question with its gold answer plus the optional material the
standard unlearning benchmarks carry (TOFU: paraphrased and perturbed answers;
RWKU: the subject entity).  Native files are JSONL, CSV or Parquet with the
columns of :class:`Fact`; TOFU JSON, MUSE knowmem and RWKU probe files are
mapped onto it.  A file without a ``split`` column is a forget set.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from lab.core.errors import LabError

SPLITS = ("forget", "retain", "holdout")
TRAINED_SPLITS = ("forget", "retain")  # what the base model was trained on: where answers are checked
MAX_TEXT_CHARS = 20_000


@dataclass(frozen=True)
class Fact:
    """One question/answer pair about an entity, tagged with its split."""

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

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["perturbed_answers"] = list(self.perturbed_answers)
        return row


@dataclass
class FactSet:
    """An ordered list of facts with its provenance (source and content hash)."""

    facts: list[Fact]
    source: str = ""
    sha256: str = ""
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.facts)

    def __iter__(self) -> Iterator[Fact]:
        return iter(self.facts)

    def split(self, name: str) -> list[Fact]:
        return [f for f in self.facts if f.split == name]

    def counts(self) -> dict[str, int]:
        counts = Counter(f.split for f in self.facts)
        return {s: counts.get(s, 0) for s in SPLITS}

    def by_entity(self) -> dict[str, list[Fact]]:
        groups: dict[str, list[Fact]] = {}
        for fact in self.facts:
            groups.setdefault(fact.entity, []).append(fact)
        return groups

    def limited(self, per_split: int | None) -> "FactSet":
        """At most ``per_split`` facts of each split, in file order."""
        if per_split is None:
            return self
        if per_split < 1:
            raise LabError(f"--limit must be at least 1, got {per_split}")
        seen: Counter[str] = Counter()
        kept = []
        for fact in self.facts:
            if seen[fact.split] < per_split:
                kept.append(fact)
                seen[fact.split] += 1
        return FactSet(kept, self.source, self.sha256, list(self.warnings))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- #
# Row -> Fact, shared by every reader
# --------------------------------------------------------------------------- #


def _text_field(row: dict[str, Any], name: str, where: str, required: bool) -> str:
    value = row.get(name)
    if value is None or (isinstance(value, float) and value != value):  # NaN from CSV
        value = ""
    if not isinstance(value, (str, int, float)):
        raise LabError(f"{where}: field '{name}' must be text, got {type(value).__name__}")
    text = str(value).strip()
    if required and not text:
        raise LabError(f"{where}: field '{name}' is missing or empty")
    if len(text) > MAX_TEXT_CHARS:
        raise LabError(f"{where}: field '{name}' is longer than {MAX_TEXT_CHARS} characters")
    return text


def _list_field(row: dict[str, Any], name: str, where: str) -> tuple[str, ...]:
    value = row.get(name)
    if value is None or (isinstance(value, float) and value != value):
        return ()
    if hasattr(value, "tolist"):  # numpy arrays from Parquet
        value = value.tolist()
    if isinstance(value, str):
        stripped = value.strip()
        if not stripped:
            return ()
        if stripped.startswith("["):
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError as exc:
                raise LabError(f"{where}: field '{name}' is not a JSON list ({exc.msg})") from None
        else:
            value = [part for part in stripped.split("|")]
    if not isinstance(value, (list, tuple)):
        raise LabError(f"{where}: field '{name}' must be a list of strings")
    return tuple(str(v).strip() for v in value if str(v).strip())


def fact_from_row(row: dict[str, Any], where: str, index: int) -> Fact:
    """Validate one native row; ``where`` names file and line for messages."""
    if not isinstance(row, dict):
        raise LabError(f"{where}: expected an object with fields, got {type(row).__name__}")
    split = _text_field(row, "split", where, required=False).lower() or "forget"
    if split not in SPLITS:
        raise LabError(f"{where}: field 'split' must be one of {', '.join(SPLITS)}, got '{split}'")
    return Fact(
        id=_text_field(row, "id", where, required=False) or f"fact-{index:05d}",
        question=_text_field(row, "question", where, required=True),
        answer=_text_field(row, "answer", where, required=True),
        split=split,
        entity=_text_field(row, "entity", where, required=False),
        paraphrased_question=_text_field(row, "paraphrased_question", where, required=False),
        paraphrased_answer=_text_field(row, "paraphrased_answer", where, required=False),
        perturbed_answers=_list_field(row, "perturbed_answers", where),
        text=_text_field(row, "text", where, required=False),
        attribute=_text_field(row, "attribute", where, required=False),
    )


# --------------------------------------------------------------------------- #
# Benchmark formats mapped onto the native row
# --------------------------------------------------------------------------- #


def _from_tofu(row: dict[str, Any]) -> dict[str, Any]:
    """TOFU: question, answer, paraphrased_answer, perturbed_answer, paraphrased_question."""
    mapped = dict(row)
    if "perturbed_answer" in row and "perturbed_answers" not in row:
        mapped["perturbed_answers"] = row["perturbed_answer"]
    return mapped


def _from_rwku(row: dict[str, Any]) -> dict[str, Any]:
    """RWKU probes: subject, level, query, type, answer."""
    return {
        "id": row.get("id", ""),
        "entity": row.get("subject", ""),
        "question": row.get("query", ""),
        "answer": row.get("answer", ""),
        "split": row.get("split", "forget"),
        "attribute": f"{row.get('level', '')}:{row.get('type', '')}".strip(":"),
    }


def _normalize_row(row: Any) -> Any:
    if not isinstance(row, dict):
        return row
    if "query" in row and "question" not in row:
        return _from_rwku(row)
    if "perturbed_answer" in row:
        return _from_tofu(row)
    return row


# --------------------------------------------------------------------------- #
# File readers
# --------------------------------------------------------------------------- #


def _json_rows(path: Path) -> Iterable[tuple[str, Any]]:
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):  # a JSON array (TOFU JSON, MUSE knowmem)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LabError(f"{path.name}: line {exc.lineno}: invalid JSON ({exc.msg})") from None
        return [(f"{path.name}: item {i + 1}", row) for i, row in enumerate(data)]
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((f"{path.name}: line {lineno}", json.loads(line)))
        except json.JSONDecodeError as exc:
            raise LabError(f"{path.name}: line {lineno}: invalid JSON ({exc.msg})") from None
    return rows


def _table_rows(path: Path) -> Iterable[tuple[str, Any]]:
    import pandas as pd

    try:
        if path.suffix.lower() == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            offset = 2  # header is line 1
        else:
            frame = pd.read_parquet(path)
            offset = 1
    except Exception as exc:  # pandas raises many kinds for malformed files
        raise LabError(f"{path.name}: cannot be read as {path.suffix[1:].upper()} ({exc})") from None
    label = "line" if path.suffix.lower() == ".csv" else "row"
    return [
        (f"{path.name}: {label} {i + offset}", row)
        for i, row in enumerate(frame.to_dict(orient="records"))
    ]


READERS = {".jsonl": _json_rows, ".json": _json_rows, ".csv": _table_rows, ".parquet": _table_rows}


def load_facts(path: str | Path, per_split: int | None = None) -> FactSet:
    """Read a fact file in any supported format, validating every row (at most ``per_split`` per split)."""
    path = Path(path)
    if not path.is_file():
        raise LabError(f"facts file not found: {path}")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise LabError(
            f"{path.name}: unsupported facts format '{path.suffix}' (use .jsonl, .json, .csv or .parquet)"
        )
    facts = []
    for index, (where, row) in enumerate(reader(path)):
        facts.append(fact_from_row(_normalize_row(row), where, index))
    if not facts:
        raise LabError(f"{path.name}: contains no facts")
    duplicates = [fid for fid, n in Counter(f.id for f in facts).items() if n > 1]
    if duplicates:
        raise LabError(f"{path.name}: duplicate fact id '{duplicates[0]}'")
    return FactSet(facts, source=str(path), sha256=file_sha256(path)).limited(per_split)


def save_facts(facts: Iterable[Fact], path: str | Path) -> Path:
    """Write facts as JSONL (the native format)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for fact in facts:
            handle.write(json.dumps(fact.to_dict(), ensure_ascii=False) + "\n")
    return path
