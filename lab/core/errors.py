"""User-facing errors, and the one boundary every entry point puts around its work.

Every problem a user can cause (a malformed file, a wrong model id, mismatched
tokenizers, an empty fact set, an oversized request) is raised as a
``LabError``.  :func:`describe` turns any failure into the one line a user
sees: a ``LabError`` its own message, running out of memory what to change,
and anything else (a bug) a line that names the log file where
:func:`log_unexpected` wrote the traceback.  The CLI prints that line and
exits 2; the web lab shows it in the page.
"""

from __future__ import annotations

import logging
import traceback
from datetime import datetime
from pathlib import Path

OOM_HINT = "out of memory: use a smaller --limit, fewer new tokens, a smaller model or dtype bfloat16"
log = logging.getLogger("lab")


class LabError(Exception):
    """An error whose message is meant for the user, not a developer."""


def is_oom(error: BaseException) -> bool:
    """Out of memory on any device (CUDA's error, or the allocator's message)."""
    if isinstance(error, MemoryError):
        return True
    try:
        import torch

        if isinstance(error, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:  # pragma: no cover - torch is a requirement
        pass
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def log_path() -> Path:
    """The file unexpected failures are written to, with their tracebacks."""
    from lab.core import settings

    return settings.cache_dir() / "logs" / "lab.log"


def log_unexpected(error: BaseException) -> Path | None:
    """Append ``error``'s traceback to the log file; the path, or None when it cannot be written."""
    path = log_path()
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"--- {datetime.now().isoformat(timespec='seconds')}\n{text}\n")
    except OSError:
        log.error("unexpected error", exc_info=error)
        return None
    return path


def route_warnings() -> None:
    """Python warnings and libraries' log records go to the log file, not to stderr: stderr is for one error line."""
    logging.captureWarnings(True)
    root = logging.getLogger()
    if any(getattr(h, "lab_log", False) for h in root.handlers):
        return
    try:
        log_path().parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(log_path(), delay=True, encoding="utf-8")
    except OSError:
        handler = logging.NullHandler()
    handler.lab_log = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root.addHandler(handler)


def printable(text: str) -> str:
    """``text`` safe to print on one line of a terminal: every character that is not printable (terminal escape
    sequences, other control characters, line breaks, bidirectional overrides, lone surrogates) written as its
    Python escape, so text taken from a user's file can neither drive the terminal nor split the line."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for ch in text)


def describe(error: BaseException) -> str:
    """The one line a user sees for ``error`` (unexpected ones are logged first), made :func:`printable`."""
    if isinstance(error, LabError):
        return printable(str(error))
    if is_oom(error):
        return OOM_HINT
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    where = log_unexpected(error)
    tail = f"; the traceback is in {where}" if where else ""
    return printable(f"unexpected error ({type(error).__name__}{': ' + first[:200] if first else ''}){tail}")
