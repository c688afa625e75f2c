"""Writing files without losing what the lab did not write.

Every file the lab produces (exports, reports, JSON results, benchmark
output) goes through :func:`write_output`: the target is checked first (never
a folder, never the store or an input of the run, never a DuckDB database),
the content goes to a temporary file beside it, and only a complete file is
renamed into place, so a failed or interrupted write leaves the old file
as it was.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

from lab.core.errors import LabError

DUCKDB_MAGIC = b"DUCK"  # at byte 8 of every DuckDB database file


def is_duckdb_file(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(12)[8:12] == DUCKDB_MAGIC
    except OSError:
        return False


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_output(path: str | Path, protected: Iterable[str | Path | None] = ()) -> Path:
    """``path`` as an output target, refused when writing it would replace something the lab must keep."""
    out = Path(path).expanduser()
    if out.is_dir():
        raise LabError(f"{out} is a folder; give a file name to write")
    for other in protected:
        if other and _same_file(out, Path(other).expanduser()):
            raise LabError(f"refusing to write {out}: it is {Path(other).name}, an input or the store of this "
                           "command; choose another output path")
    if out.exists() and is_duckdb_file(out):
        raise LabError(f"refusing to overwrite {out}: it is a DuckDB database; choose another output path")
    return out


@contextmanager
def _temporary_beside(out: Path) -> Iterator[Path]:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        os.close(handle)
    except OSError as exc:
        raise LabError(f"cannot write {out}: {exc.strerror or exc}") from None
    try:
        yield Path(tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_output(path: str | Path, write: Callable[[Path], None], protected: Iterable[str | Path | None] = ()) -> Path:
    """Check ``path``, let ``write`` fill a temporary file beside it, then rename it into place."""
    out = check_output(path, protected)
    with _temporary_beside(out) as tmp:
        try:
            write(tmp)
            os.replace(tmp, out)
        except OSError as exc:
            raise LabError(f"cannot write {out}: {exc.strerror or exc}") from None
    return out


def write_text(path: str | Path, text: str, protected: Iterable[str | Path | None] = ()) -> Path:
    """:func:`write_output` for text (UTF-8)."""
    return write_output(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), protected)
