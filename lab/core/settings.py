"""Paths and switches read from the environment (see CONTRACTS: Environment)."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Iterator


def static_dir() -> Path:
    """The repository's ``static/`` folder: styles, logo and the report template."""
    return Path(__file__).resolve().parents[2] / "static"


def cache_dir() -> Path:
    """The user's cache folder for the lab (XDG convention)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "unlearning-audit-lab"


_active_demo: str | None = None  # the profile demo:<name> resolves to in this process (None: full)


def use_demo(profile: str | None) -> None:
    """Make ``demo:<name>`` (and every other use of the demo in this process) resolve to ``profile``'s world;
    None goes back to the full one.  Only the web lab switches (it starts on the tiny world while the full one
    builds); the CLI always uses the full demo."""
    global _active_demo
    _active_demo = profile


def active_demo() -> str:
    """The demo profile this process is on (see :func:`use_demo`)."""
    return _active_demo or "full"


def demo_override() -> Path | None:
    """``$LAB_DEMO_DIR`` when set: one folder holds the demo, whatever its profile."""
    override = os.environ.get("LAB_DEMO_DIR")
    return Path(override) if override else None


def demo_dir(profile: str | None = None) -> Path:
    """Where the demo world lives: ``$LAB_DEMO_DIR``, or the user's cache (``demo``, ``demo-tiny`` for the tiny
    profile, so building one never replaces the other).  Without a profile: the one in use (:func:`active_demo`)."""
    override = demo_override()
    if override:
        return override
    profile = profile or active_demo()
    return cache_dir() / ("demo" if profile == "full" else f"demo-{profile}")


def share_cpu() -> None:
    """Idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``), unless the user chose a policy.

    On a machine whose cores other work shares, torch's spinning threads take the cores the working thread
    needs: training the tiny demo on 2 threads of a loaded 2-core machine measured 5-60x slower than on one
    thread, and about as fast with PASSIVE (issue 27).  Takes effect only before torch is first imported: the
    entry points (``app.py``, ``python -m lab``) call it first.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def default_db() -> Path:
    """The default DuckDB file: ``$LAB_DB`` or the user's cache."""
    override = os.environ.get("LAB_DB")
    return Path(override) if override else cache_dir() / "lab.duckdb"


def upload_dir() -> Path:
    """Where the web lab's uploads land (Gradio's temporary folder)."""
    override = os.environ.get("GRADIO_TEMP_DIR")
    return Path(override) if override else Path(tempfile.gettempdir()) / "gradio"


def is_upload(path: str) -> bool:
    """True for a file inside the upload folder (a visitor's own upload, not a server path)."""
    try:
        resolved, root = Path(path).expanduser().resolve(), upload_dir().resolve()
    except (OSError, RuntimeError):
        return False
    return resolved.is_file() and root in resolved.parents


def space_mode() -> bool:
    """True in a hosted Space (``LAB_SPACE=1``): no server paths, request limits."""
    return os.environ.get("LAB_SPACE", "").strip().lower() in {"1", "true", "yes", "on"}


def demo_profile() -> str:
    """The demo profile the web lab is to run on: ``$LAB_DEMO_PROFILE`` (tiny or full; see
    :mod:`lab.shell.ui.demo_world` for the tiny start while the full one builds)."""
    return os.environ.get("LAB_DEMO_PROFILE", "").strip() or "full"


_UNKEPT: ContextVar[bool] = ContextVar("unkept", default=False)


def memo_enabled() -> bool:
    """Whether engines keep results for repeated calls on unchanged weights (``LAB_MEMO=0`` turns it off, to time
    or check the uncached path; so does :func:`memo_off`)."""
    return not _UNKEPT.get() and os.environ.get("LAB_MEMO", "").strip().lower() not in {"0", "false", "no", "off"}


@contextmanager
def memo_off() -> Iterator[None]:
    """Engines compute every call afresh inside (a benchmark's repeats time the work, not a kept result)."""
    token = _UNKEPT.set(True)
    try:
        yield
    finally:
        _UNKEPT.reset(token)


def model_slots() -> int | None:
    """``LAB_MODEL_SLOTS``: how many long web-lab jobs (runs, sweeps, views) run side by side; None: the lab's
    default (two)."""
    value = os.environ.get("LAB_MODEL_SLOTS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None
