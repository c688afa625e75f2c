"""One row of a facts file, in any schema the lab reads, becomes a validated :class:`Fact`.

Schemas, recognized by their fields (the benchmarks' own, unchanged):

==================  =====================================================  ============
schema              fields                                                 kind
==================  =====================================================  ============
native              question, answer, [split, entity, kind, ...]          as ``kind``
TOFU QA             question, answer, paraphrased_*, perturbed_answer     qa
TOFU options        question, option1..option4, answer (text)              mc
WMDP / MMLU         question, choices (list), answer (index or letter)    mc
RWKU probe          query, answer, subject, level, type, [neighbor]       qa
MUSE knowmem        question, answer                                       qa
MUSE verbmem        prompt, gt                                             continuation
text                a bare string, or text (+ subject, ngram)             text
==================  =====================================================  ============

Messages name the file, the line or item, and the field.
"""

from __future__ import annotations

import json
import math
from typing import Any

from lab.core.errors import LabError
from lab.core.facts.model import KINDS, SPLITS, Fact

MAX_TEXT_CHARS = 200_000  # one text field (a MUSE passage is a few thousand)
LETTERS = "ABCDEFGHIJ"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def check_encodable(text: str, name: str, where: str) -> str:
    """``text`` as UTF-8 can carry it: a lone UTF-16 surrogate (JSON's ``"\\ud800"`` without its pair) cannot be
    tokenized, stored or printed, so it is refused here, at the row that holds it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = f"U+{ord(text[exc.start]):04X}"
        raise LabError(f"{where}: field '{name}' holds a lone UTF-16 surrogate ({code}) at character {exc.start}; "
                       "write the character whole (or as its surrogate pair)") from None
    return text


def text_field(row: dict[str, Any], name: str, where: str, required: bool = False) -> str:
    value = row.get(name)
    if _missing(value):
        value = ""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise LabError(f"{where}: field '{name}' must be text, got {type(value).__name__}")
    text = str(value).strip()
    if required and not text:
        raise LabError(f"{where}: field '{name}' is missing or empty")
    if len(text) > MAX_TEXT_CHARS:
        raise LabError(f"{where}: field '{name}' is longer than {MAX_TEXT_CHARS} characters")
    return check_encodable(text, name, where)


def list_field(row: dict[str, Any], name: str, where: str) -> tuple[str, ...]:
    value = row.get(name)
    if _missing(value):
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
            value = stripped.split("|")
    if not isinstance(value, (list, tuple)) or any(isinstance(v, (dict, list)) for v in value):
        raise LabError(f"{where}: field '{name}' must be a list of strings")
    return tuple(check_encodable(str(v).strip(), name, where) for v in value if str(v).strip())


# --------------------------------------------------------------------------- schemas
def schema_of(row: Any) -> str:
    """The schema a row follows (see the module table)."""
    if isinstance(row, str):
        return "text"
    if not isinstance(row, dict):
        return "invalid"
    if "kind" in row:
        return "native"
    if "query" in row and "question" not in row:
        return "rwku"
    if "prompt" in row and "gt" in row:
        return "verbmem"
    if "option1" in row:
        return "tofu_options"
    if "choices" in row:
        return "choices"
    if "question" in row or "answer" in row:
        return "qa"
    if "text" in row:
        return "text"
    return "invalid"


def _answer_index(row: dict[str, Any], choices: tuple[str, ...], where: str, text_first: bool = False) -> int:
    """The right choice's index from an integer, a digit string, a letter, or the choice's text.

    ``text_first``: the answer is the choice's text (TOFU's option files), even when it reads like a number.
    """
    value = row.get("answer")
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool) or _missing(value):
        raise LabError(f"{where}: field 'answer' is missing")
    if text_first and str(value).strip() in choices:
        index = choices.index(str(value).strip())
    elif isinstance(value, (int, float)) and float(value).is_integer():
        index = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        index = int(value.strip())
    elif isinstance(value, str) and len(value.strip()) == 1 and value.strip().upper() in LETTERS:
        index = LETTERS.index(value.strip().upper())
    elif isinstance(value, str) and value.strip() in choices:
        index = choices.index(value.strip())
    else:
        raise LabError(f"{where}: field 'answer' must be the right choice's index, letter or text, got {value!r}")
    if not 0 <= index < len(choices):
        raise LabError(f"{where}: field 'answer' is {index}, but there are {len(choices)} choices")
    return index


def _given_index(value: Any, count: int, where: str) -> int:
    try:
        index = int(str(value).strip())
    except ValueError:
        raise LabError(f"{where}: field 'answer_index' must be an integer, got {value!r}") from None
    if not 0 <= index < count:
        raise LabError(f"{where}: field 'answer_index' is {index}, but there are {count} choices")
    return index


def native_row(row: Any, where: str) -> dict[str, Any]:
    """A row of any schema as the native field names (kind included)."""
    schema = schema_of(row)
    if schema == "invalid":
        raise LabError(f"{where}: expected an object with fields (or a text), got "
                       f"{type(row).__name__ if not isinstance(row, dict) else 'fields ' + ', '.join(list(row)[:5])}")
    if schema == "text":
        return {"kind": "text", "text": row} if isinstance(row, str) else {**row, "kind": "text"}
    if schema == "rwku":
        entity = row.get("neighbor") or row.get("subject", "")
        return {"id": row.get("id", ""), "kind": "qa", "entity": entity, "question": row.get("query", ""),
                "answer": row.get("answer", ""), "split": row.get("split", ""), "level": row.get("level", ""),
                "probe_type": row.get("type", ""),
                "attribute": f"{row.get('level', '')}:{row.get('type', '')}".strip(":")}
    if schema == "verbmem":
        return {**row, "kind": "continuation", "question": row.get("prompt", ""), "answer": row.get("gt", "")}
    if schema == "tofu_options":
        choices = tuple(text_field(row, f"option{i}", where) for i in range(1, 11) if f"option{i}" in row)
        return {**row, "kind": "mc", "choices": choices,
                "answer_index": _answer_index(row, choices, where, text_first=True)}
    if schema == "choices":
        choices = list_field(row, "choices", where)
        return {**row, "kind": "mc", "choices": choices, "answer_index": _answer_index(row, choices, where)}
    mapped = {**row, "kind": row.get("kind") or "qa"}
    if "perturbed_answer" in row and "perturbed_answers" not in row:
        mapped["perturbed_answers"] = row["perturbed_answer"]
    return mapped


def fact_from_row(row: Any, where: str, index: int, defaults: dict[str, str] | None = None) -> Fact:
    """Validate one row of any schema; ``defaults`` fill fields the row lacks (a suite's split, subset)."""
    data = {**(defaults or {}), **{k: v for k, v in native_row(row, where).items() if not _missing(v) and v != ""}}
    kind = text_field(data, "kind", where) or "qa"
    if kind not in KINDS:
        raise LabError(f"{where}: field 'kind' must be one of {', '.join(KINDS)}, got '{kind}'")
    split = text_field(data, "split", where).lower() or "forget"
    if split not in SPLITS:
        raise LabError(f"{where}: field 'split' must be one of {', '.join(SPLITS)}, got '{split}'")
    needs_qa = kind in ("qa", "mc", "continuation")
    choices = list_field(data, "choices", where) if kind == "mc" else ()
    answer_index = None
    if kind == "mc":
        if len(choices) < 2:
            raise LabError(f"{where}: field 'choices' needs at least 2 choices")
        answer_index = (_given_index(data["answer_index"], len(choices), where) if "answer_index" in data
                        else _answer_index(data, choices, where))
    answer = choices[answer_index] if kind == "mc" else text_field(data, "answer", where, required=needs_qa)
    return Fact(
        id=text_field(data, "id", where) or f"fact-{index:05d}",
        question=text_field(data, "question", where, required=needs_qa),
        answer=answer,
        split=split,
        entity=text_field(data, "entity", where) or text_field(data, "subject", where),
        paraphrased_question=text_field(data, "paraphrased_question", where),
        paraphrased_answer=text_field(data, "paraphrased_answer", where),
        perturbed_answers=list_field(data, "perturbed_answers", where),
        text=text_field(data, "text", where, required=kind == "text"),
        attribute=text_field(data, "attribute", where),
        kind=kind,
        choices=choices,
        answer_index=answer_index,
        subset=text_field(data, "subset", where),
        level=text_field(data, "level", where),
        probe_type=text_field(data, "probe_type", where),
    )
