"""Paths and switches read from the environment (see CONTRACTS: Environment)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def static_dir() -> Path:
    """The repository's ``static/`` folder: styles, logo and the report template."""
    return Path(__file__).resolve().parents[2] / "static"


def cache_dir() -> Path:
    """The user's cache folder for the lab (XDG convention)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "unlearning-audit-lab"


def demo_dir(profile: str = "full") -> Path:
    """Where the demo world lives: ``$LAB_DEMO_DIR``, or the user's cache (``demo``, ``demo-tiny`` for the tiny
    profile, so building one never replaces the other)."""
    override = os.environ.get("LAB_DEMO_DIR")
    if override:
        return Path(override)
    return cache_dir() / ("demo" if profile == "full" else f"demo-{profile}")


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
    """The demo profile the web lab builds on first launch: ``$LAB_DEMO_PROFILE`` (tiny or full)."""
    return os.environ.get("LAB_DEMO_PROFILE", "").strip() or "full"


def model_slots() -> int | None:
    """``LAB_MODEL_SLOTS``: how many long web-lab jobs (runs, sweeps, views) run side by side; None: the lab's
    default (two)."""
    value = os.environ.get("LAB_MODEL_SLOTS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None
