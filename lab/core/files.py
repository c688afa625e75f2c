"""Writing files without losing what the lab did not write.

Every file the lab produces (exports, reports, JSON results, benchmark
output) goes through :func:`write_output`: the target is checked first, the
content goes to a temporary file beside it, and only a complete file is
renamed into place, so a failed or interrupted write leaves the old file
as it was.  The check (:func:`check_output`) refuses

- a folder, and anything that is not a regular file (``/dev/stdout``, a named
  pipe, a socket): reading or replacing those would hang or lose the stream;
- the store and its write-ahead log (``.wal``), an input of the run (facts,
  a spec) and any file inside the run's model folders;
- any DuckDB database;
- any other existing file the lab did not write: only a file this lab wrote
  (recorded in :func:`outputs_log` when it was written, and unchanged since)
  or an empty one is replaced.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

from lab.core import settings
from lab.core.errors import LabError

DUCKDB_MAGIC = b"DUCK"  # at byte 8 of every DuckDB database file
NEW_FILE_MODE = 0o666  # what open() asks for a new file: the user's umask takes away the rest
WAL_SUFFIX = ".wal"  # DuckDB's write-ahead log beside a database: committed rows not yet checkpointed


def is_duckdb_file(path: Path) -> bool:
    """A regular file with DuckDB's magic bytes (never opens a pipe or a device, which could block)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as handle:
            return handle.read(12)[8:12] == DUCKDB_MAGIC
    except OSError:
        return False


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    try:
        return folder.resolve() in path.resolve().parents
    except (OSError, RuntimeError):
        return False


def outputs_log() -> Path:
    """Where the lab records the files it wrote (path, size, modification time, inode)."""
    return settings.cache_dir() / "outputs.json"


def _identity(info: os.stat_result) -> list[int]:
    return [info.st_size, info.st_mtime_ns, info.st_ino]


@contextmanager
def _locked_log() -> Iterator[dict[str, list[int]]]:
    """The outputs log, read under an exclusive lock; what the block leaves in the dict is written back."""
    log = outputs_log()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log.with_name(log.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            entries = json.loads(log.read_text(encoding="utf-8"))
            entries = entries if isinstance(entries, dict) else {}
        except (OSError, ValueError):
            entries = {}
        yield entries
        tmp = log.with_name(f".{log.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries), encoding="utf-8")
        os.replace(tmp, log)


def written_by_lab(path: Path) -> bool:
    """True when the lab wrote ``path`` (through :func:`write_output`) and nobody changed it since."""
    try:
        info = os.stat(path)
        entries = json.loads(outputs_log().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(entries, dict) and entries.get(str(path.resolve())) == _identity(info)


def _remember(path: Path) -> None:
    """Record a file the lab just wrote; entries of files that are gone or changed are dropped."""
    try:
        with _locked_log() as entries:
            for name, identity in list(entries.items()):
                try:
                    if _identity(os.stat(name)) != identity:
                        del entries[name]
                except OSError:
                    del entries[name]
            entries[str(path.resolve())] = _identity(os.stat(path))
    except OSError:
        pass  # an unwritable cache only means the file is not replaced without asking next time


def check_output(path: str | Path, protected: Iterable[str | Path | None] = (), mark: str | None = None) -> Path:
    """``path`` as an output target, refused when writing it would replace something the lab must keep.

    ``protected`` names the command's inputs and its store: files (a store protects its ``.wal`` too) and
    folders (a model folder: nothing inside it is written).  A file that carries ``mark`` (a generated page's
    banner) is the lab's own wherever it was written, so it may be replaced."""
    out = Path(path).expanduser()
    if out.is_dir():
        raise LabError(f"{out} is a folder; give a file name to write")
    try:
        info = os.stat(out)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise LabError(f"cannot write {out}: {exc.strerror or exc}") from None
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise LabError(f"refusing to write {out}: it is not a regular file (a device, a pipe or a socket); "
                       "give the path of a file")
    for other in protected:
        if not other:
            continue
        kept = Path(other).expanduser()
        if kept.is_dir() and _inside(out, kept):
            raise LabError(f"refusing to write {out}: it is inside {kept}, a model folder or input of this "
                           "command; choose another output path")
        if _same_file(out, kept) or _same_file(out, kept.with_name(kept.name + WAL_SUFFIX)):
            raise LabError(f"refusing to write {out}: it is {out.name}, an input or the store of this command "
                           "(or its write-ahead log); choose another output path")
    if info is not None and is_duckdb_file(out):
        raise LabError(f"refusing to overwrite {out}: it is a DuckDB database; choose another output path")
    if info is not None and info.st_size > 0 and not written_by_lab(out) and not _carries(out, mark):
        raise LabError(f"refusing to replace {out}: the lab did not write it (or it changed since); remove it "
                       "first or choose another output path")
    return out


def _carries(path: Path, mark: str | None) -> bool:
    """True when ``mark`` is given and the text file at ``path`` holds it."""
    if not mark:
        return False
    try:
        return mark in path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False


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


def umask() -> int:
    """The process's file-creation mask, read without changing it (``os.umask`` sets it while it reads, which
    a web lab's other threads could see); 0o022 where the kernel does not say."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def write_output(path: str | Path, write: Callable[[Path], None], protected: Iterable[str | Path | None] = (),
                 mark: str | None = None) -> Path:
    """Check ``path``, let ``write`` fill a temporary file beside it, then rename it into place.  The temporary
    file is private while it fills (``mkstemp``: 0600); the output gets the mode any new file of the user gets
    (0644 under the usual umask), so a report or an export reads like every other file they write."""
    protected = list(protected)
    out = check_output(path, protected, mark)
    with _temporary_beside(out) as tmp:
        try:
            write(tmp)
            check_output(out, protected, mark)  # still safe to replace after the (maybe long) write
            os.chmod(tmp, NEW_FILE_MODE & ~umask())
            os.replace(tmp, out)
        except OSError as exc:
            raise LabError(f"cannot write {out}: {exc.strerror or exc}") from None
    _remember(out)
    return out


def write_text(path: str | Path, text: str, protected: Iterable[str | Path | None] = (), mark: str | None = None) -> Path:
    """:func:`write_output` for text (UTF-8)."""
    return write_output(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), protected, mark)
