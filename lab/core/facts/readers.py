"""Reading facts files as streams of rows, so ``--limit`` bounds memory however large the file.

Formats: JSON Lines; JSON arrays (also several arrays one after another, as
``datasets``' ``to_json(lines=False)`` writes files over 1000 rows, and a
``.json`` file that is really JSON Lines, as TOFU's ``*_perturbed.json``);
CSV; Parquet; plain text (``.txt``: a corpus such as MUSE's raw ``forget.txt``,
read as the passages between blank lines).  Every reader yields ``(where, row)`` pairs, ``where``
naming the file and the line or item for messages.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

from lab.core.errors import LabError
from lab.core.facts.model import SPLITS, Fact, FactSet, check_limit, file_sha256
from lab.core.facts.rows import fact_from_row, schema_of

CHUNK = 1 << 20
FORMATS = (".jsonl", ".json", ".csv", ".parquet", ".txt")
Rows = Iterator[tuple[str, Any]]


def _decode_error(path: Path, line: int, message: str) -> LabError:
    return LabError(f"{path.name}: line {line}: invalid JSON ({message})")


def _open_text(path: Path):
    try:
        handle = open(path, encoding="utf-8")
        handle.read(1)
        handle.seek(0)
        return handle
    except UnicodeDecodeError:
        raise LabError(f"{path.name}: not UTF-8 text (a binary file, or another encoding: save it as UTF-8)") from None


def _read(handle, path: Path) -> str:
    try:
        return handle.read(CHUNK)
    except UnicodeDecodeError as exc:
        raise LabError(f"{path.name}: not UTF-8 text at byte {exc.start} (save it as UTF-8)") from None


def json_lines(path: Path) -> Rows:
    with _open_text(path) as handle:
        lineno = 0
        while True:
            try:
                line = handle.readline()
            except UnicodeDecodeError:
                raise LabError(f"{path.name}: line {lineno + 1}: not UTF-8 text (save it as UTF-8)") from None
            if not line:
                return
            lineno += 1
            if not line.strip():
                continue
            try:
                yield f"{path.name}: line {lineno}", json.loads(line)
            except json.JSONDecodeError as exc:
                raise _decode_error(path, lineno, exc.msg) from None
            except RecursionError:
                raise _decode_error(path, lineno, "nested too deeply") from None


def json_arrays(path: Path) -> Rows:
    """The items of one or more top-level JSON arrays, decoded one at a time from a sliding buffer."""
    decoder = json.JSONDecoder()
    with _open_text(path) as handle:
        buf, pos, lines_before, depth, item, eof = "", 0, 0, 0, 0, False
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n,":
                pos += 1
            if pos >= len(buf) or (buf[pos] not in "[]" and len(buf) - pos < CHUNK and not eof):
                if eof:
                    if depth:
                        raise _decode_error(path, lines_before + buf.count("\n") + 1, "the array is not closed")
                    return
                lines_before += buf.count("\n", 0, pos)
                chunk = _read(handle, path)
                buf, pos, eof = buf[pos:] + chunk, 0, not chunk
                continue
            char = buf[pos]
            if char == "[" and depth == 0:
                depth, pos = 1, pos + 1
                continue
            if char == "]" and depth == 1:
                depth, pos = 0, pos + 1
                continue
            if depth == 0:
                raise _decode_error(path, lines_before + buf.count("\n", 0, pos) + 1, "expected a JSON array")
            try:
                value, end = decoder.raw_decode(buf, pos)
            except json.JSONDecodeError as exc:
                if not eof:  # perhaps cut by the buffer's edge: read on
                    chunk = _read(handle, path)
                    buf, eof = buf + chunk, not chunk
                    continue
                raise _decode_error(path, lines_before + exc.lineno, exc.msg) from None
            except RecursionError:
                raise _decode_error(path, lines_before + buf.count("\n", 0, pos) + 1, "nested too deeply") from None
            item += 1
            yield f"{path.name}: item {item}", value
            pos = end


def json_file(path: Path) -> Rows:
    """A ``.json`` file: an array (or several), else JSON Lines."""
    with _open_text(path) as handle:
        head = _read(handle, path).lstrip()
    if not head:
        return iter(())
    return json_arrays(path) if head.startswith("[") else json_lines(path)


def csv_rows(path: Path) -> Rows:
    import pandas as pd

    try:
        chunks = pd.read_csv(path, dtype=str, keep_default_na=False, chunksize=10_000, encoding="utf-8")
        line = 2  # the header is line 1
        for frame in chunks:
            for row in frame.to_dict(orient="records"):
                yield f"{path.name}: line {line}", row
                line += 1
    except LabError:
        raise
    except UnicodeDecodeError:
        raise LabError(f"{path.name}: not UTF-8 text (save it as UTF-8)") from None
    except Exception as exc:  # noqa: BLE001 - pandas raises many kinds for malformed files
        raise LabError(f"{path.name}: cannot be read as CSV ({str(exc).splitlines()[0] if str(exc) else exc})") from None


def parquet_rows(path: Path) -> Rows:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
        row = 1
        for batch in table.iter_batches(batch_size=10_000):
            for record in batch.to_pylist():
                yield f"{path.name}: row {row}", record
                row += 1
    except LabError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds for malformed files
        raise LabError(f"{path.name}: cannot be read as PARQUET ({str(exc).splitlines()[0] if str(exc) else exc})") \
            from None


def text_documents(path: Path) -> Rows:
    """The passages of a text corpus, separated by blank lines (MUSE's raw ``forget.txt``)."""
    with _open_text(path) as handle:
        lines: list[str] = []
        start = lineno = 0
        for lineno, line in enumerate(handle, start=1):
            if line.strip():
                if not lines:
                    start = lineno
                lines.append(line.rstrip("\n"))
            elif lines:
                yield f"{path.name}: line {start}", "\n".join(lines)
                lines = []
        if lines:
            yield f"{path.name}: line {start}", "\n".join(lines)


READERS = {".jsonl": json_lines, ".json": json_file, ".csv": csv_rows, ".parquet": parquet_rows,
           ".txt": text_documents}


def read_rows(path: Path) -> Rows:
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise LabError(f"{path.name}: unsupported facts format '{path.suffix}' "
                       f"(use {', '.join(FORMATS)}, or a suite such as tofu:DIR)")
    return reader(path)


def read_facts(path: Path, per_split: int | None = None, defaults: dict[str, str] | None = None,
               prefix: str = "") -> list[Fact]:
    """The facts of one file, every row validated; at most ``per_split`` per split and kind.

    One schema per file (a file that mixes, say, questions and multiple-choice rows is refused at the
    first row that differs).  With a limit, memory stays bounded (rows past it are dropped as they are
    read), and a file of one kind stops being read once every split it can hold is full.  ``prefix`` makes
    ids unique across the files of a suite.
    """
    if not path.is_file():
        raise LabError(f"facts file not found: {path}")
    if per_split is not None:
        check_limit(per_split)
    facts: list[Fact] = []
    seen: Counter[tuple[str, str]] = Counter()
    first_schema = None
    splits_possible = {(defaults or {}).get("split", "forget")}
    for index, (where, row) in enumerate(read_rows(path)):
        schema = schema_of(row)
        if first_schema is None:
            first_schema = schema
        elif schema != first_schema and "native" not in (schema, first_schema):
            fields = ", ".join(list(row)[:6]) if isinstance(row, dict) else type(row).__name__
            raise LabError(f"{where}: a {schema} row (fields: {fields}) among {first_schema} rows; "
                           "use one schema per file")
        if isinstance(row, dict) and row.get("split"):
            splits_possible = set(SPLITS)
        fact = fact_from_row(row, where, index, defaults)
        if prefix:
            fact = Fact(**{**fact.__dict__, "id": f"{prefix}{fact.id}"})
        key = (fact.split, fact.kind)
        if per_split is not None and seen[key] >= per_split:
            # A file of one kind is done once its splits are full; the lab's own format mixes kinds (questions,
            # multiple choice, passages), so it is read to the end, keeping only what fits the limit.
            if first_schema != "native" and all(seen[(s, fact.kind)] >= per_split for s in splits_possible):
                break
            continue
        seen[key] += 1
        facts.append(fact)
    return facts


def check_unique(facts: list[Fact], source: str) -> None:
    ids = Counter(f.id for f in facts)
    duplicate = next((fid for fid, n in ids.items() if n > 1), None)
    if duplicate is not None:
        raise LabError(f"{source}: duplicate fact id '{duplicate}'")


def load_file(path: str | Path, per_split: int | None = None) -> FactSet:
    """A plain facts file (any schema of :mod:`lab.core.facts.rows`)."""
    path = Path(path).expanduser()
    facts = read_facts(path, per_split)
    if not facts:
        raise LabError(f"{path.name}: contains no facts")
    check_unique(facts, path.name)
    return FactSet(facts, source=str(path), sha256=file_sha256(path))
